"""Write the scaling-study report: Markdown with tables and PNG plots, from a sweep's results table.

    python -m minilm_jax.report --results=PATH/results.jsonl --out=DIR [--bins_per_decade=11]
        [--bootstrap=1000] [--flops=paper|complete] [--seed=0] [--min_points=3] [--confidence=0.95]

DIR receives ``report.md`` and its plots. The report is built in a temporary sibling directory
and swapped in whole, so a failed run leaves an earlier report untouched. An existing DIR is only
replaced when it holds nothing but a report (``report.md`` and ``*.png``).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from minilm_jax.analysis.depth import DepthGroup, depth_analysis
from minilm_jax.analysis.fits import PAPER_BREAK_FLOPS, PAPER_FITS, FitComparison, compare_fits
from minilm_jax.analysis.frontier import Frontier, compute_frontier
from minilm_jax.analysis.icer import FactorSummary, IcerStep, icer_analysis
from minilm_jax.analysis.results import (FLOPS_DEFINITIONS, ResultsError, RunSummary, TaskScore,
                                         baselines, downstream_scores, flops_field, load_results,
                                         rows_of_kind, summarize_runs, validation_curves)
from minilm_jax.cli import run_main
from minilm_jax.errors import UserError
from minilm_jax.report_downstream import (CORRELATION_PLOT, DownstreamAnalysis, analyse_downstream,
                                          plot_correlation, section_correlation, section_gaps)
from minilm_jax.report_downstream import summary_lines as downstream_summary_lines

REPORT_NAME = "report.md"
LOSS_PLOT = "loss_vs_flops_{}.png"
ICER_PLOT = "icer.png"
DOWNSTREAM_PLOT = "downstream.png"


def define_flags() -> None:
    """Define the command's flags (at entry, not import, so importing this module in a process
    with other absl commands cannot clash)."""
    flags.DEFINE_string("results", None, "the sweep's results.jsonl")
    flags.DEFINE_string("out", None, "report directory (report.md and PNG plots)")
    flags.DEFINE_integer("bins_per_decade", 11, "FLOPs bins per decade for the frontier")
    flags.DEFINE_integer("bootstrap", 1000, "resamples for the break interval (0: none)")
    flags.DEFINE_string("flops", "paper", "FLOPs definition for the headline fit, ICER and depth "
                        f"tables: {' or '.join(FLOPS_DEFINITIONS)}")
    flags.DEFINE_integer("seed", 0, "seed of the bootstrap resamples")
    flags.DEFINE_integer("min_points", 3, "least frontier points per fit segment")
    flags.DEFINE_float("confidence", 0.95, "level of the bootstrap intervals")


@dataclass(frozen=True)
class ReportOptions:
    """Settings of one report."""

    bins_per_decade: int = 11
    bootstrap: int = 1000
    flops: str = "paper"
    seed: int = 0
    min_points: int = 3
    confidence: float = 0.95

    def check(self) -> None:
        """Raise :class:`UserError` on a setting out of range."""
        if self.bins_per_decade < 1:
            raise UserError(f"--bins_per_decade must be >= 1, got {self.bins_per_decade}")
        if self.bootstrap < 0:
            raise UserError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if self.flops not in FLOPS_DEFINITIONS:
            raise UserError(f"--flops must be one of {', '.join(FLOPS_DEFINITIONS)}, "
                            f"got {self.flops!r}")
        if self.min_points < 2:
            raise UserError(f"--min_points must be >= 2, got {self.min_points}")
        if not 0.0 < self.confidence < 1.0:
            raise UserError(f"--confidence must lie in (0, 1), got {self.confidence}")


# ---------------------------------------------------------------------------------------------
# formatting


def _sci(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.2e}".replace("e+", "e").replace("e0", "e").replace("e-0", "e-")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _code(text: Any) -> str:
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _cell(value)


# ---------------------------------------------------------------------------------------------
# analyses


@dataclass
class CurveAnalysis:
    """Validation points, frontier and fits for one FLOPs definition."""

    definition: str
    points: list[Mapping[str, Any]]
    frontier: Frontier
    comparison: FitComparison | None = None
    note: str = ""


def analyse_curve(rows: Sequence[Mapping[str, Any]], definition: str, options: ReportOptions
                  ) -> CurveAnalysis:
    """Frontier of all validation points and the one-line / two-segment fits on it."""
    key = flops_field(definition)
    points = [r for r in rows_of_kind(rows, "validation")
              if math.isfinite(r[key]) and r[key] > 0
              and math.isfinite(r["loss"]) and r["loss"] > 0]
    frontier = compute_frontier([r[key] for r in points], [r["loss"] for r in points],
                                options.bins_per_decade)
    result = CurveAnalysis(definition, points, frontier)
    n_distinct = np.unique(frontier.flops).size
    if n_distinct < 2:
        result.note = (f"The frontier has {len(frontier)} point(s): at least 2 are needed for a "
                       "power-law fit, so no fit is shown.")
        return result
    result.comparison = compare_fits(frontier.flops, frontier.loss, options.min_points,
                                     options.bootstrap, options.confidence, options.seed)
    if result.comparison.two is None:
        result.note = (f"The frontier has {len(frontier)} points: a break search needs at least "
                       f"{2 * options.min_points} ({options.min_points} per segment), so only the "
                       "single power law is fitted.")
    return result


@dataclass
class Analyses:
    """Everything the report shows."""

    rows: list[dict[str, Any]]
    runs: dict[str, RunSummary]
    runs_by_definition: dict[str, dict[str, RunSummary]]
    curves: dict[str, CurveAnalysis]
    icer_steps: list[IcerStep]
    icer_factors: list[FactorSummary]
    depth: list[DepthGroup]
    scores: dict[tuple[str, str, str], TaskScore]
    test_perplexity: dict[str, float] = field(default_factory=dict)


def analyse(rows: list[dict[str, Any]], options: ReportOptions) -> Analyses:
    """Run every analysis on the loaded rows."""
    by_definition = {d: summarize_runs(rows, d) for d in FLOPS_DEFINITIONS}
    runs = by_definition[options.flops]
    steps, factors = icer_analysis(runs.values())
    scores = downstream_scores(rows)
    tests = {}
    for r in sorted(rows_of_kind(rows, "test"), key=lambda r: r["step"]):
        tests[r["run"]] = float(r["perplexity"])
    return Analyses(rows=rows, runs=runs, runs_by_definition=by_definition,
                    curves={d: analyse_curve(rows, d, options) for d in FLOPS_DEFINITIONS},
                    icer_steps=steps, icer_factors=factors,
                    depth=depth_analysis(runs.values(), scores), scores=scores,
                    test_perplexity=tests)


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas, no global backend change)


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
               label=f"break ≈ {_sci(two.break_flops)}")
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


def _fit_rows(comparison: FitComparison) -> list[list[str]]:
    s = comparison.single
    rows = [["one line", "all frontier points", f"{_sci(s.flops_min)} – {_sci(s.flops_max)}",
             _num(s.a, 4), _num(s.b, 4), _num(s.r2_log), _num(s.r2_linear), str(s.n),
             _num(comparison.bic_single, 2)]]
    two = comparison.two
    if two is not None:
        for name, part in (("below break", two.left), ("above break", two.right)):
            rows.append(["two segments", name, f"{_sci(part.flops_min)} – {_sci(part.flops_max)}",
                         _num(part.a, 4), _num(part.b, 4), _num(part.r2_log), _num(part.r2_linear),
                         str(part.n), f"{_num(comparison.bic_two, 2)} (both segments)"
                         if name == "below break" else "—"])
    return rows


def _paper_rows() -> list[list[str]]:
    return [["paper (SPEC A5)", f"{'below' if f.low == 0 else 'above'} {_sci(PAPER_BREAK_FLOPS)} "
             f"(published R² {f.r2})", "—", f"{f.a:g}", f"{f.b:g}", "—", "—", "—", "—"]
            for f in PAPER_FITS]


def _break_lines(comparison: FitComparison, options: ReportOptions, definition: str
                 ) -> list[str]:
    two = comparison.two
    if two is None:
        return []
    lines = [f"- Break between the frontier points at {_sci(two.break_low)} and "
             f"{_sci(two.break_high)} FLOPs (geometric midpoint {_sci(two.break_flops)}; "
             f"{two.n_left} points below, {two.n - two.n_left} above)."]
    interval = comparison.interval
    if interval is None:
        lines.append("- No bootstrap interval (`--bootstrap=0`).")
    elif interval.n_valid == 0:
        lines.append(f"- Bootstrap: none of {interval.n_resamples} resamples allowed a split with "
                     f"{options.min_points} points per segment, so no interval.")
    else:
        lines.append(f"- {round(100 * interval.confidence)}% bootstrap interval of the break: "
                     f"[{_sci(interval.low)}, {_sci(interval.high)}] FLOPs ({interval.n_valid} of "
                     f"{interval.n_resamples} resamples had a valid split; seed {interval.seed}).")
        if definition == "paper":
            inside = interval.low <= PAPER_BREAK_FLOPS <= interval.high
            lines.append(f"- The paper's break ({_sci(PAPER_BREAK_FLOPS)}) lies "
                         f"{'inside' if inside else 'outside'} this interval.")
    left = float(two.left.predict(two.break_flops))
    right = float(two.right.predict(two.break_flops))
    step = f"a drop of {_num(left - right)}" if left >= right else f"a rise of {_num(right - left)}"
    lines.append(f"- At the break the left segment predicts {_num(left)} nats and the right one "
                 f"{_num(right)}: {step} nats (the paper's frontier drops ~0.3–0.5 nats between 2e15 "
                 "and 3e15).")
    verdict = "two segments" if comparison.prefers_two else "one line"
    gap = abs(comparison.bic_single - comparison.bic_two)
    lines.append(f"- BIC (log-space residuals): one line {_num(comparison.bic_single, 2)}, two "
                 f"segments {_num(comparison.bic_two, 2)}; difference {_num(gap, 2)} → prefers "
                 f"**{verdict}** ({bic_strength(gap)} evidence on Kass & Raftery's scale: <2 weak, "
                 "2–6 positive, 6–10 strong, >10 very strong).")
    return lines


def bic_strength(gap: float) -> str:
    """Kass & Raftery's wording for a BIC difference."""
    return ("weak" if gap < 2 else "positive" if gap < 6 else "strong" if gap < 10
            else "very strong")


