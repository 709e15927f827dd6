"""Statistics the reports print: sample mean/std with n, paired gaps with t intervals and p-values,
Pearson r with a Fisher-z interval and a permutation p-value, and Pearson r within groups (each
group's mean removed: what a correlation pooled over groups measures once their levels are out).

Every function returns a result that can say "undefined" (with the reason) instead of raising, so a
report never crashes on constant scores or too few points.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from minilm_jax.deferred_import import Deferred

stats = Deferred("scipy.stats")  # imported at first use, not with the commands

EXACT_PERMUTATION_MAX_N = 8
MONTE_CARLO_PERMUTATIONS = 20_000


@dataclass(frozen=True)
class MeanSD:
    """Mean and sample standard deviation (ddof = 1) of n values."""

    mean: float
    sd: float
    n: int

    def text(self, digits: int = 1) -> str:
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (n = 1)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} (n = {self.n})"


def mean_sd(values: Sequence[float]) -> MeanSD:
    """Mean and sample std (ddof = 1; 0 for one value) of ``values``."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return MeanSD(float("nan"), float("nan"), 0)
    return MeanSD(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample sd (ddof = 1), n and the t interval of the mean of ``values`` (NaN bounds for
    one value)."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(a.size)
    mean = float(a.mean())
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "n": n, "low": float("nan"), "high": float("nan")}
    sd = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return {"mean": mean, "sd": sd, "n": n, "low": mean - half, "high": mean + half}


