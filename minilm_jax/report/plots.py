"""The report's matplotlib figures: loss vs FLOPs with fits and baselines, ICER, downstream scores
with their intervals and baselines, and the shared helpers (Agg canvas, collision-free point
labels). Each ``plot_*`` writes its PNG and returns the :class:`~matplotlib.figure.Figure` (None
when there is nothing to draw) so tests can inspect what was drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.analysis.downstream import CheckpointCorrelation, GapRow, final_gap_rows
from minilm_jax.analysis.fits import PAPER_FITS, FitComparison
from minilm_jax.analysis.icer import FactorSummary, IcerStep
from minilm_jax.analysis.results import baselines, flops_field, validation_curves
from minilm_jax.analysis.stats import MeanSD, format_p
from minilm_jax.deferred_import import Deferred

from .analyses import Analyses, CurveAnalysis
from .fmt import sci

stats = Deferred("scipy.stats")  # imported at first use, not with the commands

# Reference lines of the loss-vs-FLOPs plot: every kind has its own colour and line style.
LINE_STYLES: dict[str, dict[str, Any]] = {
    "single": {"color": "black", "ls": "-", "lw": 1.2},
    "left": {"color": "tab:blue", "ls": "-", "lw": 2.0},
    "right": {"color": "tab:green", "ls": "-", "lw": 2.0},
    "break": {"color": "tab:purple", "ls": "-.", "lw": 1.4},
    "unigram": {"color": "tab:brown", "ls": ":", "lw": 1.8},
    "bigram": {"color": "tab:gray", "ls": "--", "lw": 1.4},
}
# Downstream panels: the series and the reference levels.
INIT_STYLES = {"pretrained": ("pre-trained", "tab:blue", "o", -0.15),
               "random": ("random init", "tab:orange", "s", 0.15)}
MAJORITY_STYLE: dict[str, Any] = {"color": "black", "ls": "--", "lw": 1.0}
CHANCE_STYLE: dict[str, Any] = {"color": "tab:red", "ls": ":", "lw": 1.2}
CORRELATION_METRICS = {"mcc", "pearson", "spearman"}  # chance level 0
ACCURACY_METRICS = {"accuracy", "accuracy_m", "accuracy_mm"}  # chance 100 / classes


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, path: Path, layout: bool = True) -> None:
    if layout:
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


# ---------------------------------------------------------------------------------------------
# loss vs FLOPs, ICER


def plot_loss_vs_flops(analyses: Analyses, curve: CurveAnalysis, path: Path) -> Any:
    """Every run's validation curve, the frontier, the fits, the break interval, the paper fits
    and the unigram / bigram baselines (each reference line in its own style)."""
    fig, axes = _figure(10.0, 5.0)
    ax = axes[0, 0]
    key = flops_field(curve.definition)
    for points in validation_curves(curve.points).values():
        ax.plot([p[key] for p in points], [p["loss"] for p in points], color="0.55", alpha=0.35,
                lw=0.8, marker=".", ms=2)
    ax.plot([], [], color="0.55", alpha=0.5, label=f"runs ({len(analyses.runs)})")
    ax.scatter(curve.frontier.flops, curve.frontier.loss, color="tab:red", s=22, zorder=4,
               label=f"frontier ({len(curve.frontier)} points)")
    if curve.comparison is not None:
        _draw_fits(ax, curve.comparison)
    if curve.definition == "paper":
        _draw_paper_fits(ax, curve)
    for (name, split), ppl in sorted(baselines(analyses.rows).items()):
        if split == "validation":
            style = LINE_STYLES.get(name, {"color": "tab:olive", "ls": (0, (1, 3)), "lw": 1.2})
            ax.axhline(math.log(ppl), **style, label=f"{name} baseline: {math.log(ppl):.2f} "
                                                     f"nats (validation ppl {ppl:.0f})")
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel(f"cumulative training FLOPs ({curve.definition} definition, log scale)")
    ax.set_ylabel("validation loss (nats, log scale)")
    ax.set_title(f"Validation loss vs compute, FLOPs: {curve.definition}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return fig


def _draw_fits(ax: Any, comparison: FitComparison) -> None:
    single = comparison.single
    grid = np.geomspace(single.flops_min, single.flops_max, 100)
    ax.plot(grid, single.predict(grid), **LINE_STYLES["single"],
            label=f"one power law: L = {single.a:.3g}·C^{single.b:.3f}")
    two = comparison.two
    if two is None:
        return
    for side, part in (("left", two.left), ("right", two.right)):
        grid = np.geomspace(part.flops_min, part.flops_max, 60)
        where = "below" if side == "left" else "above"
        ax.plot(grid, part.predict(grid), **LINE_STYLES[side],
                label=f"two-segment fit, {where} break: L = {part.a:.3g}·C^{part.b:.3f}")
    ax.axvline(two.break_flops, **LINE_STYLES["break"],
               label=f"break of the two-segment fit ≈ {sci(two.break_flops)} FLOPs")
    interval = comparison.interval
    if interval is not None and interval.n_valid > 0:
        ax.axvspan(interval.low, interval.high, color=LINE_STYLES["break"]["color"], alpha=0.12,
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


def plot_icer(factors: Sequence[FactorSummary], steps: Sequence[IcerStep], path: Path) -> Any:
    """Each helpful step's ICER (dots) and each factor's median (diamond), best factor on top."""
    fig, axes = _figure(8.0, 1.8 + 0.45 * max(len(factors), 1))
    ax = axes[0, 0]
    helpful = [s.icer for s in steps if s.status != "dominated"]
    for i, f in enumerate(factors):
        mine = [s.icer for s in steps if s.base == f.base and s.factor == f.factor
                and s.status != "dominated"]
        ax.scatter(mine, [i] * len(mine), color="0.4", s=16, zorder=3,
                   label="helpful step" if i == 0 else None)
        if math.isfinite(f.median_icer):
            ax.scatter([f.median_icer], [i], color="tab:blue", marker="D", s=50, zorder=4,
                       label="median over helpful steps" if i == 0 else None)
    ax.set_yticks(np.arange(len(factors)))
    ax.set_yticklabels([f"{f.factor}\n(base {f.base}; {f.n_helped} of {f.n_steps} steps helped)"
                        for f in factors], fontsize=8)
    ax.set_ylim(len(factors) - 0.5, -0.5)
    log = bool(helpful) and min(helpful) > 0
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("ICER: extra training FLOPs per point of validation perplexity gained"
                  f"{' (log scale)' if log else ''}\n(lower = more cost-effective)", fontsize=8)
    ax.set_title("Cost-effectiveness of growing one factor at a time", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# downstream


def t_bounds(summary: MeanSD | None, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t interval of the mean of ``summary`` (NaN bounds with fewer than 2 values);
    all NaN for no summary."""
    if summary is None or summary.n == 0:
        return math.nan, math.nan, math.nan
    if summary.n < 2:
        return summary.mean, math.nan, math.nan
    t = float(stats.t.ppf(0.5 + confidence / 2, summary.n - 1))
    half = t * summary.sd / math.sqrt(summary.n)
    return summary.mean, summary.mean - half, summary.mean + half


