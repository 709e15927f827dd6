"""Power-law fits of loss against compute: one line, or two segments with a free break.

All fits are least squares on ``ln L = ln a + b ln C`` (natural logs). ``r2_log`` is R^2 of that
log-space regression; ``r2_linear`` is R^2 of the fitted curve ``a C^b`` against ``L`` itself.

Two segments: points sorted by FLOPs are split between two neighbours ``C_i < C_(i+1)``; each side
(at least ``min_points`` distinct FLOPs values) gets its own power law, so the curve may jump at
the break, as the paper's frontier does. The split with the smallest total log-space squared error
wins. The break is only located within the gap ``[C_i, C_(i+1)]``; its point estimate is the
geometric midpoint.

Model choice: BIC on log-space residuals, ``BIC = n ln(SSE / n) + k ln n`` with ``k = 2`` for one
line and ``k = 5`` for two segments (2 + 2 + break); the noise variance, common to both, is not
counted. The lower BIC is preferred.

Break interval: resample the points with replacement (seeded), refit the two-segment model, and take
the ``(1 - confidence) / 2`` percentile of the resampled gaps' lower ends and the
``(1 + confidence) / 2`` percentile of their upper ends; resamples without a valid split are skipped
and counted. The same resampling step and percentiles serve the interval over pre-training seeds
(:mod:`minilm_jax.analysis.seed_frontier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: SPEC A5: the paper's frontier fits ``L = a C^b`` on its FLOPs definition (``flops_paper``).
PAPER_BREAK_FLOPS = 2.2e15


class _PowerLawCurve:
    """``predict(C) = a * C^b`` for a dataclass with fields ``a`` and ``b``."""

    a: float
    b: float

    def predict(self, flops: Any) -> np.ndarray:
        return self.a * np.asarray(flops, dtype=np.float64) ** self.b


@dataclass(frozen=True)
class PaperFit(_PowerLawCurve):
    """One of the paper's published fits, valid for ``low <= C < high``."""

    label: str
    a: float
    b: float
    r2: float
    low: float
    high: float


PAPER_FITS: tuple[PaperFit, ...] = (
    PaperFit("paper, below 2.2e15", a=79.2, b=-0.093, r2=0.68, low=0.0, high=PAPER_BREAK_FLOPS),
    PaperFit("paper, above 2.2e15", a=382.0, b=-0.141, r2=0.99, low=PAPER_BREAK_FLOPS,
             high=float("inf")),
)


@dataclass(frozen=True)
class PowerLaw(_PowerLawCurve):
    """``L = a * C^b`` fitted by least squares in log space over ``n`` points."""

    a: float
    b: float
    r2_log: float
    r2_linear: float
    sse_log: float
    n: int
    flops_min: float
    flops_max: float


@dataclass(frozen=True)
class TwoSegmentFit:
    """Two power laws split between ``break_low`` (last left point) and ``break_high`` (first
    right point); ``break_flops`` is their geometric midpoint."""

    left: PowerLaw
    right: PowerLaw
    break_flops: float
    break_low: float
    break_high: float
    n_left: int
    sse_log: float
    n: int

    def predict(self, flops: Any) -> np.ndarray:
        flops = np.asarray(flops, dtype=np.float64)
        return np.where(flops < self.break_flops, self.left.predict(flops),
                        self.right.predict(flops))


@dataclass(frozen=True)
class BreakInterval:
    """Bootstrap percentile interval of the break location."""

    low: float
    high: float
    confidence: float
    n_resamples: int
    n_valid: int
    seed: int


@dataclass(frozen=True)
class FitComparison:
    """One line vs two segments on the same points, by BIC (lower is preferred)."""

    single: PowerLaw
    two: TwoSegmentFit | None
    bic_single: float
    bic_two: float | None
    interval: BreakInterval | None

    @property
    def prefers_two(self) -> bool:
        return self.bic_two is not None and self.bic_two < self.bic_single


