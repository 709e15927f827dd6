"""The MLM output layer fused with its cross-entropy as Pallas kernels: logits only on chip.

``kernel_linear_xent(x, W, b, targets, weights)`` computes ``sum_n w_n * CE(x_n @ W + b, t_n)``
like :func:`minilm_jax.model.xent.fused_linear_xent`, but each pass is one kernel launch over a
grid of blocks instead of a ``lax.scan`` of small XLA kernels (latency-bound on a GPU):

- forward (grid over row blocks): per row, an online log-sum-exp over vocabulary blocks and the
  target logit; writes two float32 numbers a row;
- backward, rows (grid over row blocks): ``dx = ((softmax - onehot) * w * g) @ W^T``;
- backward, vocabulary (grid over vocabulary blocks): ``dW = x^T @ (...)`` and ``db``.

Each block's logits ``[rows, vocab block]`` are recomputed from ``x`` and ``W`` (as flash attention
recomputes its scores) and never leave registers/shared memory: the step reads ``x`` and ``W`` a
few times and writes ``dx``, ``dW``, ``db``, never a ``[N, V]`` array. Compiled by Triton on GPUs;
elsewhere Pallas' interpreter runs the same kernels (tests on CPU). Hidden sizes above
:data:`MAX_HIDDEN` do not fit a block on chip: :func:`kernel_applies` says so and the caller uses
the XLA formulation.

Rows, vocabulary and hidden size are padded in the wrapper (rows with weight 0, vocabulary columns
masked to -inf, hidden with zeros): ``W``'s pad is a copy of ``[H, V]`` (1.2 MB at the 1.25M point),
not of the logits.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

MAX_HIDDEN = 256  # hidden sizes (padded to a power of two) a block holds on chip
_NEG = -1e30  # logit of a padded vocabulary column (finite: no inf - inf)


def _padded_hidden(h: int) -> int:
    return max(16, 1 << (h - 1).bit_length())


def kernel_applies(hidden: int) -> bool:
    """Whether the kernels take this hidden size (``x``/``W`` blocks fit on chip)."""
    return _padded_hidden(hidden) <= MAX_HIDDEN


def _blocks(hp: int) -> tuple[int, int]:
    """(rows, vocabulary columns) per block for padded hidden size ``hp``."""
    return (64, 128) if hp <= 64 else (32, 64)


def _interpret() -> bool:
    return jax.default_backend() != "gpu"


def _compiler_params():
    if _interpret():
        return None
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=4, num_stages=2)


def _block_logits(x, w, b, j, block_v: int, vocab: int):
    """f32 logits of one ``[rows, block_v]`` block at vocabulary block ``j``, padded columns -inf."""
    logits = jnp.dot(x, w, preferred_element_type=jnp.float32) + b[None, :].astype(jnp.float32)
    cols = j * block_v + jnp.arange(block_v)
    return jnp.where(cols[None, :] < vocab, logits, _NEG), cols


def _forward_kernel(x_ref, w_ref, b_ref, t_ref, lse_ref, tgt_ref, *, block_v: int, vocab: int):
    x, t = x_ref[...], t_ref[...]
    rows = x.shape[0]

    def body(j, carry):
        m, s, picked = carry
        cols_slice = pl.ds(j * block_v, block_v)
        logits, cols = _block_logits(x, w_ref[:, cols_slice], b_ref[cols_slice], j, block_v, vocab)
        m_new = jnp.maximum(m, jnp.max(logits, axis=1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
        picked = picked + jnp.sum(jnp.where(cols[None, :] == t[:, None], logits, 0.0), axis=1)
        return m_new, s, picked

    init = (jnp.full((rows,), _NEG, jnp.float32), jnp.zeros((rows,), jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    m, s, picked = jax.lax.fori_loop(0, w_ref.shape[1] // block_v, body, init)
    lse_ref[...] = m + jnp.log(s)
    tgt_ref[...] = picked


def _dlogits(x, w, b, t, lse, scale, j, block_v: int, vocab: int):
    """``(softmax - onehot) * scale`` of one block, float32."""
    logits, cols = _block_logits(x, w, b, j, block_v, vocab)
    probs = jnp.exp(logits - lse[:, None])
    return (probs - (cols[None, :] == t[:, None]).astype(jnp.float32)) * scale[:, None]


def _dx_kernel(x_ref, w_ref, b_ref, t_ref, lse_ref, scale_ref, dx_ref, *, block_v: int, vocab: int):
    x, t, lse, scale = x_ref[...], t_ref[...], lse_ref[...], scale_ref[...]

    def body(j, acc):
        cols_slice = pl.ds(j * block_v, block_v)
        w = w_ref[:, cols_slice]
        d = _dlogits(x, w, b_ref[cols_slice], t, lse, scale, j, block_v, vocab)
        return acc + jax.lax.dot_general(d.astype(w.dtype), w, (((1,), (1,)), ((), ())),
                                         preferred_element_type=jnp.float32)

    acc = jax.lax.fori_loop(0, w_ref.shape[1] // block_v, body,
                            jnp.zeros(x.shape, jnp.float32))
    dx_ref[...] = acc.astype(dx_ref.dtype)


def _dw_kernel(x_ref, w_ref, b_ref, t_ref, lse_ref, scale_ref, dw_ref, db_ref, *, block_r: int,
               block_v: int, vocab: int):
    j = pl.program_id(0)
    w, b = w_ref[...], b_ref[...]

    def body(i, carry):
        dw, db = carry
        rows = pl.ds(i * block_r, block_r)
        x = x_ref[rows, :]
        d = _dlogits(x, w, b, t_ref[rows], lse_ref[rows], scale_ref[rows], j, block_v, vocab)
        dw = dw + jax.lax.dot_general(x, d.astype(x.dtype), (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)
        return dw, db + jnp.sum(d, axis=0)

    dw, db = jax.lax.fori_loop(0, x_ref.shape[0] // block_r, body,
                               (jnp.zeros(w.shape, jnp.float32), jnp.zeros(b.shape, jnp.float32)))
    dw_ref[...] = dw
    db_ref[...] = db


def _pad(a: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    if a.shape[axis] == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return jnp.pad(a, widths, constant_values=value)


def _prepared(x_nh, w_hv, b_v, targets_n, compute_dtype):
    """Padded operands and the static sizes: (x, W, b, t, (n, h, v, block_r, block_v))."""
    (n, h), v = x_nh.shape, w_hv.shape[1]
    hp = _padded_hidden(h)
    block_r, block_v = _blocks(hp)
    np_, vp = -(-n // block_r) * block_r, -(-v // block_v) * block_v
    cdt = jnp.dtype(compute_dtype)
    x = _pad(_pad(x_nh.astype(cdt), 1, hp), 0, np_)
    w = _pad(_pad(w_hv.astype(cdt), 0, hp), 1, vp)
    b = _pad(b_v.astype(jnp.float32), 0, vp)
    t = _pad(targets_n.astype(jnp.int32), 0, np_)
    return x, w, b, t, (n, h, v, block_r, block_v)


def _forward(x, w, b, t, sizes) -> tuple[jax.Array, jax.Array]:
    """(log-sum-exp, target logit) per padded row, float32."""
    _, _, v, block_r, block_v = sizes
    (np_, hp), vp = x.shape, w.shape[1]
    row = pl.BlockSpec((block_r,), lambda i: (i,))
    return pl.pallas_call(
        partial(_forward_kernel, block_v=block_v, vocab=v),
        out_shape=(jax.ShapeDtypeStruct((np_,), jnp.float32),) * 2,
        grid=(np_ // block_r,),
        in_specs=[pl.BlockSpec((block_r, hp), lambda i: (i, 0)),
                  pl.BlockSpec((hp, vp), lambda i: (0, 0)), pl.BlockSpec((vp,), lambda i: (0,)),
                  row],
        out_specs=(row, row), compiler_params=_compiler_params(), interpret=_interpret(),
        name="mlm_xent_forward")(x, w, b, t)


def kernel_linear_logprobs(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                           compute_dtype: str = "float32") -> jax.Array:
    """``log softmax(x_n @ W + b)[t_n]`` per row (float32 ``[N]``; scoring, no gradient)."""
    x, w, b, t, sizes = _prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    lse, picked = _forward(x, w, b, t, sizes)
    return (picked - lse)[: sizes[0]]


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def kernel_linear_xent(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                       weights_n: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``sum_n weights_n * CE(x_n @ W + b, targets_n)`` (float32 scalar), logits never in memory."""
    return _kernel_fwd(x_nh, w_hv, b_v, targets_n, weights_n, compute_dtype)[0]


