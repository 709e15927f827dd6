"""Vocabulary filter for downstream data (SPEC A6): keep examples whose words are all known.

Word extraction (:func:`content_words`), per whitespace token of each text:

1. A token without letters or digits (``.``, ``"``, ``--``) is skipped; if it ends
   a sentence (``.``, ``!``, ``?``) the next word starts a new sentence.
2. A word whose first letter is upper case is dropped as a proper noun, unless it
   is the first word of a sentence (first word of the text, or after a token
   ending in ``.``/``!``/``?``, optionally followed by closing quotes/brackets).
3. The word is lower-cased and every character that is not a letter is deleted
   (digits, punctuation, apostrophes, hyphens: ``won't`` -> ``wont``,
   ``three-minute`` -> ``threeminute``, ``1998`` -> nothing).
4. Empty results and contraction stubs (``nt, s, re, t, d, ll`` by default, as
   left by tokenized text such as ``do n't``, ``Dominick 's``) are ignored.

With ``split_hyphens=True`` (the default, as the pre-training corpus filter of SPEC A1 does: one
normalisation everywhere, see :mod:`minilm_jax.text_norm`) hyphens are first turned into spaces, so
``year-old`` gives ``year old``.

An example survives when every remaining word of ``text_a`` and ``text_b`` is in
the vocabulary (an example with no remaining words survives vacuously).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from minilm_jax.text_norm import CONTRACTION_STUBS

from .base import Example

_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*$")


def content_words(text: str, stubs: frozenset[str] = CONTRACTION_STUBS,
                  split_hyphens: bool = True) -> list[str]:
    """The normalised words of ``text`` that must be in the vocabulary (see module doc)."""
    if split_hyphens:
        text = text.replace("-", " ")
    words = []
    sentence_start = True
    for token in text.split():
        if not any(ch.isalnum() for ch in token):
            if _SENTENCE_END.search(token):
                sentence_start = True
            continue
        first_letter = next((ch for ch in token if ch.isalpha()), "")
        proper = first_letter.isupper() and not sentence_start
        sentence_start = bool(_SENTENCE_END.search(token))
        if proper:
            continue
        word = "".join(ch for ch in token.lower() if ch.isalpha())
        if word and word not in stubs:
            words.append(word)
    return words


def oov_words(example: Example, vocabulary: frozenset[str] | set[str],
              stubs: frozenset[str] = CONTRACTION_STUBS, split_hyphens: bool = True) -> list[str]:
    """Words of the example (both texts) that are not in ``vocabulary``."""
    texts = [example.text_a] + ([example.text_b] if example.text_b is not None else [])
    return [w for t in texts for w in content_words(t, stubs, split_hyphens)
            if w not in vocabulary]


@dataclass
class FilterReport:
    """Survival counts per split; ``oov`` counts, per unknown word, the examples it rejected."""

    total: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    oov: Counter = field(default_factory=Counter)

    def rate(self, split: str | None = None) -> float:
        """Share of examples kept in ``split``, or pooled over all splits when ``None``."""
        total = self.total[split] if split else sum(self.total.values())
        kept = self.kept[split] if split else sum(self.kept.values())
        return kept / total if total else 0.0

    def summary(self) -> str:
        parts = [f"{s}: {self.kept[s]}/{self.total[s]} ({100 * self.rate(s):.1f}%)"
                 for s in self.total]
        pooled = f"pooled: {sum(self.kept.values())}/{sum(self.total.values())} " \
                 f"({100 * self.rate():.1f}%)"
        return "; ".join(parts + [pooled])


def _filter_one(examples: Iterable[Example], vocabulary: frozenset[str] | set[str],
                stubs: frozenset[str], split_hyphens: bool, split: str,
                report: FilterReport) -> list[Example]:
    kept, total = [], 0
    for ex in examples:
        total += 1
        missing = oov_words(ex, vocabulary, stubs, split_hyphens)
        if missing:
            report.oov.update(set(missing))
        else:
            kept.append(ex)
    report.total[split] = total
    report.kept[split] = len(kept)
    return kept


@overload
def filter_examples(examples: Mapping[str, Sequence[Example]], vocabulary: frozenset[str],
                    stubs: frozenset[str] = ..., split_hyphens: bool = ...,
                    ) -> tuple[dict[str, list[Example]], FilterReport]: ...
@overload
def filter_examples(examples: Sequence[Example], vocabulary: frozenset[str],
                    stubs: frozenset[str] = ..., split_hyphens: bool = ...,
                    ) -> tuple[list[Example], FilterReport]: ...


def filter_examples(examples, vocabulary, stubs=CONTRACTION_STUBS, split_hyphens=True):
    """Keep the examples whose words are all in ``vocabulary``.

    ``examples`` is either a sequence (reported as split ``"all"``) or a mapping
    split -> sequence, in which case the kept examples come back as a mapping too.
    Order is preserved. Returns ``(kept, FilterReport)``.
    """
    report = FilterReport()
    if isinstance(examples, Mapping):
        kept = {split: _filter_one(exs, vocabulary, stubs, split_hyphens, split, report)
                for split, exs in examples.items()}
        return kept, report
    return _filter_one(examples, vocabulary, stubs, split_hyphens, "all", report), report