def log_xy(flops: Any, loss: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(ln C, ln L)`` as flat float arrays; ValueError unless both are finite and positive."""
    c = np.asarray(flops, dtype=np.float64).reshape(-1)
    y = np.asarray(loss, dtype=np.float64).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"{c.size} FLOPs values but {y.size} losses")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(y)) and np.all(c > 0) and np.all(y > 0)):
        raise ValueError("FLOPs and losses must be finite and positive")
    return np.log(c), np.log(y)


def fit_power_law(flops: Any, loss: Any) -> PowerLaw:
    """Least-squares line through ``(ln C, ln L)``; needs two distinct FLOPs values."""
    x, y = log_xy(flops, loss)
    if np.unique(x).size < 2:
        raise ValueError("a power-law fit needs at least two distinct FLOPs values")
    b, ln_a = np.polyfit(x, y, 1)
    residual = y - (ln_a + b * x)
    sse = float(residual @ residual)
    a = float(np.exp(ln_a))
    loss_values = np.exp(y)
    linear_residual = loss_values - a * np.exp(x) ** b
    return PowerLaw(a=a, b=float(b), r2_log=_r2(sse, y), r2_linear=_r2(
        float(linear_residual @ linear_residual), loss_values), sse_log=sse, n=int(x.size),
        flops_min=float(np.exp(x.min())), flops_max=float(np.exp(x.max())))


def _r2(sse: float, values: np.ndarray) -> float:
    total = float(np.sum((values - values.mean()) ** 2))
    return 1.0 - sse / total if total > 0 else float("nan")


def bic(sse: float, n: int, k: int) -> float:
    """``n ln(SSE / n) + k ln n`` (SSE floored at 1e-300 so a perfect fit stays finite)."""
    return float(n * np.log(max(sse, 1e-300) / n) + k * np.log(n))


def _split_errors(x: np.ndarray, y: np.ndarray, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``x``: candidate split sizes ``i`` (left = first ``i`` points) and the total
    log-space SSE of the two separate line fits, from prefix sums."""
    n = x.size
    xc, yc = x - x.mean(), y - y.mean()
    zeros = np.zeros(1)
    sums = [np.concatenate([zeros, np.cumsum(v)]) for v in (np.ones(n), xc, yc, xc * xc, xc * yc,
                                                             yc * yc)]
    distinct = np.concatenate([[0], np.cumsum(np.r_[True, x[1:] != x[:-1]])])
    i = np.arange(1, n)
    valid = ((x[i - 1] < x[i]) & (distinct[i] >= min_points)
             & (distinct[n] - distinct[i] >= min_points))
    i = i[valid]
    left = [s[i] for s in sums]
    right = [s[n] - s[i] for s in sums]
    return i, _segment_sse(*left) + _segment_sse(*right)


def _segment_sse(m: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, sxy: np.ndarray,
                 syy: np.ndarray) -> np.ndarray:
    vxx = sxx - sx * sx / m
    vxy = sxy - sx * sy / m
    vyy = syy - sy * sy / m
    return np.maximum(vyy - vxy * vxy / vxx, 0.0)


def fit_two_segments(flops: Any, loss: Any, min_points: int = 3) -> TwoSegmentFit | None:
    """Best two-segment fit, or None when no split leaves ``min_points`` distinct FLOPs values on
    each side."""
    x, y = log_xy(flops, loss)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    i = _best_split(x, y, min_points)
    if i is None:
        return None
    c = np.exp(x)
    left = fit_power_law(c[:i], np.exp(y[:i]))
    right = fit_power_law(c[i:], np.exp(y[i:]))
    return TwoSegmentFit(left=left, right=right, break_flops=float(np.sqrt(c[i - 1] * c[i])),
                         break_low=float(c[i - 1]), break_high=float(c[i]), n_left=i,
                         sse_log=left.sse_log + right.sse_log, n=int(x.size))


def _best_split(x: np.ndarray, y: np.ndarray, min_points: int) -> int | None:
    """For log points sorted by ``x``: the size of the left segment of the least-SSE split, or
    None when no split leaves ``min_points`` distinct FLOPs values on each side."""
    splits, errors = _split_errors(x, y, max(min_points, 2))
    return int(splits[np.argmin(errors)]) if splits.size else None


def resampled_break_bounds(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                           min_points: int) -> tuple[float, float] | None:
    """Resample the log points ``(x, y)`` with replacement and return the log FLOPs of the last
    point below and the first point above the best break (None: no valid split)."""
    pick = rng.integers(0, x.size, size=x.size)
    order = np.argsort(x[pick], kind="stable")
    xs, ys = x[pick][order], y[pick][order]
    i = _best_split(xs, ys, min_points)
    return None if i is None else (float(xs[i - 1]), float(xs[i]))


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``0 < confidence < 1``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def percentile_interval(bounds: list[tuple[float, float]], confidence: float, n_resamples: int,
                        seed: int) -> BreakInterval:
    """The ``(1 - confidence) / 2`` percentile of the resampled gaps' lower log ends and the
    ``(1 + confidence) / 2`` percentile of their upper ends, in FLOPs (NaN when none is valid)."""
    if not bounds:
        return BreakInterval(float("nan"), float("nan"), confidence, n_resamples, 0, seed)
    lows, highs = zip(*bounds)
    alpha = (1.0 - confidence) / 2.0
    return BreakInterval(low=float(np.exp(np.quantile(lows, alpha))),
                         high=float(np.exp(np.quantile(highs, 1.0 - alpha))),
                         confidence=confidence, n_resamples=n_resamples, n_valid=len(bounds),
                         seed=seed)


def bootstrap_break(flops: Any, loss: Any, min_points: int = 3, n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> BreakInterval:
    """Percentile interval of the break location over seeded resamples (see module docstring)."""
    check_confidence(confidence)
    x, y = log_xy(flops, loss)
    rng = np.random.default_rng(seed)
    draws = (resampled_break_bounds(x, y, rng, min_points) for _ in range(n_resamples))
    return percentile_interval([b for b in draws if b is not None], confidence, n_resamples, seed)


def compare_fits(flops: Any, loss: Any, min_points: int = 3, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> FitComparison:
    """One line and the best two-segment fit with their BICs and the break's bootstrap interval
    (no interval when ``n_resamples`` is 0 or no two-segment fit exists)."""
    single = fit_power_law(flops, loss)
    two = fit_two_segments(flops, loss, min_points)
    interval = None
    if two is not None and n_resamples > 0:
        interval = bootstrap_break(flops, loss, min_points, n_resamples, confidence, seed)
    return FitComparison(
        single=single, two=two, bic_single=bic(single.sse_log, single.n, 2),
        bic_two=bic(two.sse_log, two.n, 5) if two is not None else None, interval=interval)
