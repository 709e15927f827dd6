"""The MLM output layer alone: each formulation checked against a float32 reference and timed.

    python -m minilm_jax.xent_bench                          # 5,376 x 32 x 19,010, bf16 (a GPU)
    python -m minilm_jax.xent_bench --rows 300 --hidden 24 --vocab 257 --repeats 3   # CPU check

For ``x [rows, hidden] @ W [hidden, vocab] + b`` and the weighted cross-entropy: the loss and its
gradients (x, W, b, weights) and the target log-probabilities of ``kernel`` (the Pallas kernels;
interpreted off a GPU), ``logits`` (one GEMM, the one-pass gradient) and ``autodiff`` (log_softmax +
take_along_axis, what the step differentiated before) against float32 autodiff on the same
bf16-rounded inputs (relative L2 error; ``kernel`` under ``vmap`` over 4 members against each
member's own call), then the median forward + backward time of each. Exit status 1 when an error
exceeds ``--tolerance``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.model.xent import softmax_xent_sum
from minilm_jax.model.xent_kernel import kernel_linear_logprobs, kernel_linear_xent


def problem(rows: int, hidden: int, vocab: int, seed: int) -> tuple[jax.Array, ...]:
    """Random inputs, ``x`` and ``W`` rounded to bf16 (every formulation sees the same values)."""
    k = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(k[0], (rows, hidden)).astype(jnp.bfloat16).astype(jnp.float32)
    w = (jax.random.normal(k[1], (hidden, vocab)) * 0.3).astype(jnp.bfloat16).astype(jnp.float32)
    b = jax.random.normal(k[2], (vocab,)) * 0.1
    t = jax.random.randint(k[3], (rows,), 0, vocab)
    wt = (jax.random.uniform(k[4], (rows,)) < 0.9).astype(jnp.float32)
    return x, w, b, t, wt


def reference(x, w, b, t, wt):
    logp = jax.nn.log_softmax(x @ w + b, axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, t[:, None], -1)[:, 0] * wt)


def autodiff_xent(logits, t, wt):
    """The formulation before the one-pass gradient: autodiff of log_softmax + take_along_axis."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, t[:, None], -1)[:, 0] * wt)


def _bf16_logits(x, w, b):
    return x.astype(jnp.bfloat16) @ w.astype(jnp.bfloat16) + b.astype(jnp.bfloat16)


FORMULATIONS = {
    "kernel": lambda x, w, b, t, wt: kernel_linear_xent(x, w, b, t, wt, "bfloat16"),
    "logits": lambda x, w, b, t, wt: softmax_xent_sum(_bf16_logits(x, w, b), t, wt),
    "autodiff": lambda x, w, b, t, wt: autodiff_xent(_bf16_logits(x, w, b), t, wt),
}


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def check(rows: int, hidden: int, vocab: int, repeats: int, tolerance: float) -> bool:
    """Print each formulation's errors and time; whether every error is within ``tolerance``."""
    args = problem(rows, hidden, vocab, seed=rows + hidden)
    grads = jax.jit(jax.value_and_grad(reference, argnums=(0, 1, 2, 4)))
    want, want_grads = grads(*args)
    print(f"device {jax.devices()[0]}  rows {rows}  hidden {hidden}  vocab {vocab}  bf16")
    ok = True
    for name, fn in FORMULATIONS.items():
        step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 4)))
        loss, got = step(*args)
        errors = [relative_error(loss, want)] + [relative_error(a, e)
                                                 for a, e in zip(got, want_grads)]
        ok &= max(errors) <= tolerance and bool(np.isfinite(errors).all())
        print(f"  {name:>8}: loss {errors[0]:.1e}, gradients "
              f"{', '.join(f'{e:.1e}' for e in errors[1:])}; fwd+bwd "
              f"{median_ms(step, args, repeats):.3f} ms")
    logp = jax.jit(lambda x, w, b, t: kernel_linear_logprobs(x, w, b, t, "bfloat16"))(*args[:4])
    logp_want = jnp.take_along_axis(jax.nn.log_softmax(args[0] @ args[1] + args[2]),
                                    args[3][:, None], -1)[:, 0]
    members = [problem(rows, hidden, vocab, seed) for seed in range(4)]
    fn = jax.value_and_grad(FORMULATIONS["kernel"], argnums=1)
    losses, w_grads = jax.jit(jax.vmap(fn))(*[jnp.stack(a) for a in zip(*members)])
    alone = [jax.jit(fn)(*m) for m in members]
    vmap_error = max(max(relative_error(losses[i], a[0]), relative_error(w_grads[i], a[1]))
                     for i, a in enumerate(alone))
    ok &= relative_error(logp, logp_want) <= tolerance and vmap_error <= tolerance
    print(f"  kernel log-probabilities {relative_error(logp, logp_want):.1e}; under vmap "
          f"(4 members) vs each alone {vmap_error:.1e}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.xent_bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=5376, help="prediction rows (packed)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--vocab", type=int, default=19010, help="vocabulary size")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls (the median)")
    parser.add_argument("--tolerance", type=float, default=2e-2,
                        help="largest relative error accepted (bf16 operands: ~1e-3 to 1e-2)")
    args = parser.parse_args(argv)
    return 0 if check(args.rows, args.hidden, args.vocab, args.repeats, args.tolerance) else 1


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
