"""Correlation between pre-training perplexity and downstream score across checkpoints.

Bootstrap: resample (x, y) pairs with replacement ``n_resamples`` times (seeded),
compute the statistic on each resample, and report the percentile interval.
Resamples in which one side is constant (correlation undefined) are dropped and
counted in ``n_valid``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.storage import atomic_write_bytes, run_path

from .metrics import average_ranks, pearson_rows


@dataclass(frozen=True)
class Correlation:
    """One coefficient with its bootstrap percentile interval."""

    value: float
    low: float
    high: float
    n_valid: int


@dataclass(frozen=True)
class CorrelationResult:
    """Pearson and Spearman of ``n`` points with ``confidence`` bootstrap intervals."""

    n: int
    pearson: Correlation
    spearman: Correlation
    confidence: float
    n_resamples: int
    seed: int


def _check(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} points but y has {y.size}")
    if x.size < 3:
        raise ValueError("need at least 3 points to correlate")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


def _interval(point: float, samples: np.ndarray, confidence: float) -> Correlation:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return Correlation(point, float("nan"), float("nan"), 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Correlation(point, float(low), float(high), int(samples.size))


def correlate(x: Any, y: Any, n_resamples: int = 10_000, confidence: float = 0.95,
              seed: int = 0, chunk: int = 2_000) -> CorrelationResult:
    """Pearson and Spearman of ``y`` against ``x`` with seeded bootstrap intervals."""
    x, y = _check(x, y)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("correlation is undefined: x or y is constant")
    pear = float(pearson_rows(x, y))
    spear = float(pearson_rows(average_ranks(x), average_ranks(y)))
    rng = np.random.default_rng(seed)
    p_samples, s_samples = [], []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, x.size, size=(min(chunk, n_resamples - start), x.size))
        xs, ys = x[idx], y[idx]
        p_samples.append(pearson_rows(xs, ys))
        s_samples.append(pearson_rows(average_ranks(xs), average_ranks(ys)))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return CorrelationResult(x.size, _interval(pear, cat(p_samples), confidence),
                             _interval(spear, cat(s_samples), confidence), confidence,
                             n_resamples, seed)


def plot_correlation(x: Any, y: Any, path: str | Path, result: CorrelationResult | None = None,
                     xlabel: str = "pre-training perplexity", ylabel: str = "downstream score",
                     title: str | None = None, log_x: bool = False,
                     point_labels: list[str] | None = None) -> Path:
    """Scatter plot with a least-squares fit line; coefficients and intervals in the legend.

    Uses matplotlib's Agg canvas directly (no global backend change). With
    ``log_x`` the x axis is logarithmic and the line is fitted to ``log(x)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    x, y = _check(x, y)
    if result is None:
        result = correlate(x, y)
    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pct = round(100 * result.confidence)
    p, s = result.pearson, result.spearman
    ax.scatter(x, y, color="tab:blue", zorder=3,
               label=f"Pearson r = {p.value:.3f} [{p.low:.3f}, {p.high:.3f}]\n"
                     f"Spearman ρ = {s.value:.3f} [{s.low:.3f}, {s.high:.3f}]\n"
                     f"({pct}% bootstrap CI, n = {result.n})")
    u = np.log(x) if log_x else x
    slope, intercept = np.polyfit(u, y, 1)
    grid_u = np.linspace(u.min(), u.max(), 100)
    grid_x = np.exp(grid_u) if log_x else grid_u
    fit_label = (f"fit: y = {intercept:.3g} + {slope:.3g}·ln x" if log_x
                 else f"fit: y = {intercept:.3g} + {slope:.3g}·x")
    ax.plot(grid_x, intercept + slope * grid_u, color="tab:red", label=fit_label)
    if log_x:
        ax.set_xscale("log")
    for xi, yi, text in zip(x, y, point_labels or []):
        ax.annotate(text, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())  # a local folder or gs://
    return run_path(str(path))
