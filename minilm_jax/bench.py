"""Training-throughput benchmark: tokens/s, model FLOP/s, MFU and memory for a point and batch, and
(with torch + transformers installed) Hugging Face ``RobertaForMaskedLM`` side by side.

    python -m minilm_jax.bench --point paper-1.25m --batch 32 --steps 20
    python -m minilm_jax.bench --point base-large --batch 32 --dtype bfloat16 --hf
    python -m minilm_jax.bench --sweep configs/sweep.py:paper --batch 256 --dtype bfloat16
    python -m minilm_jax.bench --point paper-1.25m --batch 256 --members 1,4,16,64
    python -m minilm_jax.bench --sweep configs/sweep.py:paper --batch 256 --sweep_seeds 3

``--members`` trains N members (seeds 0..N-1, ``batch`` sequences each) as one population program
(``--members_impl``: vmap | map | auto; both: each measured, the faster picked and why) and prints
aggregate and per-member tokens/s, MFU and peak memory, and the ratio of the aggregate to one
separate run's tokens/s (>= 1: the N members together take no longer than N runs one after
another).

Both sides run a full training step (forward, backward, AdamW update) on the same batch with the
same loss (mean cross-entropy over the 15% masked positions). Ours evaluates the MLM head only at
the masked positions; Hugging Face evaluates it everywhere, as its API does.
"""

from __future__ import annotations

import argparse

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.config import LAYER_IMPLS, NORM_IMPLS


def refuse_flags_out_of_range(parser, args) -> None:
    """Refuse every numeric flag outside its range, and a --members list that is not counts,
    before anything is built or timed: one ``error:`` line (the parser's) naming each."""
    import math

    at_least = {"batch": 1, "steps": 1, "steps_per_dispatch": 1, "sweep_seeds": 1, "threads": 0,
                "sweep_limit": 0}
    problems = [f"--{name}={getattr(args, name)}: must be >= {low}"
                for name, low in at_least.items() if getattr(args, name) < low]
    if not (math.isfinite(args.min_seconds) and args.min_seconds >= 0):
        problems.append(f"--min_seconds={args.min_seconds}: must be a finite number >= 0")
    if not (math.isfinite(args.sweep_tokens) and args.sweep_tokens > 0):
        problems.append(f"--sweep_tokens={args.sweep_tokens}: must be a finite number > 0")
    if args.members:
        try:
            counts = [int(x) for x in args.members.split(",") if x.strip()]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            problems.append(f"--members={args.members!r}: expected population sizes >= 1, "
                            "such as 1,4,16")
    if args.profile < 0:
        problems.append(f"--profile={args.profile}: must be >= 0")
    if args.profile and (args.members or args.sweep):
        problems.append("--profile profiles one run's step: not with --members or --sweep")
    if args.members_impl == "both" and not args.members:
        problems.append("--members_impl=both measures the --members populations both ways: "
                        "give --members (e.g. --members 16)")
    if problems:
        parser.error("; ".join(problems))


