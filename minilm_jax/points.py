"""List the named model points with parameter counts and training FLOPs per sequence.

    python -m minilm_jax.points                # every named point
    python -m minilm_jax.points E64-H64-I256-L2-A4 bert6
"""

from __future__ import annotations

from minilm_jax.model import accounting
from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.sizes import NAMED_POINTS, resolve_point


def table(points: list[str]) -> str:
    header = (f"{'point':<24} {'grammar':<32} {'arch':<9} {'params':>12} {'embedding':>11} "
              f"{'non-emb':>11} {'paper FLOPs/seq':>16} {'complete FLOPs/seq':>19}")
    rows = [header, "-" * len(header)]
    for point in points:
        cfg = resolve_point(point)
        counts = accounting.formula_params(cfg)
        paper = accounting.paper_train_flops_per_sequence(cfg)
        complete = accounting.train_flops_per_sequence(cfg, num_predictions=32)
        rows.append(f"{point:<24} {cfg.point:<32} {cfg.arch:<9} {counts.total:>12,} "
                    f"{counts.embedding:>11,} {counts.non_embedding:>11,} {paper:>16.3e} "
                    f"{complete:>19.3e}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.points", description=__doc__)
    parser.add_argument("points", nargs="*", help="named points or grammar strings (default: all "
                        "named points)")
    args = parser.parse_args(argv)
    print(table(args.points or list(NAMED_POINTS)))  # a bad point: ConfigError, one line (run_tool)
    print("\nparams: MLM model by SPEC A3's formula (conv front end excluded); complete FLOPs: "
          "3x forward matmuls with the MLM head at 32 masked positions.")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