def chance_level(task: str) -> float | None:
    """Expected score ×100 of guessing uniformly at random on a GLUE task: 0 for correlation
    metrics (MCC, Pearson, Spearman), 100 / classes for accuracy; None when unknown (other
    tasks, F1)."""
    from minilm_jax.tasks.glue import GLUE_ALIASES, GLUE_TASKS  # noqa: PLC0415

    key = GLUE_ALIASES.get(task.lower(), task.lower())
    spec = GLUE_TASKS.get(key)
    if spec is None:
        return None
    metrics = set(spec.metric_names)
    if metrics <= CORRELATION_METRICS:
        return 0.0
    if metrics <= ACCURACY_METRICS and spec.num_labels >= 2:
        return 100.0 / spec.num_labels
    return None


def _metric_name(task: str) -> str:
    from minilm_jax.tasks.glue import GLUE_ALIASES, GLUE_TASKS  # noqa: PLC0415

    spec = GLUE_TASKS.get(GLUE_ALIASES.get(task.lower(), task.lower()))
    if spec is None:
        return "official metric"
    names = spec.metric_names
    return names[0] if len(names) == 1 else "mean of " + ", ".join(names)


def _seed_counts(rows: Sequence[GapRow]) -> str:
    counts = sorted({s.n for g in rows for s in (g.pretrained, g.random) if s is not None})
    if not counts:
        return "0"
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"


