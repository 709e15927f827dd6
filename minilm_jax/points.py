"""List the named model points with parameter counts and training FLOPs per sequence.

    python -m minilm_jax.points                # every named point
    python -m minilm_jax.points E64-H64-I256-L2-A4 bert6
    python -m minilm_jax.points paper-1.25m --arch my_lab.encoders:SwiGLUEncoder   # a variant

A variant's counts are the formula plus what its class declares (``counts_beyond_baseline``),
checked against its built tree and traced matmuls before they are shown.
"""

from __future__ import annotations

from minilm_jax.model import accounting
from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.count_check import check_declared_counts
from minilm_jax.model.sizes import NAMED_POINTS, resolve_point


def table(points: list[str], arch: str = "") -> str:
    """One row per point (``arch``: built as that encoder, its declared counts checked)."""
    width = max(9, len(arch))
    header = (f"{'point':<24} {'grammar':<32} {'arch':<{width}} {'params':>12} {'embedding':>11} "
              f"{'non-emb':>11} {'paper FLOPs/seq':>16} {'complete FLOPs/seq':>19}")
    rows = [header, "-" * len(header)]
    for point in points:
        cfg = resolve_point(point)
        if arch:
            cfg = cfg.replace(arch=arch)
            check_declared_counts(cfg)
        counts = accounting.formula_params(cfg)
        paper = accounting.paper_train_flops_per_sequence(cfg)
        complete = accounting.train_flops_per_sequence(cfg, num_predictions=32)
        rows.append(f"{point:<24} {cfg.point:<32} {cfg.arch:<{width}} {counts.total:>12,} "
                    f"{counts.embedding:>11,} {counts.non_embedding:>11,} {paper:>16.3e} "
                    f"{complete:>19.3e}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.points", description=__doc__)
    parser.add_argument("points", nargs="*", help="named points or grammar strings (default: all "
                        "named points)")
    parser.add_argument("--arch", default="", help="build every point as this encoder (a "
                        "registered name or module:Class): its declared counts, checked")
    args = parser.parse_args(argv)
    print(table(args.points or list(NAMED_POINTS), args.arch))  # a bad point: ConfigError, one line (run_tool)
    print("\nparams: MLM model by SPEC A3's formula (conv front end excluded); complete FLOPs: "
          "3x forward matmuls with the MLM head at 32 masked positions.")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
