"""Zero-shot minimal-pair accuracy: a pair is right when the grammatical sentence scores higher
than the ungrammatical one under a scoring rule (:mod:`minilm_jax.evals.scoring`).

Pairs are never dropped silently: a pair with a token the tokenizer can only encode as ``<unk>``
is counted per paradigm as ``skipped_unk``; with a word list, a pair with a word outside it (words
as the downstream vocabulary filter reads them: ``tasks.vocab_filter.content_words``) is counted
as ``skipped_vocab``. Accuracy is over the scored pairs, with a 95% Wilson interval; a
tie counts as wrong. Two models scored on the same pairs (a checkpoint and its random-init twin)
are compared pair by pair: the accuracy difference with a 95% interval over pairs and McNemar's
exact test on the discordant pairs. Chance is 50%.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from minilm_jax.tasks.vocab_filter import content_words
from minilm_jax.tokenizer import Tokenizer

from .scoring import EncodedSentence, TargetLogProbs, encode_sentence, score_sentences
from .suites import Paradigm

CHANCE = 50.0


@dataclasses.dataclass
class ParadigmResult:
    """One paradigm scored by one rule: counts, accuracy (%) and its 95% Wilson interval, and
    the margin (good minus bad score) of every pair, NaN for a skipped one."""

    suite: str
    paradigm: str
    phenomenon: str
    rule: str
    pairs: int
    scored: int
    skipped_unk: int
    skipped_vocab: int
    correct: int
    margins: np.ndarray = dataclasses.field(repr=False)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.scored if self.scored else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.scored)

    def row(self, **extra: Any) -> dict[str, Any]:
        """A results row (``kind = "minimal_pairs"``)."""
        low, high = self.interval
        return {"kind": "minimal_pairs", "suite": self.suite, "paradigm": self.paradigm,
                "phenomenon": self.phenomenon, "rule": self.rule, "accuracy": self.accuracy,
                "accuracy_low": low, "accuracy_high": high, "pairs": self.pairs,
                "scored": self.scored, "skipped_unk": self.skipped_unk,
                "skipped_vocab": self.skipped_vocab, "correct": self.correct, **extra}


def wilson(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / n`` in percent (NaN, NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = scipy_stats.binomtest(correct, n).proportion_ci(confidence, method="wilson")
    return 100.0 * ci.low, 100.0 * ci.high


def score_paradigms(paradigms: Sequence[Paradigm], tokenizer: Tokenizer, fn: TargetLogProbs,
                    rule: str, word_list: Iterable[str] | None = None, batch_rows: int = 256
                    ) -> list[ParadigmResult]:
    """Score every pair of ``paradigms`` with ``rule``; all sentences of all paradigms are
    scored together (each distinct sentence once)."""
    allowed = None if word_list is None else frozenset(w.lower() for w in word_list)
    encoded: dict[str, EncodedSentence] = {}
    keep: list[list[bool]] = []
    counts = []
    for paradigm in paradigms:
        kept, unk, vocab = [], 0, 0
        for pair in paradigm.pairs:
            if allowed is not None and not all(w in allowed for s in (pair.good, pair.bad)
                                               for w in content_words(s)):
                vocab += 1
                kept.append(False)
                continue
            sentences = [encoded.setdefault(s, encode_sentence(tokenizer, s))
                         for s in (pair.good, pair.bad)]
            if any(tokenizer.unk_id in s.ids or not s.ids for s in sentences):
                unk += 1
                kept.append(False)
                continue
            kept.append(True)
        keep.append(kept)
        counts.append((unk, vocab))
    needed = sorted({s for paradigm, kept in zip(paradigms, keep)
                     for pair, k in zip(paradigm.pairs, kept) if k for s in (pair.good, pair.bad)})
    values = score_sentences([encoded[s] for s in needed], rule, fn, tokenizer, batch_rows)
    score_of = dict(zip(needed, values))
    results = []
    for paradigm, kept, (unk, vocab) in zip(paradigms, keep, counts):
        margins = np.asarray([score_of[p.good] - score_of[p.bad] if k else np.nan
                              for p, k in zip(paradigm.pairs, kept)], np.float64)
        scored = int(np.sum(kept))
        results.append(ParadigmResult(
            paradigm.suite, paradigm.name, paradigm.phenomenon, rule, len(paradigm.pairs),
            scored, unk, vocab, int(np.sum(margins[np.asarray(kept, bool)] > 0)), margins))
    return results


@dataclasses.dataclass(frozen=True)
class Summary:
    """Accuracy over a group of paradigms: pooled over pairs (Wilson) and the mean of the
    paradigms' accuracies (BLiMP's and Zorro's usual "overall")."""

    label: str
    paradigms: int
    scored: int
    correct: int
    pooled: float
    low: float
    high: float
    macro: float


def summarize(results: Sequence[ParadigmResult], by: str = "overall") -> list[Summary]:
    """``by="overall"``: one summary of all results; ``by="phenomenon"``: one per phenomenon."""
    groups: dict[str, list[ParadigmResult]] = {}
    for r in results:
        groups.setdefault("overall" if by == "overall" else r.phenomenon, []).append(r)
    out = []
    for label, members in sorted(groups.items()):
        scored = sum(r.scored for r in members)
        correct = sum(r.correct for r in members)
        low, high = wilson(correct, scored)
        accuracies = [r.accuracy for r in members if r.scored]
        out.append(Summary(label, len(members), scored, correct,
                           100.0 * correct / scored if scored else float("nan"), low, high,
                           float(np.mean(accuracies)) if accuracies else float("nan")))
    return out


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Model A minus model B on the same pairs: accuracy difference (points) with a 95% t
    interval over pairs, and McNemar's exact p-value (A right / B wrong vs the reverse)."""

    n: int
    difference: float
    low: float
    high: float
    a_only: int
    b_only: int
    p_value: float


def compare_paired(a: Sequence[ParadigmResult], b: Sequence[ParadigmResult]) -> PairedComparison:
    """Pair by pair over the pairs both scored (the same suite, paradigms and pairs)."""
    ra = np.concatenate([r.margins for r in a]) if a else np.zeros(0)
    rb = np.concatenate([r.margins for r in b]) if b else np.zeros(0)
    if ra.shape != rb.shape:
        raise ValueError(f"the two results cover different pairs ({ra.size} vs {rb.size})")
    both = ~np.isnan(ra) & ~np.isnan(rb)
    right_a, right_b = ra[both] > 0, rb[both] > 0
    d = 100.0 * (right_a.astype(np.float64) - right_b.astype(np.float64))
    n = int(d.size)
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    if n < 2:
        return PairedComparison(n, float(np.mean(d)) if n else float("nan"), float("nan"),
                                float("nan"), a_only, b_only, float("nan"))
    half = scipy_stats.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / np.sqrt(n)
    discordant = a_only + b_only
    p = (float(scipy_stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant
         else 1.0)
    mean = float(np.mean(d))
    return PairedComparison(n, mean, mean - half, mean + half, a_only, b_only, p)