def _kernel_fwd(x_nh, w_hv, b_v, targets_n, weights_n, compute_dtype):
    x, w, b, t, sizes = _prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    lse, picked = _forward(x, w, b, t, sizes)
    nll_n = (lse - picked)[: sizes[0]]
    loss = jnp.sum(nll_n * weights_n.astype(jnp.float32))
    return loss, (x_nh, w_hv, b_v, targets_n, weights_n, lse, nll_n)


def _kernel_bwd(compute_dtype, residuals, g):
    x_nh, w_hv, b_v, targets_n, weights_n, lse, nll_n = residuals
    x, w, b, t, sizes = _prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    n, h, v, block_r, block_v = sizes
    (np_, hp), vp = x.shape, w.shape[1]
    scale = _pad(g * weights_n.astype(jnp.float32), 0, np_)
    row = pl.BlockSpec((block_r,), lambda i: (i,))
    full_rows = pl.BlockSpec((np_,), lambda j: (0,))
    dx = pl.pallas_call(
        partial(_dx_kernel, block_v=block_v, vocab=v),
        out_shape=jax.ShapeDtypeStruct((np_, hp), jnp.float32), grid=(np_ // block_r,),
        in_specs=[pl.BlockSpec((block_r, hp), lambda i: (i, 0)),
                  pl.BlockSpec((hp, vp), lambda i: (0, 0)), pl.BlockSpec((vp,), lambda i: (0,)),
                  row, row, row],
        out_specs=pl.BlockSpec((block_r, hp), lambda i: (i, 0)),
        compiler_params=_compiler_params(), interpret=_interpret(),
        name="mlm_xent_dx")(x, w, b, t, lse, scale)
    dw, db = pl.pallas_call(
        partial(_dw_kernel, block_r=block_r, block_v=block_v, vocab=v),
        out_shape=(jax.ShapeDtypeStruct((hp, vp), jnp.float32),
                   jax.ShapeDtypeStruct((vp,), jnp.float32)),
        grid=(vp // block_v,),
        in_specs=[pl.BlockSpec((np_, hp), lambda j: (0, 0)),
                  pl.BlockSpec((hp, block_v), lambda j: (0, j)),
                  pl.BlockSpec((block_v,), lambda j: (j,)), full_rows, full_rows, full_rows],
        out_specs=(pl.BlockSpec((hp, block_v), lambda j: (0, j)),
                   pl.BlockSpec((block_v,), lambda j: (j,))),
        compiler_params=_compiler_params(), interpret=_interpret(),
        name="mlm_xent_dw")(x, w, b, t, lse, scale)
    return (dx[:n, :h].astype(x_nh.dtype), dw[:h, :v].astype(w_hv.dtype), db[:v].astype(b_v.dtype),
            None,
            (g * nll_n).astype(weights_n.dtype))


kernel_linear_xent.defvjp(_kernel_fwd, _kernel_bwd)