def bench_parser() -> argparse.ArgumentParser:
    """The command's options and their defaults (the device check reads a figure's step from
    them: what it compiles deviceless is what the bench runs)."""
    parser = tool_parser(prog="python -m minilm_jax.bench", description=__doc__)
    parser.add_argument("--point", default="paper-1.25m", help="model shape (named point or grammar)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (per member)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed (at least)")
    parser.add_argument("--min_seconds", type=float, default=2.0,
                        help="keep timing whole rounds of --steps until this many seconds have passed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype")
    parser.add_argument("--steps_per_dispatch", type=int, default=1,
                        help="train steps per compiled call (lax.scan)")
    parser.add_argument("--attention", default="einsum",
                        choices=["einsum", "xla", "cudnn", "flash"],
                        help="attention implementation (model.attention_impl; xla and cudnn "
                             "without attention dropout, flash with it in the kernel)")
    parser.add_argument("--loss_impl", default="auto", choices=["auto", "fused", "logits", "kernel"],
                        help="MLM output layer + loss implementation (model.mlm_loss_impl)")
    parser.add_argument("--layer", default="auto", choices=LAYER_IMPLS,
                        help="encoder layer and embeddings (model.layer_impl; fused: Pallas "
                             "kernels, auto: the modules)")
    parser.add_argument("--norm", default="auto", choices=NORM_IMPLS,
                        help="the modules' LayerNorm (model.norm_impl; gpu: fewer launches, "
                             "more bytes; auto: gpu on a GPU)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile 10 steps and print the N slowest kernels by device "
                             "time (a GPU's; one run only)")
    parser.add_argument("--hf", action="store_true", help="also run Hugging Face RobertaForMaskedLM")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--sweep", default="", help="project a sweep's pre-training time, e.g. "
                        "configs/sweep.py:paper (measures every distinct point at --batch)")
    parser.add_argument("--sweep_tokens", type=float, default=1.16e9,
                        help="tokens per run for --sweep (one epoch of the constrained corpus)")
    parser.add_argument("--sweep_limit", type=int, default=0, help="measure only the first N points")
    parser.add_argument("--sweep_seeds", type=int, default=1,
                        help="pre-training seeds per run, packed into one population (--sweep)")
    parser.add_argument("--members", default="", help="population sizes to measure, e.g. "
                        "1,4,16,64 (each member trains --batch sequences per step)")
    parser.add_argument("--members_impl", default="auto", choices=["auto", "vmap", "map", "both"],
                        help="how members run together (auto: map on CPU, vmap elsewhere; "
                             "both: measure vmap and map, each count picks the faster and says "
                             "by how much)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser()
    args = parser.parse_args(argv)
    refuse_flags_out_of_range(parser, args)
    # What a run needs, imported once its flags are accepted: --help and a refused flag need no jax.
    import jax

    from minilm_jax.bench_steps import (bench_hf, bench_ours, bytes_text, members_table,
                                        project_sweep)
    from minilm_jax.storage import atomic_write_json

    impls = {"layer_impl": args.layer, "norm_impl": args.norm}
    if args.members:
        try:
            counts = [int(x) for x in args.members.split(",") if x]
        except ValueError:
            parser.error(f"--members={args.members!r}: expected counts such as 1,4,16")
        table = members_table(args.point, counts, args.batch, args.steps, args.dtype,
                              args.steps_per_dispatch, args.members_impl, args.min_seconds,
                              args.loss_impl, impls)
        if args.json:
            atomic_write_json(args.json, table)
        return 0
    if args.sweep:
        projected = project_sweep(args.sweep, args.batch, args.steps, args.dtype,
                                  args.steps_per_dispatch, args.sweep_tokens, args.sweep_limit,
                                  args.min_seconds, args.sweep_seeds, args.members_impl,
                                  impls)
        if args.json:
            atomic_write_json(args.json, projected | {"jax": jax.__version__, "batch": args.batch,
                                                      "dtype": args.dtype})
        return 0

    ours = bench_ours(args.point, args.batch, args.steps, args.dtype, args.steps_per_dispatch,
                      args.attention, args.min_seconds, args.loss_impl, impls,
                      args.profile)
    results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "ours": ours}
    if args.hf:
        import os
        results["hf"] = bench_hf(args.point, args.batch, max(3, args.steps // 2),
                                 args.threads or os.cpu_count() or 1, args.dtype)
        results["speedup_tokens_per_sec"] = ours["tokens_per_sec"] / results["hf"]["tokens_per_sec"]
    if args.json:
        atomic_write_json(args.json, results)
    print(f"device {results['device']}  jax {results['jax']}  point {ours['point']}  "
          f"batch {args.batch}x128  dtype {args.dtype}")
    print(f"minilm-jax : {ours['tokens_per_sec']:>12,.0f} tokens/s  {ours['step_ms']:8.1f} ms/step  "
          f"{ours['model_flops_per_sec'] / 1e9:8.2f} GFLOP/s  MFU {100 * ours['mfu']:5.1f}% "
          f"(peak {ours['peak_flops_measured'] / 1e9:.1f} GFLOP/s measured)  memory {ours['memory'] or 'n/a'}")
    print(f"step cost  : {bytes_text(ours)}")
    if args.hf:
        hf = results["hf"]
        print(f"HF torch   : {hf['tokens_per_sec']:>12,.0f} tokens/s  {hf['step_ms']:8.1f} ms/step  "
              f"(torch {hf['torch']})")
        print(f"speed-up   : {results['speedup_tokens_per_sec']:.2f}x tokens/s")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
