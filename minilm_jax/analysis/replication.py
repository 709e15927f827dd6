"""Statistics with the pre-training run as the unit of replication: one value per pre-training
seed (or run), summarised by the mean, sample sd (ddof = 1), n, a t interval and a one-sample
t-test against 0 (:class:`SeedEffect`), or, for gaps to one baseline run that every seed shares,
Welch's t against that run's own replicates (:func:`gap_to_shared_baseline`); and a Pearson r
computed within each seed, summarised over seeds on the Fisher-z scale
(:class:`CorrelationOverSeeds`). Used by :mod:`~minilm_jax.analysis.zero_shot_seeds`,
:mod:`~minilm_jax.analysis.study_b_seeds` and :mod:`~minilm_jax.analysis.seeds`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from minilm_jax.analysis.stats import (PearsonResult, format_p, pearson_fisher, t_interval,
                                      welch_t)


@dataclass(frozen=True)
class SeedEffect:
    """One effect measured once per replicate (``values``: replicate -> value)."""

    label: str
    unit: str  # what one value is, e.g. "pre-training seed" or "pre-training run (size x seed)"
    values: dict[Any, float]
    mean: float
    sd: float  # sample sd, ddof = 1 (NaN for one value)
    n: int
    low: float  # t interval of the mean (NaN for one value)
    high: float
    p: float  # two-sided one-sample t-test against 0 (NaN for one value)
    confidence: float = 0.95
    # how low, high and p were computed: "t" (one-sample, over the values) or, for gaps to one
    # shared baseline run, "Welch t vs a shared twin (m fine-tuning seeds)"
    method: str = "t"

    @property
    def defined(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low)

    def verdict(self, better: str = "above 0", worse: str = "below 0") -> str:
        if not self.defined:
            return f"undefined (n = {self.n})"
        if self.low > 0:
            return better
        if self.high < 0:
            return worse
        return "interval includes 0"

    def text(self, digits: int = 1) -> str:
        if self.n == 0:
            return "— (n = 0)"
        if not self.defined:
            return f"{self.mean:+.{digits}f} (n = {self.n}: no interval)"
        pct = round(100 * self.confidence)
        return (f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({pct}% {self.method} CI, sd {self.sd:.{digits}f}, n = {self.n} {self.unit}s, "
                f"p = {format_p(self.p)})")


def seed_effect(label: str, values: Mapping[Any, float], unit: str = "pre-training seed",
                confidence: float = 0.95) -> SeedEffect:
    """Mean, sample sd, t interval and one-sample t p-value of ``values`` (one per replicate).
    Identical values give a zero-width interval and p = 0 (mean != 0) or 1 (mean = 0)."""
    values = {k: float(v) for k, v in values.items()}
    x = np.asarray(list(values.values()), dtype=np.float64)
    nan = float("nan")
    if x.size == 0:
        return SeedEffect(label, unit, values, nan, nan, 0, nan, nan, nan, confidence)
    interval = t_interval(x, confidence)
    if x.size < 2:
        p = nan
    elif interval["sd"] == 0.0:
        p = 0.0 if interval["mean"] != 0 else 1.0
    else:
        p = float(stats.ttest_1samp(x, 0.0).pvalue)
    return SeedEffect(label, unit, values, interval["mean"], interval["sd"], int(x.size),
                      interval["low"], interval["high"], p, confidence)


def gap_to_shared_baseline(label: str, scores: Mapping[Any, float], baseline: Sequence[float],
                           unit: str = "pre-training seed", confidence: float = 0.95,
                           baseline_name: str = "a shared twin") -> SeedEffect:
    """``scores`` (one per replicate) minus one baseline run that every replicate shares (a
    random-init twin shared by a design's pre-training seeds; ``baseline``: its fine-tuning seeds'
    scores). ``values`` are the per-replicate gaps; the interval and p are Welch's t between the
    replicates' scores and the baseline's, so the baseline's own spread counts and the one run it
    is counts once (a one-sample t over the gaps would treat its mean as known). ``baseline_name``
    names that run in the effect's ``method``."""
    scores = {k: float(v) for k, v in scores.items()}
    base = np.asarray(baseline, dtype=np.float64).reshape(-1)
    values = {k: v - float(base.mean()) for k, v in scores.items()}
    x = np.asarray(list(values.values()), dtype=np.float64)
    nan = float("nan")
    method = f"Welch t vs {baseline_name} ({base.size} fine-tuning seeds)"
    sd = float(x.std(ddof=1)) if x.size > 1 else nan
    welch = welch_t(list(scores.values()), base, confidence)
    if welch is None:  # too few values or no spread at all: the one-sample summary
        return seed_effect(label, values, unit, confidence)
    mean, low, high, p = welch
    return SeedEffect(label, unit, values, mean, sd, int(x.size), low, high, p, confidence, method)


@dataclass(frozen=True)
class CorrelationOverSeeds:
    """Pearson r within each pre-training seed and over seeds: the mean Fisher z of the seeds
    with a defined r, its t interval and one-sample t p-value, back-transformed to r."""

    per_seed: dict[int, PearsonResult]
    mean_r: float
    low: float
    high: float
    n: int  # seeds with a defined r
    p: float

    def text(self) -> str:
        if self.n == 0:
            return "no seed with a defined r"
        if self.n == 1:
            return f"r = {self.mean_r:+.2f} (n = 1 seed: no interval)"
        return (f"mean r = {self.mean_r:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (95% t CI of "
                f"Fisher z over n = {self.n} pre-training seeds, p = {format_p(self.p)})")


def correlation_over_seeds(points: Mapping[int, Sequence[tuple[float, float]]],
                           confidence: float = 0.95) -> CorrelationOverSeeds:
    """``points``: seed -> its (x, y) points. Pearson r with a Fisher-z interval within each seed
    (:func:`pearson_fisher`; undefined below 4 points), then over the seeds with a defined r."""
    per_seed = {seed: pearson_fisher([x for x, _ in pts], [y for _, y in pts], confidence)
                for seed, pts in sorted(points.items())}
    rs = [r.r for r in per_seed.values() if r.defined]
    z = np.arctanh(np.clip(np.asarray(rs, dtype=np.float64), -1 + 1e-12, 1 - 1e-12))
    effect = seed_effect("fisher z", dict(enumerate(z)), confidence=confidence)
    back = (lambda v: float(np.tanh(v)) if math.isfinite(v) else float("nan"))  # noqa: E731
    return CorrelationOverSeeds(per_seed, back(effect.mean), back(effect.low), back(effect.high),
                                effect.n, effect.p)