def _paper_fit_residual(curve: CurveAnalysis) -> str:
    if curve.definition != "paper" or len(curve.frontier) == 0:
        return ""
    predicted = np.where(curve.frontier.flops < PAPER_BREAK_FLOPS,
                         PAPER_FITS[0].predict(curve.frontier.flops),
                         PAPER_FITS[1].predict(curve.frontier.flops))
    diff = curve.frontier.loss - predicted
    rms = float(np.sqrt(np.mean(diff ** 2)))
    return (f"- Against the paper's two fits, this frontier's loss differs by "
            f"{_num(float(diff.mean()))} nats on average (RMS {_num(rms)}, {diff.size} points).")


def section_curves(analyses: Analyses, options: ReportOptions) -> list[str]:
    """Section 1: loss vs FLOPs, frontier, fits."""
    lines = ["## 1. Validation loss vs training compute", "",
             f"Every validation point of every run ({len(analyses.curves[options.flops].points)} "
             f"points with positive FLOPs and finite loss). Compute-optimal frontier: "
             f"the lowest loss in each FLOPs bin, {options.bins_per_decade} bins per decade with "
             f"edges at 10^(k/{options.bins_per_decade}). Fits: L = a·C^b by least squares on ln L "
             "vs ln C; *R² (log)* is that regression's, *R² (linear)* is of a·C^b against L. Two "
             "segments: a free break between neighbouring frontier points, each side (at least "
             f"{options.min_points} points) its own power law, jumps allowed. BIC = n·ln(SSE/n) + "
             "k·ln n on log-space residuals, k = 2 (one line) or 5 (two segments); the lower BIC is "
             "preferred. The paper's fits (dashed) use the paper's FLOPs definition and are drawn "
             "on that plot only.", ""]
    order = [options.flops] + [d for d in FLOPS_DEFINITIONS if d != options.flops]
    for definition in order:
        curve = analyses.curves[definition]
        plot = LOSS_PLOT.format(definition)
        headline = " (headline)" if definition == options.flops else ""
        lines += [f"### FLOPs: {definition}{headline}", "",
                  f"![validation loss vs {definition} FLOPs]({plot})", ""]
        if curve.note:
            lines += [curve.note, ""]
        if curve.comparison is not None:
            header = ["fit", "segment", "FLOPs range", "a", "b", "R² (log)", "R² (linear)",
                      "points", "BIC"]
            rows = _fit_rows(curve.comparison) + (_paper_rows() if definition == "paper" else [])
            lines += _table(header, rows)
            lines += _break_lines(curve.comparison, options, definition)
            residual = _paper_fit_residual(curve)
            lines += ([residual] if residual else []) + [""]
        lines += _frontier_table(curve)
    return lines


