"""Word-level normalisation and tokenization used by the vocabulary check (study A's filter rule).

The authors' filter (text-machine-lab/mini_bert, ``vocab_utils.py``) lowercases a text, then, *for the
check only*, maps hyphens to spaces, ``@,@``/``@.@`` and digit runs at a word start to the word
``number`` and URLs (``http\\S+``) to a placeholder, and counts words with scikit-learn's default token
pattern ``\\b\\w\\w+\\b`` (letters/digits/underscore, two or more characters; punctuation and one-character
words are dropped).

Here the inserted separators are ``\\x01`` instead of spaces: ``\\x01`` is not a word character, so the
words found are the same, but the number of spaces is unchanged, so ``text.split(" ")`` of the
normalised text stays aligned word for word with the original. The URL placeholder's word is
``hlink``, which the filter always treats as out of vocabulary (reported as ``<url>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from minilm_jax.text_norm import CONTRACTION_STUBS, join_contractions

WORD_RE = re.compile(r"(?u)\b\w\w+\b")
_AT_NUMBER_RE = re.compile(r"@[,.]@")
_NUMBER_RE = re.compile(r"\b\d+")
_URL_RE = re.compile(r"http\S+")
_SEP = "\x01"
URL_WORD = "hlink"
URL_LABEL = "<url>"


def normalize_for_check(text: str) -> str:
    """Check-only normalisation of lowercased text; keeps every space (see the module docstring).

    Contractions are joined first (``doesn't`` -> ``doesnt``, see :mod:`minilm_jax.text_norm`)."""
    text = join_contractions(text)
    if "-" in text:
        text = text.replace("-", _SEP)
    if "@" in text:
        text = _AT_NUMBER_RE.sub("#number", text)
    text = _NUMBER_RE.sub("#number" + _SEP, text)
    if "http" in text:
        text = _URL_RE.sub("#" + URL_WORD, text)
    return text


def check_words(text: str) -> list[str]:
    """The words the vocabulary check sees in ``text`` (lowercased, normalised, 2+ word characters)."""
    return [w for w in WORD_RE.findall(normalize_for_check(text.lower())) if w not in CONTRACTION_STUBS]


def top_words(texts: Iterable[str], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent check words of ``texts`` with their counts (ties: alphabetical)."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(check_words(text))
    counts.pop(URL_WORD, None)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
