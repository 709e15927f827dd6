"""Benchmark: S fine-tuning members (seeds) in one compiled program vs the same S run one after another.

    python -m minilm_jax.finetune.bench [--point=paper-1.25m] [--members=1,4,8] [--batch=32] [--steps=250]
        [--impl=vmap|map]

Prints, per S, the time of one optimizer step of all S members together (``--impl``: ``vmap``
batches them, ``map`` runs them one after another inside the program; see
``minilm_jax.finetune.step``) and of S separate single-member steps, the compile time of each
program, and the time of a whole fine-tuning run of ``--steps`` steps both ways (one compile +
steps, vs S compiles + S x steps), with the speed-ups.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.sizes import resolve_point
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.optim import optimizer_and_schedule

from .step import make_finetune_step, members_state


def _optim() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(peak_lr=2e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                          decay_mask=False, schedule="linear", warmup_steps=0,
                                          end_lr_fraction=0.0, clip_norm=0.0))


def step_seconds(point: str, members: int, batch: int, seq_len: int, num_labels: int = 2,
                 steps_per_dispatch: int = 1, repeats: int = 10, impl: str = "vmap"
                 ) -> tuple[float, float]:
    """(median wall seconds of one optimizer step of ``members`` members run together by ``impl``,
    seconds of the first call: compilation included)."""
    cfg = resolve_point(point)
    optimizer, schedule = optimizer_and_schedule(_optim(), 1000)
    built = members_state(cfg, num_labels, optimizer, members, make_mesh(1, 1))
    graphdef, state = built.graphdef, built.init(None, np.arange(members, dtype=np.int32))
    step = jax.jit(make_finetune_step(graphdef, optimizer, schedule,
                                      num_labels == 1, impl), donate_argnums=0)
    rng = np.random.default_rng(0)
    shape = (steps_per_dispatch, members, batch, seq_len)
    data = {"tokens": jnp.asarray(rng.integers(5, cfg.vocab_size, shape), jnp.int32),
            "segments": jnp.ones(shape, jnp.int32), "token_types": jnp.zeros(shape, jnp.int32),
            "labels": jnp.asarray(rng.integers(0, num_labels, shape[:3]), jnp.int32)}
    start = time.perf_counter()
    state, metrics = step(state, data)  # compile
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, data)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps_per_dispatch)
    return float(np.median(times)), compile_seconds


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.finetune.bench", description=__doc__)
    parser.add_argument("--point", default="paper-1.25m", help="classifier shape (named point or grammar)")
    parser.add_argument("--members", default="1,4,8", help="comma-separated seed counts trained together")
    parser.add_argument("--batch", type=int, default=32, help="examples per member per step")
    parser.add_argument("--seq_len", type=int, default=128, help="tokens per example")
    parser.add_argument("--steps", type=int, default=250, help="steps of a whole fine-tuning run")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per figure")
    parser.add_argument("--impl", default="vmap", choices=("vmap", "map"),
                        help="how the members run together (vmap: batched; map: one after another)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.members.split(",")]
    print(f"# {args.point}, batch {args.batch} x {args.seq_len}, device {jax.devices()[0].device_kind}"
          f" x{jax.device_count()}, jax {jax.__version__}, python {platform.python_version()}, "
          f"members together by {args.impl}")
    single, single_compile = step_seconds(args.point, 1, args.batch, args.seq_len, repeats=args.repeats)
    rows = []
    print(f"{'S':>3} {'step ms: together':>17} {'S x single':>11} {'speed-up':>9} {'compile s':>10} "
          f"{'run of ' + str(args.steps) + ' steps, s: together':>31} {'S runs':>8} {'speed-up':>9}")
    for s in counts:
        together, compile_s = ((single, single_compile) if s == 1 else
                               step_seconds(args.point, s, args.batch, args.seq_len,
                                            repeats=args.repeats, impl=args.impl))
        run_together = compile_s + args.steps * together
        run_sequential = s * (single_compile + args.steps * single)
        rows.append({"members": s, "together_step_seconds": together,
                     "sequential_step_seconds": s * single, "compile_seconds": compile_s,
                     "run_seconds_together": run_together, "run_seconds_sequential": run_sequential})
        print(f"{s:>3} {1e3 * together:>17.1f} {1e3 * s * single:>11.1f} {s * single / together:>8.2f}x "
              f"{compile_s:>10.1f} {run_together:>31.1f} {run_sequential:>8.1f} "
              f"{run_sequential / run_together:>8.2f}x")
    if args.json:
        from minilm_jax.storage import atomic_write_json
        atomic_write_json(args.json, {"point": args.point, "batch": args.batch, "steps": args.steps,
                                      "impl": args.impl,
                                      "rows": rows, "device": jax.devices()[0].device_kind})
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
