"""The analyses a report shows: per FLOPs definition the frontier and its fits, ICER, depth,
baselines and downstream scores, computed once from the results rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minilm_jax.analysis.depth import DepthGroup, depth_analysis
from minilm_jax.analysis.fits import FitComparison, compare_fits
from minilm_jax.analysis.frontier import Frontier, compute_frontier
from minilm_jax.analysis.icer import FactorSummary, IcerStep, icer_analysis
from minilm_jax.analysis.seed_frontier import SeedBreak, seed_break
from minilm_jax.analysis.seeds import (SeedCorrelations, SeedDepth, SeedFactor,
                                       correlation_over_seeds, depth_over_seeds, icer_over_seeds,
                                       multi_seed_designs, seed_partitions)
from minilm_jax.analysis.results import (FLOPS_DEFINITIONS, RunSummary, TaskScore,
                                         downstream_scores, flops_field, rows_of_kind,
                                         summarize_runs)

from .options import ReportOptions


@dataclass
class CurveAnalysis:
    """Validation points, frontier and fits for one FLOPs definition."""

    definition: str
    points: list[Mapping[str, Any]]
    frontier: Frontier
    comparison: FitComparison | None = None
    note: str = ""
    # Several pre-training seeds per design place: the break's interval over seeds and frontier
    # points, and each seed's own break (only with a two-segment fit).
    seed_break: SeedBreak | None = None


def analyse_curve(rows: Sequence[Mapping[str, Any]], definition: str, options: ReportOptions
                  ) -> CurveAnalysis:
    """Frontier of all validation points and the one-line / two-segment fits on it; with
    multi-seed design places also the break over pre-training seeds."""
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
    designs = multi_seed_designs(rows)
    if designs:
        result.seed_break = seed_break(points, designs, key, options.bins_per_decade,
                                       options.min_points, options.bootstrap, options.confidence,
                                       options.seed)
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
    # Several pre-training seeds: ICER and depth above are those of ``shown_seed``'s runs; over
    # every seed in ``seed_icer`` / ``seed_depth``.
    shown_seed: int | None = None
    seed_icer: list[SeedFactor] = field(default_factory=list)
    seed_depth: list[SeedDepth] = field(default_factory=list)
    seed_correlations: SeedCorrelations | None = None  # perplexity vs downstream per seed


def analyse(rows: list[dict[str, Any]], options: ReportOptions) -> Analyses:
    """Run every analysis on the loaded rows."""
    by_definition = {d: summarize_runs(rows, d) for d in FLOPS_DEFINITIONS}
    runs = by_definition[options.flops]
    # ICER and depth compare runs of one pre-training seed (all runs when there is one per place)
    partitions = seed_partitions(runs, rows)
    shown_seed, shown = next(iter(partitions.items()))
    steps, factors = icer_analysis(shown.values())
    scores = downstream_scores(rows)
    tests = {}
    for r in sorted(rows_of_kind(rows, "test"), key=lambda r: r["step"]):
        tests[r["run"]] = float(r["perplexity"])
    return Analyses(rows=rows, runs=runs, runs_by_definition=by_definition,
                    curves={d: analyse_curve(rows, d, options) for d in FLOPS_DEFINITIONS},
                    icer_steps=steps, icer_factors=factors,
                    depth=depth_analysis(shown.values(), scores), scores=scores,
                    test_perplexity=tests, shown_seed=shown_seed,
                    seed_icer=icer_over_seeds(partitions),
                    seed_depth=depth_over_seeds(partitions, rows, scores),
                    seed_correlations=correlation_over_seeds(rows))


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas, no global backend change)
