"""Analyses of a scaling sweep (numpy/scipy only): the results table, the compute-optimal
frontier, power-law fits with a break, one-factor-at-a-time cost-effectiveness and depth groups.

Modules: ``result_rows`` (the row schema; read and validate rows), ``results`` (select rows),
``frontier``, ``fits``, ``icer``, ``depth``;
``seeds``, ``seed_frontier``, ``replication``, ``zero_shot_seeds`` and ``study_b_seeds`` treat the
pre-training seed as the unit of replication; ``power`` fixes how many seeds a protocol needs.
``python -m minilm_jax.report`` turns them into a Markdown report with plots.
"""

from .depth import DepthGroup, DepthMember, depth_analysis
from .fits import (PAPER_BREAK_FLOPS, PAPER_FITS, BreakInterval, FitComparison, PaperFit, PowerLaw,
                   TwoSegmentFit, bic, bootstrap_break, compare_fits, fit_power_law,
                   fit_two_segments)
from .frontier import PAPER_BINS_PER_DECADE, Frontier, bin_index, compute_frontier
from .icer import FactorSummary, IcerStep, icer_analysis
from .result_rows import ResultsError, load_results
from .results import (RunSummary, TaskScore, best_validation, downstream_scores, last_validation,
                      mean_scores, rows_of_kind, summarize_runs, validation_curves)

__all__ = [
    "BreakInterval", "DepthGroup", "DepthMember", "FactorSummary", "FitComparison", "Frontier",
    "IcerStep", "PAPER_BINS_PER_DECADE", "PAPER_BREAK_FLOPS", "PAPER_FITS", "PaperFit", "PowerLaw",
    "ResultsError", "RunSummary", "TaskScore", "TwoSegmentFit", "best_validation", "bic",
    "bin_index", "bootstrap_break", "compare_fits", "depth_analysis", "downstream_scores",
    "fit_power_law", "fit_two_segments", "compute_frontier", "icer_analysis", "last_validation",
    "load_results", "mean_scores", "rows_of_kind", "summarize_runs", "validation_curves",
]