def _frontier_table(curve: CurveAnalysis) -> list[str]:
    if len(curve.frontier) == 0:
        return ["No validation point has positive FLOPs and a finite loss: no frontier.", ""]
    key = flops_field(curve.definition)
    rows = []
    for i, (index, edges) in enumerate(zip(curve.frontier.indices, curve.frontier.edges), start=1):
        p = curve.points[int(index)]
        rows.append([str(i), f"[{_sci(edges[0])}, {_sci(edges[1])})", _sci(p[key]),
                     _num(p["loss"], 4), _code(p["run"]), _code(p["workdir"]), str(p["step"])])
    return ([f"Frontier points ({len(curve.frontier)} of {curve.frontier.n_candidates}):", ""]
            + _table(["#", "bin", "FLOPs", "loss", "run", "workdir", "step"], rows))


def section_icer(analyses: Analyses, options: ReportOptions, plotted: bool) -> list[str]:
    """Section 2: incremental cost-effectiveness per factor."""
    lines = ["## 2. Cost-effectiveness of growing one factor at a time", ""]
    if not analyses.icer_factors:
        return lines + ["No one-factor-at-a-time runs (`group` = `ofat:<factor>`): section skipped.",
                        ""]
    lines += [f"Runs of each factor (its base and its `ofat:` runs) in order of the factor's value; "
              f"each step from a smaller to a larger value: ICER = ΔC / (ppl_prev − ppl_next), with "
              f"C the run's final training FLOPs ({options.flops} definition) and ppl its best "
              "validation perplexity. A step with no gain is *dominated* (ICER ∞); a gain at no "
              "extra cost is *dominant* (ICER ≤ 0). Factors rank by the median ICER of their "
              "helpful steps (lower = more cost-effective).", ""]
    if plotted:
        lines += [f"![ICER per factor]({ICER_PLOT})", ""]
    rows = []
    for rank, f in enumerate(analyses.icer_factors, start=1):
        best = (f"{_value(f.best_step.prev_value)} → {_value(f.best_step.next_value)}"
                if f.best_step else "—")
        rows.append([str(rank), _code(f.base), _code(f.factor), str(f.n_steps), str(f.n_helped),
                     _sci(f.median_icer), best, _cell(f.note) or ""])
    lines += _table(["rank", "base", "factor", "steps", "helpful steps", "median ICER",
                     "best step", "note"], rows)
    step_rows = []
    for s in analyses.icer_steps:
        step_rows.append([_code(s.factor), f"{_value(s.prev_value)} → {_value(s.next_value)}",
                          s.side or "—", _code(s.prev.run), _code(s.prev.workdir), _code(s.next.run),
                          _code(s.next.workdir), _sci(s.delta_flops), _num(s.prev.best_perplexity, 2),
                          _num(s.next.best_perplexity, 2), _num(s.gain, 2), _sci(s.icer), s.status])
    lines += ["Steps:", ""] + _table(
        ["factor", "value", "side", "from run", "from workdir", "to run", "to workdir", "ΔFLOPs",
         "ppl before", "ppl after", "gain", "ICER", "status"], step_rows)
    return lines


