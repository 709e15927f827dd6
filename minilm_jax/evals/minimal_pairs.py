"""Zero-shot minimal-pair accuracy: a pair is right when the grammatical sentence scores higher
than the ungrammatical one under a scoring rule (:mod:`minilm_jax.evals.scoring`).

Pairs are never dropped silently: a pair with a token the tokenizer can only encode as ``<unk>``
is counted per paradigm as ``skipped_unk``; with a word list, a pair with a word outside it (words
as the downstream vocabulary filter reads them: ``tasks.vocab_filter.content_words``) is counted
as ``skipped_vocab``. Accuracy is over the scored pairs, with a 95% Wilson interval. A tie (the
two sentences score exactly equal: identical, or encoded alike by the tokenizer, which scores each
encoding once) counts as wrong, as BLiMP's and Zorro's strict ``good > bad`` does, and is counted
per paradigm as ``ties`` so it is never silent. Two models scored on the same pairs (a checkpoint and its random-init twin)
are compared pair by pair: the accuracy difference with a 95% interval over pairs and McNemar's
exact test on the discordant pairs. Chance is 50%.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from minilm_jax.tasks.task_data import unknown_punctuation, without_chars
from minilm_jax.tasks.vocab_filter import content_words
from minilm_jax.tokenizer import Tokenizer

from .scoring import EncodedSentence, TargetLogProbs, encode_sentence, score_sentences
from .suites import MinimalPair, Paradigm

CHANCE = 50.0


@dataclasses.dataclass
class ParadigmResult:
    """One paradigm scored by one rule: counts, accuracy (%) and its 95% Wilson interval, and
    the margin (good minus bad score) of every pair, NaN for a skipped one. ``ties``: scored pairs
    whose margin is exactly 0, counted wrong."""

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
    skipped_long: int = 0  # a sentence longer than the model's input
    ties: int = 0  # scored pairs whose sentences score exactly equal (counted wrong)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.scored if self.scored else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.scored)

    @property
    def outcomes(self) -> str:
        """Per pair, in file order: ``1`` right, ``0`` wrong (a tie too), ``-`` skipped."""
        return "".join("-" if np.isnan(m) else "1" if m > 0 else "0" for m in self.margins)

    def row(self, **extra: Any) -> dict[str, Any]:
        """A results row (``kind = "minimal_pairs"``); ``outcomes`` lets two models scored on
        the same pairs be compared pair by pair from their rows alone. With no scored pair the
        accuracy and its interval are None (JSON null), never NaN."""
        def number(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        low, high = self.interval
        return {"kind": "minimal_pairs", "suite": self.suite, "paradigm": self.paradigm,
                "phenomenon": self.phenomenon, "rule": self.rule,
                "accuracy": number(self.accuracy), "accuracy_low": number(low),
                "accuracy_high": number(high), "pairs": self.pairs,
                "scored": self.scored, "skipped_unk": self.skipped_unk,
                "skipped_vocab": self.skipped_vocab, "skipped_long": self.skipped_long,
                "ties": self.ties, "correct": self.correct,
                "outcomes": self.outcomes, **extra}


def wilson(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / n`` in percent (NaN, NaN for n = 0)."""
    from scipy import stats as scipy_stats  # here, not at the top: training never imports it

    if n == 0:
        return float("nan"), float("nan")
    ci = scipy_stats.binomtest(correct, n).proportion_ci(confidence, method="wilson")
    return 100.0 * ci.low, 100.0 * ci.high