@dataclass(frozen=True)
class Gap:
    """``a - b`` with a 95% interval and a two-sided p-value; ``undefined`` names why not."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    sd: float
    method: str  # "paired t" | "Welch t" | ""
    confidence: float = 0.95
    undefined: str = ""

    @property
    def defined(self) -> bool:
        return not self.undefined

    @property
    def zero_spread(self) -> bool:
        """Every one of n >= 2 differences is the same: the mean is known, the interval and p
        are not (a t interval needs a spread)."""
        return self.n >= 2 and self.sd == 0.0 and math.isfinite(self.mean)

    def verdict(self, better: str = "pre-trained better", worse: str = "random better") -> str:
        if not self.defined:
            return f"undefined ({self.undefined})"
        if self.low > 0:
            return better
        if self.high < 0:
            return worse
        return "no significant difference"

    def text(self, digits: int = 1) -> str:
        if self.zero_spread:
            return f"{self.mean:+.{digits}f} ({self.method}, n = {self.n}, {self.undefined})"
        if not self.defined:
            return f"undefined ({self.undefined})"
        pct = round(100 * self.confidence)
        return (f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({pct}% CI, {self.method}, n = {self.n}, p = {format_p(self.p)})")


def format_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _undefined_gap(reason: str, n: int, method: str = "") -> Gap:
    nan = float("nan")
    return Gap(nan, nan, nan, nan, n, nan, method, undefined=reason)


def zero_spread_gap(mean: float, n: int, method: str, confidence: float = 0.95) -> Gap:
    """The gap when all ``n`` (>= 2) differences equal ``mean``: the mean, no interval and no p
    (the spread is zero, so a t interval would have zero width: certainty from a few runs)."""
    nan = float("nan")
    return Gap(mean, nan, nan, nan, n, 0.0, method, confidence,
               undefined=f"every difference equal: zero spread, so the {round(100 * confidence)}% "
                         "interval and p are undefined")


def paired_gap(a_by_seed: dict[Any, float], b_by_seed: dict[Any, float],
               confidence: float = 0.95) -> Gap:
    """Gap ``a - b``. Paired by seed (t interval over per-seed differences, ``ttest_rel`` p) when the
    seeds overlap in >= 2 values; otherwise Welch's t (unequal variances) over all values."""
    common = sorted(set(a_by_seed) & set(b_by_seed), key=str)
    if len(common) >= 2:
        d = np.asarray([a_by_seed[s] - b_by_seed[s] for s in common], dtype=np.float64)
        n = d.size
        sd = float(d.std(ddof=1))
        mean = float(d.mean())
        if sd == 0.0:  # identical differences: no interval, no p
            return zero_spread_gap(mean, n, "paired t", confidence)
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        p = float(stats.ttest_rel([a_by_seed[s] for s in common],
                                  [b_by_seed[s] for s in common]).pvalue)
        return Gap(mean, mean - half, mean + half, p, n, sd, "paired t", confidence)
    a = np.asarray(list(a_by_seed.values()), dtype=np.float64)
    b = np.asarray(list(b_by_seed.values()), dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return _undefined_gap("fewer than 2 seeds on a side", int(min(a.size, b.size)), "Welch t")
    welch = welch_t(a, b, confidence)
    if welch is None:
        return _undefined_gap("no variance", int(a.size + b.size), "Welch t")
    mean, low, high, p = welch
    return Gap(mean, low, high, p, int(a.size + b.size), float("nan"), "Welch t", confidence)


def welch_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
            ) -> tuple[float, float, float, float] | None:
    """mean(a) - mean(b), its Welch-Satterthwaite t interval and two-sided p (unequal variances);
    None when a side has fewer than 2 values or neither side varies."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size < 2 or b.size < 2:
        return None
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0.0:
        return None
    mean = float(a.mean() - b.mean())
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(va + vb))
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return mean, mean - half, mean + half, p


class _Correlation:
    """What a correlation result (plain or within groups) shares: defined unless a reason says
    why not, and its reading against an expected sign."""

    r: float
    low: float
    high: float
    confidence: float
    undefined: str

    @property
    def defined(self) -> bool:
        return not self.undefined

    def inference(self) -> str:
        """What follows "Fisher-z CI" in :meth:`text`: the interval's n and the test's p."""
        raise NotImplementedError

    def text(self) -> str:
        if not self.defined:
            return f"undefined ({self.undefined})"
        return (f"r = {self.r:.3f} [{self.low:.3f}, {self.high:.3f}] "
                f"({round(100 * self.confidence)}% Fisher-z CI{self.inference()})")

    def agreement(self, expected_sign: int) -> str:
        """How the data relate to the expected direction (-1: negative, +1: positive)."""
        if not self.defined:
            return "undefined"
        if np.sign(self.r) != expected_sign:
            return "opposite sign to the expected direction"
        excludes = self.high < 0 if expected_sign < 0 else self.low > 0
        return ("agrees: expected sign, CI excludes 0" if excludes
                else "same sign as expected, but the CI includes 0")


@dataclass(frozen=True)
class PearsonResult(_Correlation):
    """Pearson r of n points, Fisher-z interval, permutation and parametric p-values."""

    r: float
    low: float
    high: float
    n: int
    p_permutation: float
    p_parametric: float
    permutations: str  # "exact (n! orderings)" | "Monte Carlo (m)"
    confidence: float = 0.95
    undefined: str = ""

    def inference(self) -> str:
        return (f", n = {self.n}; permutation p = {format_p(self.p_permutation)}, "
                f"{self.permutations}")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / math.sqrt((xc * xc).sum() * (yc * yc).sum()))


def permutation_p(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, str]:
    """Two-sided permutation p-value of Pearson r: exact over all orderings for n <= 8, else a seeded
    Monte Carlo with the (k + 1) / (m + 1) correction."""
    r0 = abs(_pearson(x, y)) - 1e-12
    n = x.size
    if n <= EXACT_PERMUTATION_MAX_N:
        hits = total = 0
        for order in itertools.permutations(range(n)):
            total += 1
            hits += abs(_pearson(x, y[list(order)])) >= r0
        return hits / total, f"exact ({total} orderings)"
    rng = np.random.default_rng(seed)
    m = MONTE_CARLO_PERMUTATIONS
    ys = np.stack([rng.permutation(y) for _ in range(m)])
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    r = (yc @ xc) / np.sqrt((xc * xc).sum() * (yc * yc).sum(axis=1))
    hits = int(np.sum(np.abs(r) >= r0))
    return (hits + 1) / (m + 1), f"Monte Carlo ({m} permutations)"


def pearson_fisher(x: Sequence[float], y: Sequence[float], confidence: float = 0.95,
                   seed: int = 0) -> PearsonResult:
    """Pearson r with scipy's Fisher-z interval and a permutation p-value; undefined (not an error)
    for n < 4 (the Fisher-z interval needs n > 3) or a constant side."""
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    nan = float("nan")
    n = int(xa.size)
    if xa.shape != ya.shape:
        raise ValueError(f"x has {xa.size} points but y has {ya.size}")
    reason = ""
    if n < 4:
        reason = f"n = {n}: at least 4 points are needed for a Fisher-z interval"
    elif not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        reason = "non-finite values"
    elif np.ptp(xa) == 0 or np.ptp(ya) == 0:
        reason = "one side is constant"
    if reason:
        return PearsonResult(nan, nan, nan, n, nan, nan, "", confidence, undefined=reason)
    result = stats.pearsonr(xa, ya)
    ci = result.confidence_interval(confidence_level=confidence)
    p_perm, how = permutation_p(xa, ya, seed)
    return PearsonResult(float(result.statistic), float(ci.low), float(ci.high), n, p_perm,
                         float(result.pvalue), how, confidence)


@dataclass(frozen=True)
class WithinGroups(_Correlation):
    """Pearson r of n points in k groups after each group's own mean is removed from x and from y
    (the pooled-within, or fixed-effects, correlation: what is left once the groups' levels are
    taken out). Its inference is that of a partial correlation controlling for the k - 1 group
    indicators: a t-test with n - k - 1 degrees of freedom (``df``) and a Fisher-z interval with
    standard error 1 / sqrt(n - k - 2), i.e. n - k + 1 in place of n (k = 1: plain Pearson)."""

    r: float
    low: float
    high: float
    n: int
    groups: int
    df: int
    p: float
    confidence: float = 0.95
    undefined: str = ""

    def inference(self) -> str:
        return (f" with n - K + 1 = {self.n - self.groups + 1} for n, n = {self.n}, "
                f"K = {self.groups}, df = {self.df}; t-test p = {format_p(self.p)}")


def group_residuals(values: Sequence[float], groups: Sequence[Any]) -> np.ndarray:
    """``values`` minus the mean of their group (float64)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    keys = list(groups)
    out = v.copy()
    for key in set(keys):
        mine = np.asarray([g == key for g in keys])
        out[mine] = v[mine] - v[mine].mean()
    return out