def section_depth(analyses: Analyses, options: ReportOptions) -> list[str]:
    """Section 3: iso-FLOP and iso-parameter groups."""
    lines = ["## 3. Depth vs width at equal compute or size", ""]
    if not analyses.depth:
        return lines + ["No iso-FLOP or iso-parameter groups (`group` = `iso_flop:<name>` or "
                        "`iso_param:<name>`): section skipped.", ""]
    lines += [f"FLOPs per step: final training FLOPs ({options.flops}) / last validation step. "
              "Mean downstream: pre-trained score averaged over the tasks every member of the "
              "group was scored on.", ""]
    rows = []
    for g in analyses.depth:
        for m in g.members:
            s = m.summary
            wins = (("ppl", g.perplexity_winner), ("downstream", g.downstream_winner))
            marks = [what for what, run in wins if run == s.run]
            rows.append([_code(g.group), _code(s.run), _code(s.workdir), _code(s.point),
                         _value(s.num_layers), f"{s.params_total:,}", _sci(s.flops_per_step),
                         _num(s.best_perplexity, 2), _num(m.downstream_mean, 2),
                         ", ".join(marks) or ""])
    lines += _table(["group", "run", "workdir", "point", "L", "params", "FLOPs/step",
                     "best val ppl", "mean downstream", "wins on"], rows)
    for g in analyses.depth:
        ppl = _code(g.perplexity_winner) if g.perplexity_winner else "undecided"
        if g.tasks:
            down = (f"{_code(g.downstream_winner) if g.downstream_winner else 'undecided'} "
                    f"(tasks: {', '.join(g.tasks)})")
        else:
            down = "no downstream scores for every member"
        single = " (only one member)" if len(g.members) < 2 else ""
        lines.append(f"- {_code(g.group)}{single}: lowest perplexity {ppl}; best downstream {down}.")
    return lines + [""]


