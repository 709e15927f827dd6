"""The MLM output layer fused with its cross-entropy as Pallas kernels: logits only on chip.

``kernel_linear_xent(x, W, b, targets, weights)`` computes ``sum_n w_n * CE(x_n @ W + b, t_n)``
like :func:`minilm_jax.model.xent.fused_linear_xent`, but each pass is one kernel launch over a
grid of blocks instead of a ``lax.scan`` of small XLA kernels (latency-bound on a GPU):

- forward (grid: row blocks x vocabulary splits): per row and split, an online log-sum-exp over
  the split's vocabulary blocks and the target logit (three float32 numbers a row and split,
  combined after the kernel);
- backward, rows (grid: row blocks x vocabulary splits): each split's share of
  ``dx = ((softmax - onehot) * w * g) @ W^T``, summed after;
- backward, vocabulary (grid: vocabulary blocks x row splits): each split's share of
  ``dW = x^T @ (...)`` and ``db``, summed after.

The splits (:func:`layout`) give the grid several programs per streaming multiprocessor: one
program per row block left most of an H100 waiting on a 149-block loop.

Each block's logits ``[rows, vocab block]`` are recomputed from ``x`` and ``W`` (as flash attention
recomputes its scores) and never leave registers/shared memory: the step reads ``x`` and ``W`` a
few times and writes ``dx``, ``dW``, ``db``, never a ``[N, V]`` array. Compiled by Triton on GPUs;
elsewhere Pallas' interpreter runs the same kernels (tests on CPU). Hidden sizes above
:data:`MAX_HIDDEN` do not fit a block on chip: :func:`kernel_applies` says so and the caller uses
the XLA formulation.

Rows, vocabulary and hidden size are padded in the wrapper (rows with weight 0, vocabulary columns
masked to -inf, hidden with zeros): ``W`` and ``b`` are one padded float32 copy ``[H + 1, V]`` (the
bias its last row: one copy instead of two; 2.4 MB at the 1.25M point, each kernel casting the
weight to the compute dtype), not of the logits. The log-sum-exp of a row is never written: the
backward kernels combine the forward's per-split maxima and sums themselves.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import minilm_jax.model.pallas_backend as pallas_backend

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


def _block_logits(x, w, b, j, block_v: int, vocab: int):
    """f32 logits of one ``[rows, block_v]`` block at vocabulary block ``j``, padded columns -inf."""
    logits = jnp.dot(x, w, preferred_element_type=jnp.float32)
    logits = logits + b[None, :].astype(jnp.float32)
    cols = j * block_v + jnp.arange(block_v)
    return jnp.where(cols[None, :] < vocab, logits, _NEG), cols


def _weight_and_bias(wb_ref, cols, cdt) -> tuple[jax.Array, jax.Array]:
    """The weight's columns ``cols`` in the compute dtype ``[H, cols]`` and the bias's (float32)
    from the ``[H + 1, V]`` float32 operand (the bias its last row)."""
    hp = wb_ref.shape[0] - 1
    return wb_ref[pl.ds(0, hp), cols].astype(cdt), wb_ref[hp, cols]


def _forward_kernel(x_ref, wb_ref, t_ref, m_ref, s_ref, tgt_ref, *, block_v: int,
                    per_split: int, vocab: int):
    """Row block i, vocabulary split k: running max, sum of exp and target logit over the split."""
    x, t = x_ref[...], t_ref[...]
    rows, first = x.shape[0], pl.program_id(1) * per_split

    def body(j, carry):
        m, s, picked = carry
        cols_slice = pl.ds((first + j) * block_v, block_v)
        logits, cols = _block_logits(x, *_weight_and_bias(wb_ref, cols_slice, x.dtype),
                                     first + j, block_v, vocab)
        m_new = jnp.maximum(m, jnp.max(logits, axis=1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
        picked = picked + jnp.sum(jnp.where(cols[None, :] == t[:, None], logits, 0.0), axis=1)
        return m_new, s, picked

    init = (jnp.full((rows,), _NEG, jnp.float32), jnp.zeros((rows,), jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    m, s, picked = jax.lax.fori_loop(0, per_split, body, init)
    m_ref[...], s_ref[...], tgt_ref[...] = m, s, picked


def row_lse(m, s) -> jax.Array:
    """Each row's log-sum-exp from the forward's vocabulary splits' running maxima and sums
    ``[splits, rows]`` (float32)."""
    top = jnp.max(m, axis=0)
    return top + jnp.log(jnp.sum(s * jnp.exp(m - top[None]), axis=0))


def _block_lse(m_ref, s_ref, rows, splits: int) -> jax.Array:
    """:func:`row_lse` of the rows ``rows`` inside a kernel (the splits one at a time)."""
    ms = [m_ref[k, rows] for k in range(splits)]
    top = ms[0]
    for m in ms[1:]:
        top = jnp.maximum(top, m)
    total = s_ref[0, rows] * jnp.exp(ms[0] - top)
    for k in range(1, splits):
        total = total + s_ref[k, rows] * jnp.exp(ms[k] - top)
    return top + jnp.log(total)


def _dlogits(x, w, b, t, lse, scale, j, block_v: int, vocab: int):
    """``(softmax - onehot) * scale`` of one block, float32."""
    logits, cols = _block_logits(x, w, b, j, block_v, vocab)
    probs = jnp.exp(logits - lse[:, None])
    return (probs - (cols[None, :] == t[:, None]).astype(jnp.float32)) * scale[:, None]


def _dx_kernel(x_ref, wb_ref, t_ref, m_ref, s_ref, scale_ref, dx_ref, *, block_v: int,
               block_r: int, splits: int, per_split: int, vocab: int):
    """Row block i, vocabulary split k: this split's share of ``dx``."""
    x, t, scale = x_ref[...], t_ref[...], scale_ref[...]
    lse = _block_lse(m_ref, s_ref, pl.ds(pl.program_id(0) * block_r, block_r), splits)
    first = pl.program_id(1) * per_split

    def body(j, acc):
        cols_slice = pl.ds((first + j) * block_v, block_v)
        w, b = _weight_and_bias(wb_ref, cols_slice, x.dtype)
        d = _dlogits(x, w, b, t, lse, scale, first + j, block_v, vocab)
        return acc + jax.lax.dot_general(d.astype(w.dtype), w, (((1,), (1,)), ((), ())),
                                         preferred_element_type=jnp.float32)

    dx_ref[...] = jax.lax.fori_loop(0, per_split, body, jnp.zeros(x.shape, jnp.float32))