def _draw_level(ax: Any, rows: Sequence[GapRow], x: np.ndarray, task: str) -> str | None:
    """The task's majority-class line (per run where runs differ), else its chance line; the
    name of what was drawn."""
    levels = [(i, g.majority) for i, g in zip(x, rows) if g.majority is not None]
    if levels:
        distinct = {round(v, 6) for _, v in levels}
        if len(distinct) == 1:
            value = levels[0][1]
            ax.axhline(value, **MAJORITY_STYLE, label="majority class", gid="majority")
        else:
            ax.hlines([v for _, v in levels], [i - 0.4 for i, _ in levels],
                      [i + 0.4 for i, _ in levels], colors=MAJORITY_STYLE["color"],
                      linestyles=MAJORITY_STYLE["ls"], linewidths=MAJORITY_STYLE["lw"],
                      label="majority class", gid="majority")
            value = max(v for _, v in levels)
        low = min(v for _, v in levels)
        text = f"{low:.1f}–{value:.1f}" if len(distinct) > 1 else f"{value:.1f}"
        ax.annotate(f"majority {text}", (1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom",
                    fontsize=7)
        return "majority"
    chance = chance_level(task)
    if chance is None:
        return None
    ax.axhline(chance, **CHANCE_STYLE, label="chance", gid="chance")
    ax.annotate(f"chance {chance:.1f}", (1.0, chance), xycoords=("axes fraction", "data"),
                xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7)
    return "chance"


def plot_downstream(gaps: Sequence[GapRow], path: Path, confidence: float = 0.95) -> Any:
    """Per task, at each run's last fine-tuned checkpoint: the pre-trained and random-init score
    (mean over fine-tuning seeds with its t interval, as in the gap table) and the task's
    majority-class level (chance where unknown). None (no file) without pre-trained rows."""
    finals = final_gap_rows(list(gaps))
    if not finals:
        return None
    tasks = sorted({g.task for g in finals})
    runs = sorted({g.run for g in finals})
    ncols = 2 if len(tasks) > 1 and len(runs) <= 10 else 1
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = _figure(min(max(6.0, 0.55 * len(runs) + 2.5), 16.0) * ncols,
                        1.2 + (2.2 + 0.06 * max(len(r) for r in runs)) * nrows, nrows, ncols)
    pct = round(100 * confidence)
    handles: dict[str, Any] = {}
    for k, task in enumerate(tasks):
        ax = axes[k // ncols, k % ncols]
        mine = sorted((g for g in finals if g.task == task), key=lambda g: runs.index(g.run))
        x = np.asarray([runs.index(g.run) for g in mine], dtype=float)
        for init, (name, color, marker, offset) in INIT_STYLES.items():
            summaries = [g.pretrained if init == "pretrained" else g.random for g in mine]
            bounds = np.asarray([t_bounds(s, confidence) for s in summaries]).reshape(-1, 3)
            if np.isnan(bounds[:, 0]).all():
                continue
            mean, low, high = bounds.T
            container = ax.errorbar(x + offset, mean, yerr=[mean - low, high - mean], fmt=marker,
                                    color=color, ms=5, capsize=3, lw=1.2, label=name)
            handles.setdefault(name, container)
        drawn = _draw_level(ax, mine, x, task)
        if drawn is not None:
            handles.setdefault(drawn, next(a for a in (*ax.lines, *ax.collections)
                                           if a.get_gid() == drawn))
        ax.set_title(task, fontsize=9)
        ax.set_xticks(np.arange(len(runs)))
        ax.set_xticklabels(runs, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(runs) - 0.4)
        ax.set_ylabel(f"score ×100 ({_metric_name(task)})", fontsize=8)
    for k in range(len(tasks), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    labels = {"pre-trained": "pre-trained", "random init": "random init",
              "majority": "majority class (always the most frequent training label)",
              "chance": "chance (uniform random guess)"}
    fig.legend(list(handles.values()), [labels[h] for h in handles], loc="lower center",
               fontsize=8, ncols=min(len(handles), 4), bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Downstream score at each run's last checkpoint: pre-trained vs random init\n"
                 f"markers: mean over {_seed_counts(finals)} fine-tuning seeds; "
                 f"bars: {pct}% t interval over those seeds", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.45 / fig.get_figheight(), 1.0, 1.0))  # room for the legend
    _save(fig, path, layout=False)
    return fig


# ---------------------------------------------------------------------------------------------
# labels that do not overlap


def place_labels(ax: Any, xy: Sequence[tuple[float, float]], labels: Sequence[str],
                 fontsize: float = 7, marker_px: float = 4.0, avoid: Sequence[Any] = ()
                 ) -> tuple[list[Any], list[str]]:
    """Annotate each data point with its label at the first of several offsets whose text box
    stays inside the axes and overlaps neither a placed label, a point's marker (a ``marker_px``
    square) nor an artist of ``avoid``. Call once the layout is final. Returns the placed texts
    and the labels that fit nowhere (left out)."""
    from matplotlib.text import Text  # noqa: PLC0415
    from matplotlib.transforms import Bbox  # noqa: PLC0415

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(np.asarray(xy, dtype=float).reshape(-1, 2))
    markers = [Bbox.from_bounds(px - marker_px, py - marker_px, 2 * marker_px, 2 * marker_px)
               for px, py in pixels] + [a.get_window_extent(renderer) for a in avoid]
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    offsets = [(dx * r, dy * r) for r in (4, 10, 18) for dx, dy in directions]
    placed: list[Any] = []
    boxes: list[Any] = []
    left_out: list[str] = []
    for point, label in zip(xy, labels):
        for dx, dy in offsets:
            text = ax.annotate(label, point, xytext=(dx, dy), textcoords="offset points",
                               fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0
                               else "center", va="bottom" if dy > 0 else "top" if dy < 0
                               else "center")
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)  # the text alone, not a leader line
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(other) for other in (*boxes, *markers)):
                placed.append(text)
                boxes.append(box)
                if max(abs(dx), abs(dy)) > offsets[0][0]:  # far from its point: a leader line
                    ax.annotate("", point, xytext=(dx, dy), textcoords="offset points",
                                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.55",
                                            "shrinkA": 0, "shrinkB": 2}, gid="leader")
                break
            text.remove()
        else:
            left_out.append(label)
    return placed, left_out