def pearson_within_groups(x: Sequence[float], y: Sequence[float], groups: Sequence[Any],
                          confidence: float = 0.95) -> WithinGroups:
    """:class:`WithinGroups` of ``x`` and ``y`` with ``groups`` (one label per point); undefined
    (not an error) with fewer than k + 3 points, non-finite values or no spread left within the
    groups on a side."""
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    labels = list(groups)
    if not xa.shape == ya.shape == (len(labels),):
        raise ValueError(f"x, y and groups have {xa.size}, {ya.size} and {len(labels)} points")
    n, k = int(xa.size), len(set(labels))
    nan = float("nan")
    reason = ""
    if n - k - 2 < 1:
        reason = (f"n = {n} in K = {k} groups: at least K + 3 = {k + 3} points are needed for a "
                  "Fisher-z interval")
    elif not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        reason = "non-finite values"
    if reason:
        return WithinGroups(nan, nan, nan, n, k, max(n - k - 1, 0), nan, confidence, reason)
    xr, yr = group_residuals(xa, labels), group_residuals(ya, labels)
    sxx, syy = float((xr * xr).sum()), float((yr * yr).sum())
    if sxx <= 1e-24 * max(1.0, float((xa * xa).sum())) or \
            syy <= 1e-24 * max(1.0, float((ya * ya).sum())):
        return WithinGroups(nan, nan, nan, n, k, n - k - 1, nan, confidence,
                            "one side is constant within every group")
    r = float(np.clip((xr * yr).sum() / math.sqrt(sxx * syy), -1.0, 1.0))
    df = n - k - 1
    if abs(r) == 1.0:
        p, low, high = 0.0, r, r
    else:
        p = float(2 * stats.t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))
        half = float(stats.norm.ppf(0.5 + confidence / 2)) / math.sqrt(n - k - 2)
        z = math.atanh(r)
        low, high = math.tanh(z - half), math.tanh(z + half)
    return WithinGroups(r, low, high, n, k, df, p, confidence)


def corrected_resampled_gap(differences: Sequence[float], test_over_train: float,
                            confidence: float = 0.95) -> Gap:
    """The mean of ``differences`` (one per cross-validation run: fold x repetition) with the
    corrected resampled t-test of Nadeau & Bengio (2003), as Bouckaert & Frank (2004) apply it
    to repeated k-fold cross-validation: the variance of the J differences times
    ``1/J + n_test/n_train`` (the runs' training sets overlap, so their differences are
    correlated), J - 1 degrees of freedom."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    n = int(d.size)
    if n < 2:
        return _undefined_gap("fewer than 2 runs", n, "corrected resampled t")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return zero_spread_gap(mean, n, "corrected resampled t", confidence)
    se = sd * math.sqrt(1.0 / n + test_over_train)
    t = mean / se
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return Gap(mean, mean - half, mean + half, p, n, sd, "corrected resampled t", confidence)
