"""The MLM head's transform (dense -> exact GELU -> LayerNorm on the gathered rows) and its output
layer with cross-entropy as one differentiable function of Pallas kernels.

``kernel_head_xent(rows, dense W, dense b, norm scale, norm bias, decoder W, decoder b, targets,
weights)`` equals ``kernel_linear_xent(norm(gelu(rows @ W + b)), ...)`` (:mod:`~minilm_jax.model.
xent_kernel`), but the transform is one kernel forward (grid: row blocks) and one backward, instead
of XLA's GEMMs, GELU, LayerNorm statistics and their gradients' reductions (~12 launches on a GPU):

- forward: per row block, the transform on chip, its output written once for the output layer's
  kernels (which read it as their ``x``);
- backward: per row block, the output layer's ``dx`` splits summed, the transform recomputed and
  differentiated: the rows' gradient, and this block's share of the dense weight, dense bias,
  scale and bias gradients in one ``[blocks, 2H, H]`` buffer (rows ``0..H-1`` the weight, ``H``,
  ``H+1``, ``H+2`` the vectors), summed by one reduction after the kernel.

The dense layer's roundings are the unfused head's in the compute dtype (the product rounded, the
bias added and rounded, GELU's output rounded), the rest float32. Hidden sizes that are powers of
two from 16 to :data:`MAX_HIDDEN` (the weight and a row block on chip; :func:`head_kernel_applies`);
off a GPU Pallas' interpreter runs the same kernels.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import minilm_jax.model.kernel_math as kernel_math
import minilm_jax.model.pallas_backend as pallas_backend
import minilm_jax.model.xent_kernel as xent_kernel

MAX_HIDDEN = 128  # the [H, H] dense weight and a [rows, H] block in shared memory


def head_kernel_applies(hidden: int) -> bool:
    """Whether the transform's kernels take this hidden size (a power of two, 16 to 128)."""
    return 16 <= hidden <= MAX_HIDDEN and hidden & (hidden - 1) == 0


def _rounded(x: jax.Array, dtype) -> jax.Array:
    """``x`` rounded to ``dtype`` and back to float32 (the unfused head's intermediate dtype)."""
    return x.astype(dtype).astype(jnp.float32)


def _transform(x, w, b, scale, bias, eps: float, cdt):
    """(dense output z, transformed rows y, x_hat, inv_std) of a block, float32."""
    z = jnp.dot(x.astype(cdt), w.astype(cdt), preferred_element_type=jnp.float32)
    z = _rounded(_rounded(z, cdt) + _rounded(b, cdt), cdt)
    a = _rounded(kernel_math.gelu(z), cdt)
    y, x_hat, inv_std = kernel_math.layer_norm_rows(a, scale.astype(jnp.float32),
                                                    bias.astype(jnp.float32), eps)
    return z, y, x_hat, inv_std


def _forward_kernel(x_ref, w_ref, b_ref, s_ref, t_ref, y_ref, *, eps: float, cdt):
    y = _transform(x_ref[...], w_ref[...], b_ref[...], s_ref[...], t_ref[...], eps, cdt)[1]
    y_ref[...] = y.astype(y_ref.dtype)


def _backward_kernel(x_ref, w_ref, b_ref, s_ref, t_ref, dy_ref, dx_ref, part_ref, *, eps: float,
                     cdt, splits: int):
    x, w, scale = x_ref[...], w_ref[...], s_ref[...]
    z, _, x_hat, inv_std = _transform(x, w, b_ref[...], scale, t_ref[...], eps, cdt)
    dy = dy_ref[0]
    for k in range(1, splits):  # the output layer's dx, one share per vocabulary split
        dy = dy + dy_ref[k]
    da, d_scale, d_bias = kernel_math.layer_norm_rows_grad(dy, x_hat, inv_std,
                                                           scale.astype(jnp.float32))
    dz = da * kernel_math.gelu_grad(z)
    dz_c = dz.astype(cdt)
    dx_ref[...] = jax.lax.dot_general(dz_c, w.astype(cdt), (((1,), (1,)), ((), ())),
                                      preferred_element_type=jnp.float32).astype(dx_ref.dtype)
    h = w.shape[0]
    part_ref[pl.ds(0, h), :] = jax.lax.dot_general(x.astype(cdt), dz_c, (((0,), (0,)), ((), ())),
                                                   preferred_element_type=jnp.float32)
    part_ref[h, :] = jnp.sum(dz, axis=0)
    part_ref[h + 1, :] = d_scale
    part_ref[h + 2, :] = d_bias


def _vector(h: int) -> pl.BlockSpec:
    return pl.BlockSpec((h,), lambda i: (0,))