def _dw_kernel(x_ref, wb_ref, t_ref, m_ref, s_ref, scale_ref, dw_ref, db_ref, *,
               block_r: int, block_v: int, splits: int, per_split: int, vocab: int):
    """Vocabulary block j, row split k: this split's share of ``dW`` and ``db``."""
    j, first = pl.program_id(0), pl.program_id(1) * per_split
    w, b = _weight_and_bias(wb_ref, slice(None), x_ref.dtype)

    def body(i, carry):
        dw, db = carry
        rows = pl.ds((first + i) * block_r, block_r)
        x = x_ref[rows, :]
        lse = _block_lse(m_ref, s_ref, rows, splits)
        d = _dlogits(x, w, b, t_ref[rows], lse, scale_ref[rows], j, block_v, vocab)
        dw = dw + jax.lax.dot_general(x, d.astype(x.dtype), (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)
        return dw, db + jnp.sum(d, axis=0)

    dw, db = jax.lax.fori_loop(0, per_split, body,
                               (jnp.zeros(w.shape, jnp.float32), jnp.zeros(b.shape, jnp.float32)))
    dw_ref[...] = dw
    db_ref[...] = db


def pad(a: jax.Array, axis: int, size: int) -> jax.Array:
    """``a`` with zeros appended along ``axis`` up to ``size``."""
    if a.shape[axis] == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return jnp.pad(a, widths)


class _Layout(NamedTuple):
    """Static sizes: real rows, hidden and vocabulary; block sizes; how many splits the
    vocabulary (forward, dx) and the rows (dW) are cut into so the grid fills the device."""
    n: int
    h: int
    v: int
    block_r: int
    block_v: int
    v_splits: int
    r_splits: int


def layout(n: int, h: int, v: int) -> _Layout:
    block_r, block_v = _blocks(_padded_hidden(h))
    v_blocks, r_blocks = -(-v // block_v), -(-n // block_r)
    # ~4 blocks of work per program at least; up to 8 splits (a few waves on 132 SMs at 5k rows)
    return _Layout(n, h, v, block_r, block_v, max(1, min(8, v_blocks // 4)),
                   max(1, min(4, r_blocks // 4)))


def prepared(x_nh, w_hv, b_v, targets_n, compute_dtype):
    """Padded operands and their layout: (x in the compute dtype, rows to whole row splits and
    hidden to its power of two; the weight with the bias as its last row ``[H + 1, V]``, float32,
    vocabulary to whole splits (one copy for both, each kernel casts the weight); targets)."""
    (n, h), v = x_nh.shape, w_hv.shape[1]
    lay = layout(n, h, v)
    rows_unit, cols_unit = lay.block_r * lay.r_splits, lay.block_v * lay.v_splits
    np_, vp, hp = -(-n // rows_unit) * rows_unit, -(-v // cols_unit) * cols_unit, _padded_hidden(h)
    cdt = jnp.dtype(compute_dtype)
    x = pad(pad(x_nh.astype(cdt), 1, hp), 0, np_)
    wb = jnp.concatenate([pad(w_hv.astype(jnp.float32), 0, hp),
                          b_v.astype(jnp.float32)[None]], axis=0)
    t = pad(targets_n.astype(jnp.int32), 0, np_)
    return x, pad(wb, 1, vp), t, lay


def forward(x, wb, t, lay: _Layout) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per padded row, float32: the vocabulary splits' running maxima and sums of exponentials
    ``[splits, rows]`` (:func:`row_lse` combines them; the backward kernels combine them
    themselves, so the log-sum-exp is never written) and the target logit ``[rows]``."""
    (np_, hp), vp = x.shape, wb.shape[1]
    splits = lay.v_splits
    row = pl.BlockSpec((lay.block_r,), lambda i, k: (i,))
    part = pl.BlockSpec((None, lay.block_r), lambda i, k: (k, i))
    m, s, picked = pl.pallas_call(
        partial(_forward_kernel, block_v=lay.block_v, per_split=vp // lay.block_v // splits,
                vocab=lay.v),
        out_shape=(jax.ShapeDtypeStruct((splits, np_), jnp.float32),) * 3,
        grid=(np_ // lay.block_r, splits),
        in_specs=[pl.BlockSpec((lay.block_r, hp), lambda i, k: (i, 0)),
                  pl.BlockSpec((hp + 1, vp), lambda i, k: (0, 0)), row],
        out_specs=(part, part, part), compiler_params=pallas_backend.compiler_params(),
        interpret=pallas_backend.interpret(), name="mlm_xent_forward")(x, wb, t)
    return m, s, jnp.sum(picked, axis=0)


def kernel_linear_logprobs(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                           compute_dtype: str = "float32") -> jax.Array:
    """``log softmax(x_n @ W + b)[t_n]`` per row (float32 ``[N]``; scoring, no gradient)."""
    x, wb, t, lay = prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    m, s, picked = forward(x, wb, t, lay)
    return (picked - row_lse(m, s))[: lay.n]


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def kernel_linear_xent(x_nh: jax.Array, w_hv: jax.Array, b_v: jax.Array, targets_n: jax.Array,
                       weights_n: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``sum_n weights_n * CE(x_n @ W + b, targets_n)`` (float32 scalar), logits never in memory."""
    return _kernel_fwd(x_nh, w_hv, b_v, targets_n, weights_n, compute_dtype)[0]


def _kernel_fwd(x_nh, w_hv, b_v, targets_n, weights_n, compute_dtype):
    x, wb, t, lay = prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    m, s, picked = forward(x, wb, t, lay)
    return (weighted_loss(m, s, picked, weights_n),
            (x_nh, w_hv, b_v, targets_n, weights_n, m, s, picked))


def weighted_loss(m, s, picked, weights_n) -> jax.Array:
    """``sum_n w_n (lse_n - picked_n)`` over the real rows (one reduction of the partials)."""
    n = weights_n.shape[0]
    return jnp.sum((row_lse(m, s) - picked)[:n] * weights_n.astype(jnp.float32))


def weights_grad(m, s, picked, weights_n, g) -> jax.Array:
    """The loss's gradient with respect to the weights, ``g * nll_n`` (in their dtype)."""
    return (g * (row_lse(m, s) - picked)[: weights_n.shape[0]]).astype(weights_n.dtype)


def backward_parts(x, wb, t, m, s, scale, lay: _Layout
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The backward kernels on prepared (padded) operands, ``scale`` the padded rows' ``g * w_n``:
    ``dx``'s vocabulary splits ``[splits, padded rows, padded hidden]`` (float32, summed by the
    caller) and ``dW [H, V]``, ``db [V]`` (float32)."""
    (np_, hp), vp = x.shape, wb.shape[1]
    br, bv, vs, rs = lay.block_r, lay.block_v, lay.v_splits, lay.r_splits
    row = pl.BlockSpec((br,), lambda i, k: (i,))
    stats = pl.BlockSpec(m.shape, lambda i, k: (0, 0))
    dx_parts = pl.pallas_call(
        partial(_dx_kernel, block_v=bv, block_r=br, splits=vs, per_split=vp // bv // vs,
                vocab=lay.v),
        out_shape=jax.ShapeDtypeStruct((vs, np_, hp), jnp.float32), grid=(np_ // br, vs),
        in_specs=[pl.BlockSpec((br, hp), lambda i, k: (i, 0)),
                  pl.BlockSpec((hp + 1, vp), lambda i, k: (0, 0)), row, stats, stats, row],
        out_specs=pl.BlockSpec((None, br, hp), lambda i, k: (k, i, 0)),
        compiler_params=pallas_backend.compiler_params(), interpret=pallas_backend.interpret(),
        name="mlm_xent_dx")(x, wb, t, m, s, scale)
    all_rows = pl.BlockSpec((np_,), lambda j, k: (0,))
    stats = pl.BlockSpec(m.shape, lambda j, k: (0, 0))
    dw_parts, db_parts = pl.pallas_call(
        partial(_dw_kernel, block_r=br, block_v=bv, splits=vs, per_split=np_ // br // rs,
                vocab=lay.v),
        out_shape=(jax.ShapeDtypeStruct((rs, hp, vp), jnp.float32),
                   jax.ShapeDtypeStruct((rs, vp), jnp.float32)),
        grid=(vp // bv, rs),
        in_specs=[pl.BlockSpec((np_, hp), lambda j, k: (0, 0)),
                  pl.BlockSpec((hp + 1, bv), lambda j, k: (0, j)), all_rows, stats, stats,
                  all_rows],
        out_specs=(pl.BlockSpec((None, hp, bv), lambda j, k: (k, 0, j)),
                   pl.BlockSpec((None, bv), lambda j, k: (k, j))),
        compiler_params=pallas_backend.compiler_params(), interpret=pallas_backend.interpret(),
        name="mlm_xent_dw")(x, wb, t, m, s, scale)
    h, v = lay.h, lay.v
    return dx_parts, jnp.sum(dw_parts, axis=0)[:h, :v], jnp.sum(db_parts, axis=0)[:v]


def _kernel_bwd(compute_dtype, residuals, g):
    x_nh, w_hv, b_v, targets_n, weights_n, m, s, picked = residuals
    x, wb, t, lay = prepared(x_nh, w_hv, b_v, targets_n, compute_dtype)
    scale = pad(g * weights_n.astype(jnp.float32), 0, x.shape[0])
    dx_parts, dw, db = backward_parts(x, wb, t, m, s, scale, lay)
    dx = jnp.sum(dx_parts, axis=0)[:lay.n, :lay.h]
    return (dx.astype(x_nh.dtype), dw.astype(w_hv.dtype), db.astype(b_v.dtype), None,
            weights_grad(m, s, picked, weights_n, g))


kernel_linear_xent.defvjp(_kernel_fwd, _kernel_bwd)