def score_paradigms(paradigms: Sequence[Paradigm], tokenizer: Tokenizer, fn: TargetLogProbs,
                    rule: str, word_list: Iterable[str] | None = None, batch_rows: int = 256,
                    drop_unknown_chars: bool = False, max_len: int | None = None
                    ) -> list[ParadigmResult]:
    """Score every pair of ``paradigms`` with ``rule``; all sentences of all paradigms are
    scored together (each distinct sentence once). ``drop_unknown_chars``: punctuation the
    tokenizer can only encode as ``<unk>`` is removed from both sentences of every pair first
    (as fine-tuning's ``data.drop_unknown_chars`` does; e.g. a tokenizer trained on transcripts
    without punctuation). A pair with a sentence longer than ``max_len`` tokens (specials
    included) is skipped and counted (``skipped_long``). Each distinct encoding is scored once,
    so two sentences the tokenizer encodes alike tie exactly (counted in ``ties``)."""
    if drop_unknown_chars:
        texts = sorted({s for p in paradigms for pair in p.pairs for s in (pair.good, pair.bad)})
        unknown = unknown_punctuation(tokenizer, texts)
        if unknown:
            paradigms = [dataclasses.replace(p, pairs=tuple(
                MinimalPair(without_chars(pair.good, unknown), without_chars(pair.bad, unknown))
                for pair in p.pairs)) for p in paradigms]
    allowed = None if word_list is None else frozenset(w.lower() for w in word_list)
    encoded: dict[str, EncodedSentence] = {}
    keep: list[list[bool]] = []
    counts = []
    for paradigm in paradigms:
        kept, unk, vocab, long = [], 0, 0, 0
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
            if max_len and any(len(s.ids) + 2 > max_len for s in sentences):
                long += 1
                kept.append(False)
                continue
            kept.append(True)
        keep.append(kept)
        counts.append((unk, vocab, long))
    texts = sorted({s for paradigm, kept in zip(paradigms, keep)
                    for pair, k in zip(paradigm.pairs, kept) if k for s in (pair.good, pair.bad)})
    needed = list(dict.fromkeys(encoded[s] for s in texts))  # each encoding once, text order
    values = score_sentences(needed, rule, fn, tokenizer, batch_rows, max_len)
    score_of = dict(zip(needed, values))
    results = []
    for paradigm, kept, (unk, vocab, long) in zip(paradigms, keep, counts):
        margins = np.asarray([score_of[encoded[p.good]] - score_of[encoded[p.bad]] if k
                              else np.nan for p, k in zip(paradigm.pairs, kept)], np.float64)
        scored_margins = margins[np.asarray(kept, bool)]
        results.append(ParadigmResult(
            paradigm.suite, paradigm.name, paradigm.phenomenon, rule, len(paradigm.pairs),
            int(np.sum(kept)), unk, vocab, int(np.sum(scored_margins > 0)), margins, long,
            int(np.sum(scored_margins == 0))))
    return results


@dataclasses.dataclass(frozen=True)
class Summary:
    """Accuracy over a group of paradigm rows: pooled over pairs (Wilson) and the mean of the
    paradigms' accuracies (BLiMP's and Zorro's usual "overall"). ``paradigms`` counts those with
    a scored pair, ``empty`` those without (skipped whole); ``ties`` is counted in ``scored`` and
    not in ``correct``."""

    paradigms: int
    scored: int
    correct: int
    pooled: float
    low: float
    high: float
    macro: float
    ties: int = 0
    empty: int = 0


def summarize(rows: Sequence[Mapping[str, Any]]) -> Summary:
    """One summary of ``minimal_pairs`` rows (e.g. one phenomenon's, or all of a model's)."""
    scored = sum(int(r["scored"]) for r in rows)
    correct = sum(int(r["correct"]) for r in rows)
    low, high = wilson(correct, scored)
    accuracies = [100.0 * r["correct"] / r["scored"] for r in rows if r["scored"]]
    return Summary(len(accuracies), scored, correct,
                   100.0 * correct / scored if scored else float("nan"), low, high,
                   float(np.mean(accuracies)) if accuracies else float("nan"),
                   sum(int(r.get("ties", 0)) for r in rows), len(rows) - len(accuracies))


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


def compare_paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]
                   ) -> PairedComparison:
    """Pair by pair over the pairs both scored: ``a`` and ``b`` are the rows of the same
    paradigms (matched by run, when rows name one, suite and paradigm, then pair order)."""
    key = lambda r: (r.get("run"), r["suite"], r["paradigm"])  # noqa: E731
    for side in (a, b):
        keys = [key(r) for r in side]
        if len(set(keys)) != len(keys):
            repeated = sorted(k for k in keys if keys.count(k) > 1)[0]
            raise ValueError(f"rows repeat a paradigm ({repeated})")
    theirs = {key(r): r["outcomes"] for r in b}
    if set(theirs) != {key(r) for r in a}:
        missing = sorted(set(theirs) ^ {key(r) for r in a})[:3]
        raise ValueError(f"the two models' rows cover different paradigms ({missing})")
    uneven = [key(r) for r in a if len(r["outcomes"]) != len(theirs[key(r)])]
    if uneven:
        raise ValueError(f"the two results cover different pairs of {uneven[0]}")
    ra = "".join(r["outcomes"] for r in a)
    rb = "".join(theirs[key(r)] for r in a)
    both = np.asarray([x != "-" and y != "-" for x, y in zip(ra, rb)], bool)
    right_a = np.frombuffer(ra.encode(), np.uint8)[both] == ord("1")
    right_b = np.frombuffer(rb.encode(), np.uint8)[both] == ord("1")
    d = 100.0 * (right_a.astype(np.float64) - right_b.astype(np.float64))
    n = int(d.size)
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    if n < 2:
        return PairedComparison(n, float(np.mean(d)) if n else float("nan"), float("nan"),
                                float("nan"), a_only, b_only, float("nan"))
    from scipy import stats as scipy_stats

    half = scipy_stats.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / np.sqrt(n)
    discordant = a_only + b_only
    p = (float(scipy_stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant
         else 1.0)
    mean = float(np.mean(d))
    return PairedComparison(n, mean, mean - half, mean + half, a_only, b_only, p)
