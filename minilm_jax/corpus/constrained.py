"""The constrained-language filter of study A (Deshpande et al. 2023), one document at a time.

Window mode (the authors' rule): lowercase the document; cut ``text.split(" ")`` into windows of
``window`` (110) words starting every ``stride`` (30) words (the last windows are shorter, as in the
authors' ``to_spans``); check each window's words (see :mod:`minilm_jax.corpus.words`): reject it if
any word is outside the vocabulary, keep it if it has more than ``min_words`` (40) words; a kept
window is the original lowercased text. Exact duplicates are dropped later, across the whole corpus.

Sentence mode (for small corpora such as AO-CHILDES utterances): split a document into sentences at
``.``, ``!`` or ``?`` followed by whitespace; keep a sentence if all its words are in the vocabulary and
it has more than ``min_words`` (default 0) words.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from itertools import accumulate

from minilm_jax.corpus.words import URL_LABEL, URL_WORD, WORD_RE, normalize_for_check
from minilm_jax.text_norm import CONTRACTION_STUBS

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CACHE_LIMIT = 1 << 19
UNITS = ("window", "sentence")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Parameters of the filter (defaults: the paper's window rule)."""

    unit: str = "window"
    window: int = 110
    stride: int = 30
    min_words: int | None = None  # keep a unit with MORE than this many words; None: 40 / 0 by unit

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.window < 1 or self.stride < 1:
            raise ValueError("window and stride must be positive")

    @property
    def effective_min_words(self) -> int:
        if self.min_words is not None:
            return self.min_words
        return 40 if self.unit == "window" else 0


@dataclasses.dataclass
class FilterCounts:
    """Per-source counters of the filter."""

    documents: int = 0
    bytes: int = 0
    units: int = 0  # windows or sentences examined
    kept: int = 0
    rejected_oov: int = 0
    too_short: int = 0
    eligible: int = 0  # units long enough, whatever their words (the control samples from these)
    eligible_words: int = 0

    def add(self, other: FilterCounts) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class VocabularyChecker:
    """Checks words against a vocabulary, caching the result per (normalised) whitespace word."""

    def __init__(self, vocab: frozenset[str]) -> None:
        self.vocab = frozenset(vocab) - {URL_WORD}
        self._cache: dict[str, tuple[int, tuple[str, ...]]] = {}

    def word_info(self, word: str) -> tuple[int, tuple[str, ...]]:
        """(number of check words, the out-of-vocabulary ones) in one normalised whitespace word."""
        info = self._cache.get(word)
        if info is None:
            if word in self.vocab and len(word) > 1 and word.isalnum():
                info = (1, ())
            else:
                found = [w for w in WORD_RE.findall(word) if w not in CONTRACTION_STUBS]
                info = (len(found), tuple(w for w in found if w not in self.vocab))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = info
        return info


def _count_oov(oov: Counter[str], words: tuple[str, ...]) -> None:
    for word in words:
        oov[URL_LABEL if word == URL_WORD else word] += 1


def filter_windows(doc: str, checker: VocabularyChecker, cfg: FilterConfig, counts: FilterCounts,
                   oov: Counter[str]) -> list[str]:
    """Kept windows of one document, in order (duplicates not yet removed)."""
    lowered = doc.lower()
    words = lowered.split(" ")
    checked = normalize_for_check(lowered).split(" ")
    infos = [checker.word_info(w) for w in checked]
    n_words = [n for n, _ in infos]
    has_oov = [1 if bad else 0 for _, bad in infos]
    for _, bad in infos:
        if bad:
            _count_oov(oov, bad)
    tok_prefix = [0, *accumulate(n_words)]
    oov_prefix = [0, *accumulate(has_oov)]
    min_words = cfg.effective_min_words
    kept = []
    total = len(words)
    for start in range(0, total, cfg.stride):
        end = min(start + cfg.window, total)
        n_tok = tok_prefix[end] - tok_prefix[start]
        counts.units += 1
        long_enough = n_tok > min_words
        if long_enough:
            counts.eligible += 1
            counts.eligible_words += end - start
        if oov_prefix[end] - oov_prefix[start]:
            counts.rejected_oov += 1
        elif not long_enough:
            counts.too_short += 1
        else:
            counts.kept += 1
            kept.append(" ".join(words[start:end]))
    return kept


def filter_sentences(doc: str, checker: VocabularyChecker, cfg: FilterConfig, counts: FilterCounts,
                     oov: Counter[str]) -> list[str]:
    """Kept sentences of one document, in order."""
    kept = []
    min_words = cfg.effective_min_words
    for sentence in _SENTENCE_END.split(doc.lower()):
        sentence = sentence.strip()
        if not sentence:
            continue
        counts.units += 1
        n_tok = 0
        bad_words: list[str] = []
        for word in normalize_for_check(sentence).split(" "):
            n, bad = checker.word_info(word)
            n_tok += n
            bad_words.extend(bad)
        long_enough = n_tok > min_words
        if long_enough:
            counts.eligible += 1
            counts.eligible_words += len(sentence.split())
        if bad_words:
            counts.rejected_oov += 1
            _count_oov(oov, tuple(bad_words))
        elif not long_enough:
            counts.too_short += 1
        else:
            counts.kept += 1
            kept.append(sentence)
    return kept


def filter_document(doc: str, checker: VocabularyChecker, cfg: FilterConfig, counts: FilterCounts,
                    oov: Counter[str]) -> list[str]:
    """Apply the configured unit's rule to one document, updating ``counts`` and ``oov``."""
    counts.documents += 1
    counts.bytes += len(doc.encode("utf-8"))
    if cfg.unit == "window":
        return filter_windows(doc, checker, cfg, counts, oov)
    return filter_sentences(doc, checker, cfg, counts, oov)


def iter_windows(doc: str, cfg: FilterConfig) -> list[tuple[int, str, int]]:
    """All units of a document that are long enough, without the vocabulary check (for the control).

    Returns ``(index, text, check words)`` with ``index`` the unit's position in the document.
    """
    out = []
    checker = _PLAIN_CHECKER
    min_words = cfg.effective_min_words
    if cfg.unit == "sentence":
        sentences = [s.strip() for s in _SENTENCE_END.split(doc.lower()) if s.strip()]
        for index, sentence in enumerate(sentences):
            n_tok = len(WORD_RE.findall(normalize_for_check(sentence)))
            if n_tok > min_words:
                out.append((index, sentence, n_tok))
        return out
    lowered = doc.lower()
    words = lowered.split(" ")
    tok_prefix = [0, *accumulate(checker.word_info(w)[0] for w in normalize_for_check(lowered).split(" "))]
    for index, start in enumerate(range(0, len(words), cfg.stride)):
        end = min(start + cfg.window, len(words))
        n_tok = tok_prefix[end] - tok_prefix[start]
        if n_tok > min_words:
            out.append((index, " ".join(words[start:end]), n_tok))
    return out


_PLAIN_CHECKER = VocabularyChecker(frozenset())