def baseline_lines(analyses: Analyses) -> list[str]:
    """Best validation perplexity next to the shard set's count-based baselines."""
    base = baselines(analyses.rows)
    if not base:
        return []
    uni, bi = base.get(("unigram", "validation")), base.get(("bigram", "validation"))
    lines = [f"- Baselines on the validation split (count-based, from the training split): unigram "
             f"perplexity {_num(uni, 1)}, interpolated left-context bigram {_num(bi, 1)}."]
    for run, s in sorted(analyses.runs.items()):
        if s.best_perplexity is not None and uni:
            lines.append(f"  - {_code(run)}: best validation perplexity {_num(s.best_perplexity, 1)}"
                         f" = {s.best_perplexity / uni:.0%} of the unigram level"
                         f" ({'below' if s.best_perplexity < uni else 'NOT below'} unigram"
                         f"{'' if bi is None else ', below bigram' if s.best_perplexity < bi else ', above bigram'}).")
    return lines


def section_runs(analyses: Analyses) -> list[str]:
    """Appendix: every run."""
    paper = analyses.runs_by_definition["paper"]
    complete = analyses.runs_by_definition["complete"]
    rows = []
    for run, s in sorted(analyses.runs.items()):
        best = "—"
        if s.best_step is not None:
            best = f"{_num(s.best_perplexity, 2)} (step {s.best_step})"
        rows.append([_code(run), _code(s.workdir), _code(s.point), _code(s.group or "—"),
                     _value(s.factor_value), f"{s.params_total:,}", f"{s.params_non_embedding:,}",
                     _value(s.final_step), _sci(paper[run].final_flops),
                     _sci(complete[run].final_flops), best,
                     _num(analyses.test_perplexity.get(run), 2)])
    return (["## Appendix: runs", ""] + _table(
        ["run", "workdir", "point", "group", "factor value", "params", "non-embedding",
         "last step", "FLOPs (paper)", "FLOPs (complete)", "best val ppl", "test ppl"], rows))