def _transform_forward(x, w, b, scale, bias, eps: float, cdt, block_r: int) -> jax.Array:
    (n, h), cdt = x.shape, jnp.dtype(cdt)
    return pl.pallas_call(
        partial(_forward_kernel, eps=eps, cdt=cdt),
        out_shape=jax.ShapeDtypeStruct((n, h), cdt), grid=(n // block_r,),
        in_specs=[pl.BlockSpec((block_r, h), lambda i: (i, 0)),
                  pl.BlockSpec((h, h), lambda i: (0, 0)), _vector(h), _vector(h), _vector(h)],
        out_specs=pl.BlockSpec((block_r, h), lambda i: (i, 0)),
        compiler_params=pallas_backend.compiler_params(), interpret=pallas_backend.interpret(),
        name="mlm_head_forward")(x, w, b, scale, bias)


def _transform_backward(x, w, b, scale, bias, dy_parts, eps: float, cdt, block_r: int):
    """(rows' gradient [N, H] in x's dtype, each row block's weight and vector gradients)."""
    (n, h), splits = x.shape, dy_parts.shape[0]
    blocks = n // block_r
    return pl.pallas_call(
        partial(_backward_kernel, eps=eps, cdt=jnp.dtype(cdt), splits=splits),
        out_shape=(jax.ShapeDtypeStruct((n, h), x.dtype),
                   jax.ShapeDtypeStruct((blocks, 2 * h, h), jnp.float32)),
        grid=(blocks,),
        in_specs=[pl.BlockSpec((block_r, h), lambda i: (i, 0)),
                  pl.BlockSpec((h, h), lambda i: (0, 0)), _vector(h), _vector(h), _vector(h),
                  pl.BlockSpec((splits, block_r, h), lambda i: (0, i, 0))],
        out_specs=(pl.BlockSpec((block_r, h), lambda i: (i, 0)),
                   pl.BlockSpec((None, 2 * h, h), lambda i: (i, 0, 0))),
        compiler_params=pallas_backend.compiler_params(), interpret=pallas_backend.interpret(),
        name="mlm_head_backward")(x, w, b, scale, bias, dy_parts)


@partial(jax.custom_vjp, nondiff_argnums=(9, 10))
def kernel_head_xent(rows_nh: jax.Array, dense_w: jax.Array, dense_b: jax.Array,
                     norm_scale: jax.Array, norm_bias: jax.Array, w_hv: jax.Array, b_v: jax.Array,
                     targets_n: jax.Array, weights_n: jax.Array, eps: float,
                     compute_dtype: str = "float32") -> jax.Array:
    """``sum_n weights_n * CE(norm(gelu(rows_n @ dense_w + dense_b)) @ W + b, targets_n)``
    (float32 scalar): the head's transform and output layer, no ``[N, V]`` array in memory."""
    return _head_fwd(rows_nh, dense_w, dense_b, norm_scale, norm_bias, w_hv, b_v, targets_n,
                     weights_n, eps, compute_dtype)[0]


def _head_fwd(rows_nh, dense_w, dense_b, norm_scale, norm_bias, w_hv, b_v, targets_n, weights_n,
              eps, compute_dtype):
    x, wb, t, lay = xent_kernel.prepared(rows_nh, w_hv, b_v, targets_n, compute_dtype)
    params = (dense_w, dense_b, norm_scale, norm_bias)
    y = _transform_forward(x, *params, eps, compute_dtype, lay.block_r)
    m, s, picked = xent_kernel.forward(y, wb, t, lay)
    return (xent_kernel.weighted_loss(m, s, picked, weights_n),
            (rows_nh, x, y, wb, t, m, s, picked, params, w_hv, b_v, weights_n))


def _head_bwd(eps, compute_dtype, residuals, g):
    rows_nh, x, y, wb, t, m, s, picked, params, w_hv, b_v, weights_n = residuals
    lay = xent_kernel.layout(rows_nh.shape[0], rows_nh.shape[1], b_v.shape[0])
    scale = xent_kernel.pad(g * weights_n.astype(jnp.float32), 0, x.shape[0])
    dy_parts, dw, db = xent_kernel.backward_parts(y, wb, t, m, s, scale, lay)
    dx, parts = _transform_backward(x, *params, dy_parts, eps, compute_dtype, lay.block_r)
    h = x.shape[1]
    sums = jnp.sum(parts, axis=0)
    dense_w, dense_b, norm_scale, norm_bias = params
    return (dx[: lay.n].astype(rows_nh.dtype), sums[:h].astype(dense_w.dtype),
            sums[h].astype(dense_b.dtype), sums[h + 1].astype(norm_scale.dtype),
            sums[h + 2].astype(norm_bias.dtype), dw.astype(w_hv.dtype), db.astype(b_v.dtype),
            None, xent_kernel.weights_grad(m, s, picked, weights_n, g))


kernel_head_xent.defvjp(_head_fwd, _head_bwd)
