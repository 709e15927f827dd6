"""Softmax cross-entropy of the MLM output layer, plain or fused with the output layer.

``softmax_xent_sum`` takes the logits and has its own gradient, ``(softmax - onehot) * weight``
computed in one elementwise pass in the logits' dtype: no float32 ``[N, V]`` log-softmax, one-hot
or scatter buffer (what autodiff of ``log_softmax`` + ``take_along_axis`` writes).

``fused_linear_xent`` computes ``sum_n w_n * CE(x_n @ W + b, t_n)`` in row chunks under
``lax.scan``, so the ``[N, V]`` logits never exist as a whole: each ``[chunk, V]`` block is produced,
reduced and turned into its gradient while it is still in cache. Under differentiation the gradients
with respect to x, W and b are computed in the same pass (the loss is a scalar, so the backward pass
only scales them). This is the fast path on CPU hosts, where passes over a large logits array are
bound by memory bandwidth. On a GPU a scan of small per-chunk kernels is latency-bound: there the
same computation runs as Pallas kernels (:mod:`minilm_jax.model.xent_kernel`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

import minilm_jax.model.target_platform as target_platform


def resolve_loss_impl(impl: str) -> str:
    """``auto`` -> ``fused`` on the CPU backend, ``kernel`` on GPUs (the Pallas output layer of
    :mod:`minilm_jax.model.xent_kernel`), ``logits`` elsewhere (TPU)."""
    if impl == "auto":
        return {"cpu": "fused", "gpu": "kernel"}.get(target_platform.platform(), "logits")
    return impl


def _xent_parts(logits_nv: jax.Array, targets_n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(float32 log-sum-exp per row, float32 target logit per row): reductions over the logits in
    their own dtype, converted inside the reduction's fusion (no float32 copy of the array)."""
    lse_n = jax.nn.logsumexp(logits_nv.astype(jnp.float32), axis=-1)
    picked_n = jnp.take_along_axis(logits_nv, targets_n[:, None], axis=-1)[:, 0]
    return lse_n, picked_n.astype(jnp.float32)


@jax.custom_vjp
def softmax_xent_sum(logits_nv: jax.Array, targets_n: jax.Array, weights_n: jax.Array) -> jax.Array:
    """``sum_n weights_n * (logsumexp(logits_n) - logits_n[targets_n])`` in float32."""
    lse_n, picked_n = _xent_parts(logits_nv, targets_n)
    return jnp.sum((lse_n - picked_n) * weights_n)


def _xent_fwd(logits_nv, targets_n, weights_n):
    lse_n, picked_n = _xent_parts(logits_nv, targets_n)
    nll_n = lse_n - picked_n
    return jnp.sum(nll_n * weights_n), (logits_nv, targets_n, weights_n, lse_n, nll_n)


def _xent_bwd(residuals, g):
    """``d logits = (exp(logits - lse) - onehot) * weight * g`` in one pass, in the logits' dtype."""
    logits_nv, targets_n, weights_n, lse_n, nll_n = residuals
    scale_n1 = (g * weights_n)[:, None]
    probs_nv = jnp.exp(logits_nv.astype(jnp.float32) - lse_n[:, None])
    onehot_nv = jax.lax.broadcasted_iota(jnp.int32, logits_nv.shape, 1) == targets_n[:, None]
    dlogits_nv = ((probs_nv - onehot_nv) * scale_n1).astype(logits_nv.dtype)
    return dlogits_nv, None, (g * nll_n).astype(weights_n.dtype)


softmax_xent_sum.defvjp(_xent_fwd, _xent_bwd)