def section_summary(analyses: Analyses, downstream: DownstreamAnalysis, options: ReportOptions
                    ) -> list[str]:
    """The headline findings, one line each."""
    counts = {k: len(rows_of_kind(analyses.rows, k)) for k in ("validation", "test", "downstream")}
    lines = ["## Summary", "",
             f"- {len(analyses.runs)} runs; {counts['validation']} validation, {counts['test']} test "
             f"and {counts['downstream']} downstream rows."]
    lines += baseline_lines(analyses)
    curve = analyses.curves[options.flops]
    c = curve.comparison
    if c is None:
        lines.append(f"- Frontier ({options.flops} FLOPs): {len(curve.frontier)} point(s); no fit.")
    else:
        flops = curve.frontier.flops
        span = (f" over {math.log10(flops.max() / flops.min()):.2f} decades "
                f"({_sci(flops.min())} – {_sci(flops.max())})")
        lines.append(f"- Frontier ({options.flops} FLOPs): {len(curve.frontier)} points{span}; one line "
                     f"L = {c.single.a:.4g}·C^{c.single.b:.4f} (R² log {_num(c.single.r2_log)}).")
        if c.two is None:
            lines.append("- Too few frontier points for a break search.")
        else:
            interval = ""
            if c.interval is not None and c.interval.n_valid > 0:
                interval = (f", {round(100 * c.interval.confidence)}% interval "
                            f"[{_sci(c.interval.low)}, {_sci(c.interval.high)}]")
            lines.append(f"- Two segments: break ≈ {_sci(c.two.break_flops)} FLOPs{interval}; "
                         f"b = {c.two.left.b:.4f} below, {c.two.right.b:.4f} above; BIC prefers "
                         f"**{'two segments' if c.prefers_two else 'one line'}** "
                         f"({_num(c.bic_single, 1)} vs {_num(c.bic_two, 1)}, "
                         f"{bic_strength(abs(c.bic_single - c.bic_two))}). Paper: break ~2.2e15, "
                         "b = −0.093 below, −0.141 above.")
    if analyses.icer_factors:
        top = analyses.icer_factors[0]
        lines.append(f"- Most cost-effective factor (lowest median ICER): {_code(top.factor)} "
                     f"(base {_code(top.base)}, {_sci(top.median_icer)} FLOPs per perplexity point). "
                     "Paper: hidden size.")
    for g in analyses.depth:
        if g.perplexity_winner:
            winner = analyses.runs[g.perplexity_winner]
            lines.append(f"- {_code(g.group)}: lowest perplexity {_code(winner.run)} "
                         f"(L = {_value(winner.num_layers)}); best downstream "
                         f"{_code(g.downstream_winner) if g.downstream_winner else '—'}.")
    lines += downstream_summary_lines(downstream)
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_report(rows: list[dict[str, Any]], out: Path, options: ReportOptions,
                 source: Path) -> Path:
    """Analyse ``rows`` and write report.md and its plots into the (empty) directory ``out``."""
    analyses = analyse(rows, options)
    for definition, curve in analyses.curves.items():
        plot_loss_vs_flops(analyses, curve, out / LOSS_PLOT.format(definition))
    icer_plotted = bool(analyses.icer_factors)
    if icer_plotted:
        plot_icer(analyses.icer_factors, analyses.icer_steps, out / ICER_PLOT)
    downstream_plotted = bool(analyses.scores)
    if downstream_plotted:
        plot_downstream(analyses.scores, out / DOWNSTREAM_PLOT)
    downstream = analyse_downstream(rows)
    correlation_plotted = plot_correlation(downstream, out / CORRELATION_PLOT)
    lines = ["# Scaling study report", "",
             f"Source: {_code(source)} (sha256 {_sha256(source)[:16]}…, {len(rows)} rows). "
             f"Settings: headline FLOPs `{options.flops}`, {options.bins_per_decade} bins per "
             f"decade, {options.bootstrap} bootstrap resamples, seed {options.seed}, at least "
             f"{options.min_points} points per fit segment, {round(100 * options.confidence)}% "
             "intervals. Loss in nats; FLOPs are cumulative training FLOPs.", ""]
    lines += section_summary(analyses, downstream, options)
    lines += section_curves(analyses, options)
    lines += section_icer(analyses, options, icer_plotted)
    lines += section_depth(analyses, options)
    lines += section_gaps(downstream)
    if downstream_plotted:
        lines += [f"![downstream scores]({DOWNSTREAM_PLOT})", ""]
    lines += section_correlation(downstream, correlation_plotted)
    lines += section_runs(analyses)
    path = out / REPORT_NAME
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out exists and is not a directory: {out}")
    foreign = [p.name for p in out.iterdir() if not (p.is_file() and (
        p.name == REPORT_NAME or p.suffix == ".png"))]
    if foreign:
        raise UserError(f"refusing to replace {out}: it holds files that are not part of a report "
                        f"({', '.join(sorted(foreign)[:5])})")


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished ``staging`` directory in for ``out`` (restoring ``out`` on failure)."""
    backup = None
    if out.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        backup.rmdir()
        os.rename(out, backup)
    try:
        os.rename(staging, out)
    except BaseException:
        if backup is not None:
            os.rename(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def build_report(results: str | Path, out: str | Path, options: ReportOptions | None = None
                 ) -> Path:
    """Load ``results``, write the report into a temporary sibling of ``out``, then swap it in.
    Returns the path of report.md."""
    options = options or ReportOptions()
    options.check()
    results, out = Path(results), Path(out)
    try:
        rows = load_results(results)
    except ResultsError as err:
        raise UserError(str(err)) from None
    if not rows:
        raise UserError(f"results file has no rows: {results}")
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_report(rows, staging, options, results)
        os.chmod(staging, 0o755)
        _publish(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out / REPORT_NAME


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    if not values.results or not values.out:
        raise UserError("both --results=PATH/results.jsonl and --out=DIR are required")
    options = ReportOptions(bins_per_decade=values.bins_per_decade, bootstrap=values.bootstrap,
                            flops=values.flops, seed=values.seed, min_points=values.min_points,
                            confidence=values.confidence)
    path = build_report(values.results, values.out, options)
    print(path)


def _entry() -> None:
    define_flags()
    run_main(main)


if __name__ == "__main__":
    _entry()