# ---------------------------------------------------------------------------------------------
# perplexity vs downstream


def plot_perplexity_vs_downstream(correlation: CheckpointCorrelation, path: Path) -> Any:
    """One point per checkpoint (validation perplexity vs mean pre-trained score), the least
    squares line, Pearson r with its Fisher-z interval in the title and legend, and the
    checkpoint names placed without overlap. None (no file) when r is undefined."""
    c = correlation
    r = c.result
    if r is None or not r.defined:
        return None
    x = np.asarray([p.perplexity for p in c.points], dtype=float)
    y = np.asarray([p.score for p in c.points], dtype=float)
    fig, axes = _figure(7.0, 5.0)
    ax = axes[0, 0]
    pct = round(100 * r.confidence)
    ax.scatter(x, y, s=25, zorder=3, color="tab:blue", label=f"checkpoint (n = {r.n})")
    slope, intercept = np.polyfit(x, y, 1)
    grid = np.linspace(x.min(), x.max(), 50)
    ax.plot(grid, intercept + slope * grid, color="tab:red", lw=1.2,
            label=f"least squares (slope {slope:.3g} points per ppl)")
    ax.plot([], [], ls="none", label=f"Pearson r = {r.r:.3f}, {pct}% Fisher-z CI "
                                     f"[{r.low:.3f}, {r.high:.3f}], permutation p = "
                                     f"{format_p(r.p_permutation)}")
    ax.margins(x=0.12, y=0.15)
    ax.set_xlabel("validation perplexity of the pre-trained checkpoint (lower is better)")
    tasks = ", ".join(c.tasks)
    ax.set_ylabel(f"mean pre-trained score ×100 over {len(c.tasks)} task(s)\n({tasks})",
                  fontsize=9)
    ax.set_title(f"Perplexity vs downstream score: r = {r.r:.3f} "
                 f"[{r.low:.3f}, {r.high:.3f}] ({pct}% CI, n = {r.n})", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=1,
              frameon=False)
    note = ax.text(0.99, 0.01, "", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                   color="0.4")
    fig.tight_layout()
    note.set_text("labels of crowded points left out: see the table")  # room kept for the note
    _, left_out = place_labels(ax, list(zip(x, y)), [p.label for p in c.points], avoid=[note])
    note.set_text(f"{len(left_out)} crowded label(s) left out: see the table" if left_out else "")
    _save(fig, path, layout=False)
    return fig
