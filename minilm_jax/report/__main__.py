"""Build the report of a sweep's results table: the loss-vs-FLOPs frontier and its fits with
intervals, ICER and depth-vs-width tables, fine-tuning gains over random init, zero-shot tables,
every number beside its baseline (unigram / bigram perplexity, majority class, chance), written as
report.md with PNG plots.

    python -m minilm_jax.report --results=PATH/results.jsonl --out=DIR [--bins_per_decade=11]
        [--bootstrap=1000] [--flops=paper|complete] [--seed=0] [--min_points=3]
        [--confidence=0.95]
"""

from __future__ import annotations

from absl import flags

from minilm_jax.analysis.results import FLOPS_DEFINITIONS
from minilm_jax.cli import run_main
from minilm_jax.errors import UserError

from .options import ReportOptions
from .publish import build_report


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
