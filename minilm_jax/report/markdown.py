"""The report's Markdown sections: summary, loss-vs-FLOPs fits and frontier, ICER, depth, runs."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from minilm_jax.analysis.fits import PAPER_BREAK_FLOPS, PAPER_FITS, BreakInterval, FitComparison
from minilm_jax.analysis.seed_frontier import SeedBreak
from minilm_jax.analysis.results import FLOPS_DEFINITIONS, baselines, flops_field, rows_of_kind
from minilm_jax.data.learned import ADVICE, PLATEAU, advice, on_small_corpus_recipe
from minilm_jax.storage import run_path

from .analyses import Analyses, CurveAnalysis
from .downstream import DownstreamAnalysis
from .downstream import summary_lines as downstream_summary_lines
from .fmt import cell, code, num, sci, table, value
from .options import ICER_PLOT, LOSS_PLOT, ReportOptions


def _fit_rows(comparison: FitComparison) -> list[list[str]]:
    s = comparison.single
    rows = [["one line", "all frontier points", f"{sci(s.flops_min)} – {sci(s.flops_max)}",
             num(s.a, 4), num(s.b, 4), num(s.r2_log), num(s.r2_linear), str(s.n),
             num(comparison.bic_single, 2)]]
    two = comparison.two
    if two is not None:
        for name, part in (("below break", two.left), ("above break", two.right)):
            rows.append(["two segments", name, f"{sci(part.flops_min)} – {sci(part.flops_max)}",
                         num(part.a, 4), num(part.b, 4), num(part.r2_log), num(part.r2_linear),
                         str(part.n), f"{num(comparison.bic_two, 2)} (both segments)"
                         if name == "below break" else "—"])
    return rows


def _paper_rows() -> list[list[str]]:
    return [["paper (SPEC A5)", f"{'below' if f.low == 0 else 'above'} {sci(PAPER_BREAK_FLOPS)} "
             f"(published R² {f.r2})", "—", f"{f.a:g}", f"{f.b:g}", "—", "—", "—", "—"]
            for f in PAPER_FITS]


def _paper_inside(interval: BreakInterval, definition: str) -> list[str]:
    if definition != "paper":
        return []
    inside = interval.low <= PAPER_BREAK_FLOPS <= interval.high
    return [f"- The paper's break ({sci(PAPER_BREAK_FLOPS)}) lies "
            f"{'inside' if inside else 'outside'} this interval."]


def _seeds_per_design(found: SeedBreak) -> str:
    counts = sorted(found.seeds_per_design.values())
    places = len(counts)
    seeds = (f"{counts[0]} seeds" if counts[0] == counts[-1]
             else f"{counts[0]}–{counts[-1]} seeds")
    n = found.n_fixed_runs
    fixed = f", {n} run{'s' if n != 1 else ''} with one seed or none in every resample" if n else ""
    return f"{seeds} per design place, {places} places{fixed}"


def _seed_break_lines(found: SeedBreak | None, options: ReportOptions, definition: str
                      ) -> list[str]:
    """The break over pre-training seeds: the hierarchical interval and each seed's own break."""
    if found is None:
        return []
    lines = []
    interval = found.interval
    if interval is not None and interval.n_valid == 0:
        lines.append(f"- Over pre-training seeds: none of {interval.n_resamples} resamples allowed "
                     f"a split with {options.min_points} points per segment, so no interval.")
    elif interval is not None:
        lines.append(f"- {round(100 * interval.confidence)}% interval over pre-training seeds and "
                     f"frontier points: [{sci(interval.low)}, {sci(interval.high)}] FLOPs (each "
                     "resample draws one pre-training seed per design place, builds the frontier "
                     "of the drawn runs and resamples its points; "
                     f"{_seeds_per_design(found)}; {interval.n_valid} of {interval.n_resamples} "
                     f"resamples had a valid split; seed {interval.seed}).")
        lines += _paper_inside(interval, definition)
    if not found.per_seed:
        lines.append("- No pre-training seed is present in every design place: no per-seed "
                     "breaks.")
        return lines
    each = [f"seed {seed}: " + (f"{sci(two.break_flops)} (between {sci(two.break_low)} and "
                                f"{sci(two.break_high)})" if two is not None else "no valid split")
            for seed, two in found.per_seed.items()]
    lines.append("- Break on each pre-training seed's own frontier (that seed's run of every "
                 f"design place): {'; '.join(each)}.")
    return lines


