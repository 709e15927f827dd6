"""List the named model points with parameter counts and training FLOPs per sequence.

    python -m minilm_jax.points                # every named point
    python -m minilm_jax.points E64-H64-I256-L2-A4 bert6
    python -m minilm_jax.points paper-1.25m --arch my_lab.encoders:SwiGLUEncoder   # a variant
    python -m minilm_jax.points paper-1.25m --arch my_lab.encoders:SwiGLUEncoder --extra ffn_scale=0.6667

A variant's counts are the formula plus what its class declares (``counts_beyond_baseline``),
checked against its built tree and traced matmuls before they are shown, or, where it declares
none, plus what those two give (derived).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.sizes import NAMED_POINTS, resolve_point
from minilm_jax.settings.command_line import apply_variant_fields


def variant_extra(arch: str, assignments: Sequence[str]) -> tuple[tuple[str, object], ...]:
    """The variant fields of ``arch`` with ``name=value`` assignments applied (checked and parsed
    as ``--config.model.extra.<name>`` is)."""
    config = ml_collections.ConfigDict({"model": {"arch": arch}})
    apply_variant_fields(config, [tuple(a.split("=", 1)) if "=" in a else (a, "")
                                  for a in assignments])
    return tuple(sorted(config.model.extra.to_dict().items())) if "extra" in config.model else ()


def table(points: list[str], arch: str = "", extra: Sequence[str] = ()) -> str:
    """One row per point (``arch``: built as that encoder with its fields set by ``extra``
    ``name=value`` assignments, its declared counts checked or its counts derived). Counting
    builds models: jax and flax are imported once every point is read, so ``--help`` needs
    neither, nor a malformed first point."""
    configs = [resolve_point(point) for point in points]  # a bad point: ConfigError, one line
    from minilm_jax.model import accounting
    from minilm_jax.model.count_check import check_declared_counts

    width = max(9, len(arch))
    header = (f"{'point':<24} {'grammar':<32} {'arch':<{width}} {'params':>12} {'embedding':>11} "
              f"{'non-emb':>11} {'paper FLOPs/seq':>16} {'complete FLOPs/seq':>19}")
    rows = [header, "-" * len(header)]
    for point, cfg in zip(points, configs):
        if arch:
            cfg = cfg.replace(arch=arch, extra=variant_extra(arch, extra))
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
                        "registered name or module:Class): its declared counts, checked, or "
                        "its derived ones")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=VALUE",
                        help="a field of the --arch variant (its config_fields), as "
                        "--config.model.extra.NAME=VALUE sets it for a run; repeatable")
    args = parser.parse_args(argv)
    if args.extra and not args.arch:
        parser.error("--extra sets a field of the --arch variant; give --arch")
    print(table(args.points or list(NAMED_POINTS), args.arch, args.extra))  # a bad point: ConfigError, one line (run_tool)
    print("\nparams: MLM model by SPEC A3's formula (conv front end excluded); complete FLOPs: "
          "3x forward matmuls with the MLM head at 32 masked positions.")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