def _chunked(x_nh, targets_n, weights_n, chunk: int):
    """Rows padded to a multiple of ``chunk`` (weight 0) and laid out ``[num_chunks, chunk, ...]``.

    Chunk j holds rows j, j + k, j + 2k, ...: when the rows are sharded over devices, every chunk
    spreads over all of them instead of sitting on one.
    """
    n = x_nh.shape[0]
    chunk = max(1, min(chunk, n))
    padded = -(-n // chunk) * chunk
    if padded != n:
        pad = padded - n
        x_nh = jnp.pad(x_nh, ((0, pad), (0, 0)))
        targets_n = jnp.pad(targets_n, (0, pad))
        weights_n = jnp.pad(weights_n, (0, pad))
    k = padded // chunk

    def split(a):
        return jnp.swapaxes(a.reshape(chunk, k, *a.shape[1:]), 0, 1)

    return split(x_nh), split(targets_n), split(weights_n), n


def _unchunk(a_kch: jax.Array, n: int) -> jax.Array:
    k, chunk = a_kch.shape[:2]
    return jnp.swapaxes(a_kch, 0, 1).reshape(k * chunk, *a_kch.shape[2:])[:n]


def _block_logits(x_ch, w_hv, b_v, compute_dtype):
    logits_cv = jnp.dot(x_ch.astype(compute_dtype), w_hv.astype(compute_dtype),
                        preferred_element_type=jnp.float32)
    return logits_cv + b_v.astype(jnp.float32)


def _block_nll(logits_cv, t_c):
    """(per-row cross-entropy, exp(logits - row max), its row sum) of one chunk."""
    max_c1 = jnp.max(logits_cv, axis=-1, keepdims=True)
    exp_cv = jnp.exp(logits_cv - max_c1)
    sum_c1 = jnp.sum(exp_cv, axis=-1, keepdims=True)
    picked_c = jnp.take_along_axis(logits_cv, t_c[:, None], axis=-1)[:, 0]
    return max_c1[:, 0] + jnp.log(sum_c1[:, 0]) - picked_c, exp_cv, sum_c1


def fused_linear_logprobs(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                          chunk: int = 128, compute_dtype: str = "float32") -> jax.Array:
    """``log softmax(x_n @ w + b)[targets_n]`` per row (float32 ``[N]``), in row chunks like
    :func:`fused_linear_xent` (no ``[N, V]`` logits; scoring, no gradient)."""
    xs_kch, ts_kc, _, n = _chunked(x_nh, targets_n, jnp.zeros(targets_n.shape, jnp.float32), chunk)

    def body(_, block):
        x_ch, t_c = block
        nll_c, _, _ = _block_nll(_block_logits(x_ch, w_hv, b_v, compute_dtype), t_c)
        return None, -nll_c

    _, logp_kc = jax.lax.scan(body, None, (xs_kch, ts_kc))
    return _unchunk(logp_kc, n)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def fused_linear_xent(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                      weights_n: jax.Array, chunk: int = 128, compute_dtype: str = "float32"
                      ) -> jax.Array:
    """``sum_n weights_n * CE(x_n @ w + b, targets_n)`` without materialising ``[N, V]`` logits."""
    xs_kch, ts_kc, ws_kc, _ = _chunked(x_nh, targets_n, weights_n, chunk)

    def body(loss, block):
        x_ch, t_c, w_c = block
        nll_c, _, _ = _block_nll(_block_logits(x_ch, w_hv, b_v, compute_dtype), t_c)
        return loss + jnp.sum(nll_c * w_c), None

    loss, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (xs_kch, ts_kc, ws_kc))
    return loss


def _fused_fwd(x_nh, w_hv, b_v, targets_n, weights_n, chunk, compute_dtype):
    xs_kch, ts_kc, ws_kc, n = _chunked(x_nh, targets_n, weights_n, chunk)
    cdt = jnp.dtype(compute_dtype)
    # W^T once, outside the loop; the barrier keeps XLA from folding the transpose back into the
    # dot, which would transpose W again in every iteration.
    w_vh = jax.lax.optimization_barrier(w_hv.astype(cdt).T)

    def block(x_ch, t_c, wt_c):
        """One chunk: (nll, d x, d W, d b) with the loss weights applied."""
        logits_cv = _block_logits(x_ch, w_hv, b_v, cdt)
        nll_c, exp_cv, sum_c1 = _block_nll(logits_cv, t_c)
        onehot_cv = jax.lax.broadcasted_iota(jnp.int32, logits_cv.shape, 1) == t_c[:, None]
        dlogits_cv = ((exp_cv / sum_c1 - onehot_cv) * wt_c[:, None]).astype(cdt)
        dx_ch = jnp.dot(dlogits_cv, w_vh, preferred_element_type=jnp.float32)
        dw_hv = jnp.dot(x_ch.astype(cdt).T, dlogits_cv, preferred_element_type=jnp.float32)
        # The bias gradient as a GEMV: a column reduction over [chunk, V] is much slower on CPU.
        db_v = jnp.dot(jnp.ones((1, x_ch.shape[0]), cdt), dlogits_cv,
                       preferred_element_type=jnp.float32)[0]
        return nll_c, dx_ch.astype(x_nh.dtype), dw_hv, db_v

    def body(carry, chunk_inputs):
        dw_hv, db_v, loss = carry
        nll_c, dx_ch, dw_block, db_block = block(*chunk_inputs)
        carry = (dw_hv + dw_block, db_v + db_block, loss + jnp.sum(nll_c * chunk_inputs[2]))
        return carry, (dx_ch, nll_c)

    # The first chunk seeds the accumulators (no zero-filled [H, V] buffer to add into).
    nll_0, dx_0, dw_0, db_0 = block(xs_kch[0], ts_kc[0], ws_kc[0])
    init = (dw_0, db_0, jnp.sum(nll_0 * ws_kc[0]))
    (dw_hv, db_v, loss), (dx_rest, nll_rest) = jax.lax.scan(
        body, init, (xs_kch[1:], ts_kc[1:], ws_kc[1:]))
    dx_kch = jnp.concatenate([dx_0[None], dx_rest], axis=0)
    nll_kc = jnp.concatenate([nll_0[None], nll_rest], axis=0)
    grads = (_unchunk(dx_kch, n), dw_hv.astype(w_hv.dtype), db_v.astype(b_v.dtype),
             _unchunk(nll_kc, n).astype(weights_n.dtype))
    return loss, grads


def _fused_bwd(chunk, compute_dtype, residuals, g):
    """The loss is a scalar: the gradients from the forward pass, scaled by its cotangent."""
    del chunk, compute_dtype
    dx_nh, dw_hv, db_v, dweights_n = residuals
    return ((g * dx_nh).astype(dx_nh.dtype), (g * dw_hv).astype(dw_hv.dtype),
            (g * db_v).astype(db_v.dtype), None, (g * dweights_n).astype(dweights_n.dtype))


fused_linear_xent.defvjp(_fused_fwd, _fused_bwd)
