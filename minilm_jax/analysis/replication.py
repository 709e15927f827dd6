"""Statistics with the pre-training run as the unit of replication: one value per pre-training
seed (or run), summarised by the mean, sample sd (ddof = 1), n, a t interval and a one-sample
t-test against 0 (:class:`SeedEffect`), or, for gaps to one baseline run that every seed shares,
Welch's t against that run's own replicates (:func:`gap_to_shared_baseline`); and a Pearson r
computed within each seed, summarised over seeds on the Fisher-z scale
(:class:`CorrelationOverSeeds`). Used by :mod:`~minilm_jax.analysis.zero_shot_seeds`,
:mod:`~minilm_jax.analysis.study_b_seeds` and :mod:`~minilm_jax.analysis.seeds`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minilm_jax.analysis.stats import (format_p, pearson_fisher, pearson_within_groups,
                                      t_interval, welch_t)
from minilm_jax.deferred_import import Deferred

stats = Deferred("scipy.stats")  # imported at first use, not with the commands


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

    @property
    def zero_spread(self) -> bool:
        """n >= 2 values, all equal: the mean is known, the interval and p are not."""
        return self.n >= 2 and self.sd == 0.0

    def verdict(self, better: str = "above 0", worse: str = "below 0") -> str:
        if self.zero_spread:
            return f"undefined (all {self.n} values equal: zero spread)"
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
        if self.zero_spread:
            return (f"{self.mean:+.{digits}f} (all n = {self.n} {self.unit}s equal: zero spread, "
                    "so the interval and p are undefined)")
        if not self.defined:
            return f"{self.mean:+.{digits}f} (n = {self.n}: no interval)"
        pct = round(100 * self.confidence)
        return (f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({pct}% {self.method} CI, sd {self.sd:.{digits}f}, n = {self.n} {self.unit}s, "
                f"p = {format_p(self.p)})")


def seed_effect(label: str, values: Mapping[Any, float], unit: str = "pre-training seed",
                confidence: float = 0.95) -> SeedEffect:
    """Mean, sample sd, t interval and one-sample t p-value of ``values`` (one per replicate).
    Identical values have zero spread: no interval and no p (NaN; a zero-width interval would read
    as certainty from a few replicates)."""
    values = {k: float(v) for k, v in values.items()}
    x = np.asarray(list(values.values()), dtype=np.float64)
    nan = float("nan")
    if x.size == 0:
        return SeedEffect(label, unit, values, nan, nan, 0, nan, nan, nan, confidence)
    interval = t_interval(x, confidence)
    if x.size >= 2 and interval["sd"] == 0.0:
        interval.update(low=nan, high=nan)
    if x.size < 2 or interval["sd"] == 0.0:
        p = nan
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
    with a defined r, its t interval and one-sample t p-value, back-transformed to r. Where a
    seed's points span several architectures (a variant sweep), ``within`` is the same summary of
    the correlation within architectures (each architecture's means removed in each seed) and
    ``architectures`` counts the points per architecture."""

    per_seed: dict[int, Any]  # seed -> PearsonResult (WithinGroups in ``within``)
    mean_r: float
    low: float
    high: float
    n: int  # seeds with a defined r
    p: float
    within: "CorrelationOverSeeds | None" = None
    architectures: dict[str, int] | None = None

    def text(self) -> str:
        if self.n == 0:
            return "no seed with a defined r"
        if self.n == 1:
            text = f"r = {self.mean_r:+.2f} (n = 1 seed: no interval)"
        elif not math.isfinite(self.low):
            text = (f"mean r = {self.mean_r:+.2f} (every one of the n = {self.n} pre-training "
                    "seeds gave the same r: zero spread, no interval)")
        else:
            text = (f"mean r = {self.mean_r:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (95% t CI "
                    f"of Fisher z over n = {self.n} pre-training seeds, p = {format_p(self.p)})")
        if self.within is None or not self.architectures:
            return text
        counts = ", ".join(f"`{a}` ({k} checkpoint{'s' if k != 1 else ''})"
                           for a, k in self.architectures.items())
        return (f"{text}; each seed's r pools {len(self.architectures)} architectures ({counts}), "
                "so it also measures which architecture a checkpoint has; within architectures "
                f"(each architecture's means removed in each seed): {self.within.text()}")


def _over_seeds(per_seed: dict[int, Any], confidence: float) -> tuple[float, float, float, int,
                                                                      float]:
    """(mean r, low, high, n, p) of the defined per-seed rs, over seeds on the Fisher-z scale."""
    rs = [r.r for r in per_seed.values() if r.defined]
    z = np.arctanh(np.clip(np.asarray(rs, dtype=np.float64), -1 + 1e-12, 1 - 1e-12))
    effect = seed_effect("fisher z", dict(enumerate(z)), confidence=confidence)
    back = (lambda v: float(np.tanh(v)) if math.isfinite(v) else float("nan"))  # noqa: E731
    return back(effect.mean), back(effect.low), back(effect.high), effect.n, effect.p


def correlation_over_seeds(points: Mapping[int, Sequence[tuple]],
                           confidence: float = 0.95) -> CorrelationOverSeeds:
    """``points``: seed -> its (x, y) points, or (x, y, architecture). Pearson r with a Fisher-z
    interval within each seed (:func:`pearson_fisher`; undefined below 4 points), then over the
    seeds with a defined r; where the points span several architectures, the same for the
    correlation within architectures (:func:`pearson_within_groups`) beside it."""
    per_seed = {seed: pearson_fisher([p[0] for p in pts], [p[1] for p in pts], confidence)
                for seed, pts in sorted(points.items())}
    archs = Counter(p[2] for pts in points.values() for p in pts if len(p) > 2)
    within = None
    if len(archs) >= 2:
        per_seed_within = {seed: pearson_within_groups([p[0] for p in pts], [p[1] for p in pts],
                                                       [p[2] for p in pts], confidence)
                           for seed, pts in sorted(points.items())}
        within = CorrelationOverSeeds(per_seed_within,
                                      *_over_seeds(per_seed_within, confidence))
    return CorrelationOverSeeds(per_seed, *_over_seeds(per_seed, confidence), within,
                                dict(sorted(archs.items())) if within is not None else None)