def _break_lines(comparison: FitComparison, options: ReportOptions, definition: str,
                 found: SeedBreak | None = None) -> list[str]:
    two = comparison.two
    if two is None:
        return []
    lines = [f"- Break between the frontier points at {sci(two.break_low)} and "
             f"{sci(two.break_high)} FLOPs (geometric midpoint {sci(two.break_flops)}; "
             f"{two.n_left} points below, {two.n - two.n_left} above)."]
    interval = comparison.interval
    if interval is None:
        lines.append("- No bootstrap interval (`--bootstrap=0`).")
    elif interval.n_valid == 0:
        lines.append(f"- Bootstrap: none of {interval.n_resamples} resamples allowed a split with "
                     f"{options.min_points} points per segment, so no interval.")
    else:
        lines.append(f"- {round(100 * interval.confidence)}% bootstrap interval of the break: "
                     f"[{sci(interval.low)}, {sci(interval.high)}] FLOPs ({interval.n_valid} of "
                     f"{interval.n_resamples} resamples had a valid split; seed {interval.seed}).")
        lines += _paper_inside(interval, definition)
    lines += _seed_break_lines(found, options, definition)
    left = float(two.left.predict(two.break_flops))
    right = float(two.right.predict(two.break_flops))
    step = f"a drop of {num(left - right)}" if left >= right else f"a rise of {num(right - left)}"
    lines.append(f"- At the break the left segment predicts {num(left)} nats and the right one "
                 f"{num(right)}: {step} nats (the paper's frontier drops ~0.3–0.5 nats between 2e15 "
                 "and 3e15).")
    verdict = "two segments" if comparison.prefers_two else "one line"
    gap = abs(comparison.bic_single - comparison.bic_two)
    lines.append(f"- BIC (log-space residuals): one line {num(comparison.bic_single, 2)}, two "
                 f"segments {num(comparison.bic_two, 2)}; difference {num(gap, 2)} → prefers "
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
            f"{num(float(diff.mean()))} nats on average (RMS {num(rms)}, {diff.size} points).")


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
            lines += table(header, rows)
            lines += _break_lines(curve.comparison, options, definition, curve.seed_break)
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
        rows.append([str(i), f"[{sci(edges[0])}, {sci(edges[1])})", sci(p[key]),
                     num(p["loss"], 4), code(p["run"]), code(p["workdir"]), str(p["step"])])
    return ([f"Frontier points ({len(curve.frontier)} of {curve.frontier.n_candidates}):", ""]
            + table(["#", "bin", "FLOPs", "loss", "run", "workdir", "step"], rows))


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
        best = (f"{value(f.best_step.prev_value)} → {value(f.best_step.next_value)}"
                if f.best_step else "—")
        rows.append([str(rank), code(f.base), code(f.factor), str(f.n_steps), str(f.n_helped),
                     sci(f.median_icer), best, cell(f.note) or ""])
    lines += table(["rank", "base", "factor", "steps", "helpful steps", "median ICER",
                     "best step", "note"], rows)
    step_rows = []
    for s in analyses.icer_steps:
        step_rows.append([code(s.factor), f"{value(s.prev_value)} → {value(s.next_value)}",
                          s.side or "—", code(s.prev.run), code(s.prev.workdir), code(s.next.run),
                          code(s.next.workdir), sci(s.delta_flops), num(s.prev.best_perplexity, 2),
                          num(s.next.best_perplexity, 2), num(s.gain, 2), sci(s.icer), s.status])
    lines += ["Steps:", ""] + table(
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
            rows.append([code(g.group), code(s.run), code(s.workdir), code(s.point),
                         value(s.num_layers), f"{s.params_total:,}", sci(s.flops_per_step),
                         num(s.best_perplexity, 2), num(m.downstream_mean, 2),
                         ", ".join(marks) or ""])
    lines += table(["group", "run", "workdir", "point", "L", "params", "FLOPs/step",
                     "best val ppl", "mean downstream", "wins on"], rows)
    for g in analyses.depth:
        ppl = code(g.perplexity_winner) if g.perplexity_winner else "undecided"
        if g.tasks:
            down = (f"{code(g.downstream_winner) if g.downstream_winner else 'undecided'} "
                    f"(tasks: {', '.join(g.tasks)})")
        else:
            down = "no downstream scores for every member"
        single = " (only one member)" if len(g.members) < 2 else ""
        lines.append(f"- {code(g.group)}{single}: lowest perplexity {ppl}; best downstream {down}.")
    return lines + [""]


def baseline_lines(analyses: Analyses) -> list[str]:
    """Best validation perplexity next to the shard set's count-based baselines."""
    base = baselines(analyses.rows)
    if not base:
        return []
    uni, bi = base.get(("unigram", "validation")), base.get(("bigram", "validation"))
    lines = [f"- Baselines on the validation split (count-based, from the training split): unigram "
             f"perplexity {num(uni, 1)}, interpolated left-context bigram {num(bi, 1)}."]
    plateau = []
    for run, s in sorted(analyses.runs.items()):
        if s.best_perplexity is not None and uni:
            on = s.best_perplexity >= PLATEAU * uni
            plateau += [run] if on else []
            lines.append(f"  - {code(run)}: best validation perplexity {num(s.best_perplexity, 1)}"
                         f" = {s.best_perplexity / uni:.0%} of the unigram level"
                         f" ({'ON THE UNIGRAM PLATEAU (within 10%)' if on else 'below unigram'}"
                         f"{'' if bi is None else ', below bigram' if s.best_perplexity < bi else ', above bigram'}).")
    configs = {run: _run_config(analyses.runs[run].workdir) for run in plateau}
    on_recipe = [run for run in plateau if on_small_corpus_recipe(configs[run])]
    others = [run for run in plateau if run not in on_recipe]
    if others:
        lines.append(f"- {len(others)} run(s) ended within {1 - PLATEAU:.0%} of the unigram "
                     f"perplexity ({', '.join(code(r) for r in others)}): they learned little "
                     f"beyond word frequencies, so their downstream numbers mean little; {ADVICE}.")
    for run in on_recipe:  # the recipe's advice is spent: what is left, with the run's steps
        lines.append(f"- {code(run)} ended within {1 - PLATEAU:.0%} of the unigram perplexity: "
                     "it learned little beyond word frequencies, so its downstream numbers mean "
                     f"little; {advice(configs[run])}.")
    return lines


def _run_config(workdir: str) -> dict[str, Any] | None:
    """A run's recorded ``config.json`` (flat keys), None where it cannot be read (a results table
    moved away from its runs: the general advice then stands)."""
    try:
        config = json.loads((run_path(workdir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def section_runs(analyses: Analyses) -> list[str]:
    """Appendix: every run."""
    paper = analyses.runs_by_definition["paper"]
    complete = analyses.runs_by_definition["complete"]
    rows = []
    for run, s in sorted(analyses.runs.items()):
        best = "—"
        if s.best_step is not None:
            best = f"{num(s.best_perplexity, 2)} (step {s.best_step})"
        rows.append([code(run), code(s.workdir), code(s.point), code(s.group or "—"),
                     value(s.factor_value), f"{s.params_total:,}", f"{s.params_non_embedding:,}",
                     value(s.final_step), sci(paper[run].final_flops),
                     sci(complete[run].final_flops), best,
                     num(analyses.test_perplexity.get(run), 2)])
    return (["## Appendix: runs", ""] + table(
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
                f"({sci(flops.min())} – {sci(flops.max())})")
        lines.append(f"- Frontier ({options.flops} FLOPs): {len(curve.frontier)} points{span}; one line "
                     f"L = {c.single.a:.4g}·C^{c.single.b:.4f} (R² log {num(c.single.r2_log)}).")
        if c.two is None:
            lines.append("- Too few frontier points for a break search.")
        else:
            interval = ""
            if c.interval is not None and c.interval.n_valid > 0:
                interval = (f", {round(100 * c.interval.confidence)}% interval "
                            f"[{sci(c.interval.low)}, {sci(c.interval.high)}]")
            lines.append(f"- Two segments: break ≈ {sci(c.two.break_flops)} FLOPs{interval}; "
                         f"b = {c.two.left.b:.4f} below, {c.two.right.b:.4f} above; BIC prefers "
                         f"**{'two segments' if c.prefers_two else 'one line'}** "
                         f"({num(c.bic_single, 1)} vs {num(c.bic_two, 1)}, "
                         f"{bic_strength(abs(c.bic_single - c.bic_two))}). Paper: break ~2.2e15, "
                         "b = −0.093 below, −0.141 above.")
    if analyses.icer_factors:
        top = analyses.icer_factors[0]
        lines.append(f"- Most cost-effective factor (lowest median ICER): {code(top.factor)} "
                     f"(base {code(top.base)}, {sci(top.median_icer)} FLOPs per perplexity point). "
                     "Paper: hidden size.")
    for g in analyses.depth:
        if g.perplexity_winner:
            winner = analyses.runs[g.perplexity_winner]
            lines.append(f"- {code(g.group)}: lowest perplexity {code(winner.run)} "
                         f"(L = {value(winner.num_layers)}); best downstream "
                         f"{code(g.downstream_winner) if g.downstream_winner else '—'}.")
    lines += downstream_summary_lines(downstream)
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# writing
