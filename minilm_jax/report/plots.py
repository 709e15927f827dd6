"""The report's matplotlib figures (loss vs FLOPs with fits, ICER, downstream scores)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.analysis.fits import PAPER_FITS, FitComparison
from minilm_jax.analysis.icer import FactorSummary, IcerStep
from minilm_jax.analysis.results import TaskScore, baselines, flops_field, validation_curves

from .analyses import Analyses, CurveAnalysis
from .fmt import sci


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


def plot_loss_vs_flops(analyses: Analyses, curve: CurveAnalysis, path: Path) -> None:
    """Every run's validation curve, the frontier, the fits, the break interval, the paper fits."""
    fig, axes = _figure(10.0, 5.0)
    ax = axes[0, 0]
    key = flops_field(curve.definition)
    for points in validation_curves(curve.points).values():
        ax.plot([p[key] for p in points], [p["loss"] for p in points], color="0.55", alpha=0.35,
                lw=0.8, marker=".", ms=2)
    ax.plot([], [], color="0.55", alpha=0.5, label=f"runs ({len(analyses.runs)})")
    ax.scatter(curve.frontier.flops, curve.frontier.loss, color="tab:red", s=22, zorder=4,
               label=f"frontier ({len(curve.frontier)} points)")
    comparison = curve.comparison
    if comparison is not None:
        _draw_fits(ax, comparison)
    if curve.definition == "paper":
        _draw_paper_fits(ax, curve)
    for (name, split), ppl in sorted(baselines(analyses.rows).items()):
        if split == "validation":
            ax.axhline(math.log(ppl), ls=":", lw=1.0, color="tab:green" if name == "unigram"
                       else "tab:purple", label=f"{name} baseline (validation ppl {ppl:.0f})")
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel(f"cumulative training FLOPs ({curve.definition} definition)")
    ax.set_ylabel("validation loss (nats, log scale)")
    ax.set_title(f"Validation loss vs compute, FLOPs: {curve.definition}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def _draw_fits(ax: Any, comparison: FitComparison) -> None:
    single = comparison.single
    grid = np.geomspace(single.flops_min, single.flops_max, 100)
    ax.plot(grid, single.predict(grid), color="black", lw=1.2,
            label=f"one line: L = {single.a:.3g}·C^{single.b:.3f}")
    two = comparison.two
    if two is None:
        return
    for part, color in ((two.left, "tab:blue"), (two.right, "tab:green")):
        grid = np.geomspace(part.flops_min, part.flops_max, 60)
        ax.plot(grid, part.predict(grid), color=color, lw=1.8,
                label=f"segment: L = {part.a:.3g}·C^{part.b:.3f}")
    ax.axvline(two.break_flops, color="tab:purple", lw=1, ls=":",
               label=f"break ≈ {sci(two.break_flops)}")
    interval = comparison.interval
    if interval is not None and interval.n_valid > 0:
        ax.axvspan(interval.low, interval.high, color="tab:purple", alpha=0.12,
                   label=f"break {round(100 * interval.confidence)}% bootstrap interval")


def _draw_paper_fits(ax: Any, curve: CurveAnalysis) -> None:
    if len(curve.frontier) == 0:
        return
    low, high = float(curve.frontier.flops.min()), float(curve.frontier.flops.max())
    for fit, color in zip(PAPER_FITS, ("tab:cyan", "tab:olive")):
        start, stop = max(low, fit.low), min(high, fit.high)
        if start >= stop:
            continue
        grid = np.geomspace(start, stop, 60)
        ax.plot(grid, fit.predict(grid), color=color, ls="--", lw=1.2,
                label=f"{fit.label}: {fit.a:g}·C^{fit.b:g}")


def plot_icer(factors: Sequence[FactorSummary], steps: Sequence[IcerStep], path: Path) -> None:
    """Each helpful step's ICER (dots) and each factor's median (diamond), best factor on top."""
    fig, axes = _figure(8.0, 1.4 + 0.45 * max(len(factors), 1))
    ax = axes[0, 0]
    helpful = [s.icer for s in steps if s.status != "dominated"]
    for i, f in enumerate(factors):
        mine = [s.icer for s in steps if s.base == f.base and s.factor == f.factor
                and s.status != "dominated"]
        ax.scatter(mine, [i] * len(mine), color="0.4", s=16, zorder=3,
                   label="helpful step" if i == 0 else None)
        if math.isfinite(f.median_icer):
            ax.scatter([f.median_icer], [i], color="tab:blue", marker="D", s=50, zorder=4,
                       label="median" if i == 0 else None)
    ax.set_yticks(np.arange(len(factors)))
    ax.set_yticklabels([f"{f.factor}\n(base {f.base}; {f.n_helped} of {f.n_steps} steps helped)"
                        for f in factors], fontsize=8)
    ax.set_ylim(len(factors) - 0.5, -0.5)
    if helpful and min(helpful) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("ICER: extra training FLOPs per point of validation perplexity gained\n"
                  "(lower = more cost-effective)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_downstream(scores: Mapping[tuple[str, str, str], TaskScore], path: Path) -> None:
    """Per task: each run's pre-trained and random-init score side by side."""
    tasks = sorted({t for (_, t, _) in scores})
    runs = sorted({r for (r, _, _) in scores})
    ncols = 2 if len(tasks) > 1 else 1
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = _figure(6.0 * ncols, 0.6 + (1.2 + 0.25 * len(runs)) * nrows, nrows, ncols)
    x = np.arange(len(runs))
    for k, task in enumerate(tasks):
        ax = axes[k // ncols, k % ncols]
        for offset, init, color in ((-0.2, "pretrained", "tab:blue"), (0.2, "random", "tab:gray")):
            values = [scores[(r, task, init)].score if (r, task, init) in scores else np.nan
                      for r in runs]
            ax.bar(x + offset, values, width=0.4, color=color, label=init if k == 0 else None)
        ax.set_title(task, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(runs, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("score", fontsize=8)
        ax.axhline(0, color="black", lw=0.5)
    for k in range(len(tasks), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    fig.legend(loc="upper right", fontsize=8, ncols=2)
    fig.suptitle("Downstream score: pre-trained vs random initialisation", fontsize=10, x=0.3)
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Markdown sections
