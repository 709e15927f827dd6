"""Self-attention as Pallas kernels: scores, probabilities and the dropout mask only on chip.

``flash_attention(q, k, v, segment_ids, ...)`` computes what the einsum path of
:class:`~minilm_jax.model.layers.SelfAttention` computes, with q, k, v and the result in its
``[B, T, A, D]`` layout (no transposes), but never writes a ``[T, T]`` array to memory:

- forward (grid: batch x heads x query blocks): an online softmax over the key blocks, the
  context and each query row's softmax statistics (its maximum score and the reciprocal of its
  sum of exponentials, ``[B, A, T]`` float32 each, kept for the backward; not their log-sum-exp,
  which rounds to the maximum at a padding row's -1e9 and would lose the row's 1/T);
- backward (custom_vjp): each block's probabilities recomputed from q, k and the statistics; one
  kernel per key block for ``dk``/``dv`` (looping over the query blocks), one per query block for
  ``dq``.

In both, the segment mask is computed from the segment ids (the rule of
:func:`~minilm_jax.model.attention_rules.attention_mask`: query i sees key j iff both sit in the same
non-zero segment) and masked scores are :data:`~minilm_jax.model.attention_rules.NEG_INF`, as in the einsum
path, so a padding query (no key to see) gets its uniform softmax over all real keys too. The
attention dropout is drawn in the kernel from :func:`~minilm_jax.model.attention_rules.hash_bits`' hash of
each element's flat index in ``[B, A, T, T]``: the same mask as ``dropout(probs, rate, key,
"hash")`` for the same key (the two seed words are drawn outside the kernel), so a run with this
path can be resumed by the einsum path and the kernel is checked against it mask for mask. The
batch index is the position in the arrays the kernel sees: under ``shard_map`` it would be the
shard's local index (another mask); under ``jit`` with sharded inputs the call sees the whole batch.

An optional ``score_bias`` ``[A, T, T]`` (float32) is added to the scaled scores before the mask
and the softmax (a position prior). It is a constant to the kernels: its gradient is zero (summing
``dS`` over the batch would need a ``[A, T, T]`` accumulation across programs).

Compiled by Triton on GPUs; elsewhere Pallas' interpreter runs the same kernels (tests on CPU).
The wrapper pads T to whole blocks (padding keys are excluded, padding queries sliced off) and D
to a power of two of at least 16 (zeros); :func:`kernel_applies` says which head sizes fit.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import minilm_jax.model.pallas_backend as pallas_backend
from minilm_jax.model.attention_rules import NEG_INF, mix32

MAX_HEAD_DIM = 128  # head sizes (padded to a power of two) whose blocks fit on chip
_PAD_SCORE = -1e30  # score of a padding key column: exp(_PAD_SCORE - NEG_INF) == 0


def _padded_head_dim(d: int) -> int:
    return max(16, 1 << (d - 1).bit_length())


def kernel_applies(head_dim: int) -> bool:
    """Whether the kernels take this head size (any sequence length: T is cut into blocks)."""
    return _padded_head_dim(head_dim) <= MAX_HEAD_DIM


class _Layout(NamedTuple):
    """Static sizes and constants: real T, heads A and head size D; padded T and D; the query and
    key block sizes; the dropout rate, its uint32 threshold (keep iff bits >= it) and the score
    scale; whether a score bias is given."""
    t: int
    heads: int
    d: int
    tp: int
    dp: int
    block_q: int
    block_k: int
    rate: float
    threshold: int
    scale: float
    has_bias: bool


def _layout(t: int, heads: int, d: int, rate: float, scale: float, has_bias: bool,
            block_q: int | None, block_k: int | None) -> _Layout:
    """Blocks of T's next power of two, 16 to 64 rows, unless given; T padded to whole blocks."""
    default = min(64, max(16, 1 << (t - 1).bit_length()))
    bq, bk = block_q or default, block_k or default
    for name, size in (("block_q", bq), ("block_k", bk)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (got {size})")
    unit = max(bq, bk)
    tp = -(-t // unit) * unit
    threshold = min(round(rate * 2.0**32), 2**32 - 1)
    return _Layout(t, heads, d, tp, _padded_head_dim(d), bq, bk, rate, threshold, scale, has_bias)


def _scores(q, k, seg_q, seg_k, bias, cols, lay: _Layout):
    """Masked float32 scores ``[bq, bk]`` of one block (``q`` already scaled) and where the segment
    mask allows them; padding key columns at :data:`_PAD_SCORE`."""
    s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    allowed = (seg_q[:, None] == seg_k[None, :]) & (seg_k[None, :] != 0)
    s = jnp.where(allowed, s, NEG_INF)
    return jnp.where(cols[None, :] < lay.t, s, _PAD_SCORE), allowed


def _head(lay: _Layout) -> jax.Array:
    """The flat index ``b * A + a`` of this program's (batch row, head): read at the kernel's top
    level (the interpreter substitutes program ids there, not inside loops)."""
    return pl.program_id(0) * lay.heads + pl.program_id(1)


def _kept(seeds_ref, head, rows, cols, lay: _Layout):
    """Where the dropout keeps element (b, a, row, col): ``hash_bits(key, (B, A, T, T))`` at its
    flat index ``((b * A + a) * T + row) * T + col`` (uint32, wrapping as there)."""
    t = jnp.uint32(lay.t)
    index = ((head.astype(jnp.uint32) * t + rows.astype(jnp.uint32))[:, None] * t
             + cols.astype(jnp.uint32)[None, :])
    bits = mix32(mix32(index ^ seeds_ref[0]) + seeds_ref[1])
    return bits >= jnp.uint32(lay.threshold)


def _split_refs(refs, lay: _Layout, outputs: int):
    """(inputs with the bias ref or None last, outputs)."""
    inputs, outs = refs[:len(refs) - outputs], refs[len(refs) - outputs:]
    if not lay.has_bias:
        inputs = (*inputs, None)
    return inputs, outs


def _forward_kernel(*refs, lay: _Layout):
    """Query block i of (b, a): online softmax over the key blocks; context and statistics."""
    (q_ref, k_ref, v_ref, seg_ref, seeds_ref, bias_ref), (o_ref, m_ref, inv_l_ref) = _split_refs(
        refs, lay, 3)
    bq, bk = lay.block_q, lay.block_k
    i, head = pl.program_id(2), _head(lay)
    rows = i * bq + jnp.arange(bq)
    q = (q_ref[...] * lay.scale).astype(q_ref.dtype)
    seg_q = seg_ref[pl.ds(i * bq, bq)]

    def body(j, carry):
        m, l, acc = carry
        keys = pl.ds(j * bk, bk)
        cols = j * bk + jnp.arange(bk)
        bias = None if bias_ref is None else bias_ref[:, keys]
        v = v_ref[keys, :]
        s, _ = _scores(q, k_ref[keys, :], seg_q, seg_ref[keys], bias, cols, lay)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new[:, None])
        l = l * alpha + jnp.sum(p, axis=1)
        if lay.rate > 0.0:
            p = jnp.where(_kept(seeds_ref, head, rows, cols, lay), p, 0.0)
        acc = acc * alpha[:, None] + jnp.dot(p.astype(v.dtype), v,
                                             preferred_element_type=jnp.float32)
        return m_new, l, acc

    init = (jnp.full((bq,), _PAD_SCORE, jnp.float32), jnp.zeros((bq,), jnp.float32),
            jnp.zeros((bq, lay.dp), jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, lay.tp // bk, body, init)
    inv_l = 1.0 / l
    o_ref[...] = (acc * (inv_l * (1.0 / (1.0 - lay.rate)))[:, None]).astype(o_ref.dtype)
    m_ref[...], inv_l_ref[...] = m, inv_l


def _block_grads(q, k, v, do, m, inv_l, delta, seg_q, seg_k, bias, head, rows, cols, seeds_ref,
                 lay: _Layout):
    """One block's (probabilities after dropout, dS): ``dS = P * (dP - delta)`` where the mask
    allows the score, 0 elsewhere (a masked score is a constant)."""
    s, allowed = _scores(q, k, seg_q, seg_k, bias, cols, lay)
    p = jnp.exp(s - m[:, None]) * inv_l[:, None]
    dp = jax.lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    p_dropped = p
    if lay.rate > 0.0:
        kept = _kept(seeds_ref, head, rows, cols, lay)
        inv_keep = 1.0 / (1.0 - lay.rate)
        p_dropped = jnp.where(kept, p * inv_keep, 0.0)
        dp = jnp.where(kept, dp * inv_keep, 0.0)
    return p_dropped, jnp.where(allowed, p * (dp - delta[:, None]), 0.0)


def _dkv_kernel(*refs, lay: _Layout):
    """Key block j of (b, a): ``dk`` and ``dv`` summed over the query blocks."""
    ((q_ref, k_ref, v_ref, do_ref, m_ref, inv_l_ref, delta_ref, seg_ref, seeds_ref, bias_ref),
     (dk_ref, dv_ref)) = _split_refs(refs, lay, 2)
    bq, bk = lay.block_q, lay.block_k
    j, head = pl.program_id(2), _head(lay)
    cols = j * bk + jnp.arange(bk)
    k, v = k_ref[...], v_ref[...]
    seg_k = seg_ref[pl.ds(j * bk, bk)]

    def body(i, carry):
        dk, dv = carry
        queries = pl.ds(i * bq, bq)
        rows = i * bq + jnp.arange(bq)
        q = (q_ref[queries, :] * lay.scale).astype(q_ref.dtype)
        do = do_ref[queries, :]
        bias = None if bias_ref is None else bias_ref[queries, :]
        p, ds = _block_grads(q, k, v, do, m_ref[queries], inv_l_ref[queries], delta_ref[queries],
                             seg_ref[queries], seg_k, bias, head, rows, cols, seeds_ref, lay)
        dv = dv + jax.lax.dot_general(p.astype(do.dtype), do, (((0,), (0,)), ((), ())),
                                      preferred_element_type=jnp.float32)
        dk = dk + jax.lax.dot_general(ds.astype(q.dtype), q, (((0,), (0,)), ((), ())),
                                      preferred_element_type=jnp.float32)
        return dk, dv

    zeros = jnp.zeros((bk, lay.dp), jnp.float32)
    dk, dv = jax.lax.fori_loop(0, lay.tp // bq, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, lay: _Layout):
    """Query block i of (b, a): ``dq`` summed over the key blocks."""
    ((q_ref, k_ref, v_ref, do_ref, m_ref, inv_l_ref, delta_ref, seg_ref, seeds_ref, bias_ref),
     (dq_ref,)) = _split_refs(refs, lay, 1)
    bq, bk = lay.block_q, lay.block_k
    i, head = pl.program_id(2), _head(lay)
    rows = i * bq + jnp.arange(bq)
    q = (q_ref[...] * lay.scale).astype(q_ref.dtype)
    do, m, inv_l, delta = do_ref[...], m_ref[...], inv_l_ref[...], delta_ref[...]
    seg_q = seg_ref[pl.ds(i * bq, bq)]

    def body(j, dq):
        keys = pl.ds(j * bk, bk)
        cols = j * bk + jnp.arange(bk)
        k = k_ref[keys, :]
        bias = None if bias_ref is None else bias_ref[:, keys]
        _, ds = _block_grads(q, k, v_ref[keys, :], do, m, inv_l, delta, seg_q, seg_ref[keys],
                             bias, head, rows, cols, seeds_ref, lay)
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = jax.lax.fori_loop(0, lay.tp // bk, body, jnp.zeros((bq, lay.dp), jnp.float32))
    dq_ref[...] = (dq * lay.scale).astype(dq_ref.dtype)


def _specs(lay: _Layout):
    """BlockSpecs over the grid (b, a, block): one block of rows, all rows of (b, a) for the
    ``[B, T, A, D]`` arrays; the same for ``[B, A, T]`` rows; segment ids, seeds, bias."""
    def rows_block(size):
        return pl.BlockSpec((None, size, None, lay.dp), lambda b, a, n: (b, n, a, 0))

    def row_stats(size):
        return pl.BlockSpec((None, None, size), lambda b, a, n: (b, a, n))

    return {"block_q": rows_block(lay.block_q), "block_k": rows_block(lay.block_k),
            "all": rows_block(lay.tp), "stats_q": row_stats(lay.block_q),
            "stats_all": row_stats(lay.tp),
            "seg": pl.BlockSpec((None, lay.tp), lambda b, a, n: (b, 0)),
            "seeds": pl.BlockSpec((2,), lambda b, a, n: (0,)),
            "bias_q": pl.BlockSpec((None, lay.block_q, lay.tp), lambda b, a, n: (a, n, 0)),
            "bias_k": pl.BlockSpec((None, lay.tp, lay.block_k), lambda b, a, n: (a, 0, n))}


def _call(kernel, lay: _Layout, grid_rows: int, in_specs, bias, out_specs, out_shape, name):
    specs = list(in_specs) + ([bias] if lay.has_bias else [])
    return pl.pallas_call(partial(kernel, lay=lay), out_shape=out_shape,
                          grid=(out_shape[0].shape[0], lay.heads, lay.tp // grid_rows),
                          in_specs=specs, out_specs=out_specs,
                          compiler_params=pallas_backend.compiler_params(),
                          interpret=pallas_backend.interpret(), name=name)


def _forward(q, k, v, seg, seeds, bias, lay: _Layout):
    """(context ``[B, Tp, A, Dp]`` in q's dtype, each row's maximum score and reciprocal sum of
    exponentials ``[B, A, Tp]`` float32)."""
    sp = _specs(lay)
    stats = jax.ShapeDtypeStruct((q.shape[0], lay.heads, lay.tp), jnp.float32)
    out_shape = (jax.ShapeDtypeStruct(q.shape, q.dtype), stats, stats)
    args = (q, k, v, seg, seeds) + ((bias,) if lay.has_bias else ())
    return _call(_forward_kernel, lay, lay.block_q,
                 [sp["block_q"], sp["all"], sp["all"], sp["seg"], sp["seeds"]], sp["bias_q"],
                 (sp["block_q"], sp["stats_q"], sp["stats_q"]), out_shape,
                 "flash_attention_forward")(*args)


@partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention(q, k, v, seg, seeds, bias, lay: _Layout):
    return _forward(q, k, v, seg, seeds, bias, lay)[0]


def _attention_fwd(q, k, v, seg, seeds, bias, lay: _Layout):
    o, m, inv_l = _forward(q, k, v, seg, seeds, bias, lay)
    return o, (q, k, v, seg, seeds, bias, o, m, inv_l)


def _attention_bwd(lay: _Layout, residuals, do):
    q, k, v, seg, seeds, bias, o, m, inv_l = residuals
    sp = _specs(lay)
    # delta_i = sum_j P_ij dP_ij = dO_i . O_i (O with its dropout): [B, A, Tp] float32
    delta = jnp.einsum("btad,btad->bat", o.astype(jnp.float32), do.astype(jnp.float32))
    args = (q, k, v, do, m, inv_l, delta, seg, seeds) + ((bias,) if lay.has_bias else ())
    like = jax.ShapeDtypeStruct(q.shape, q.dtype)
    dk, dv = _call(_dkv_kernel, lay, lay.block_k,
                   [sp["all"], sp["block_k"], sp["block_k"], sp["all"], sp["stats_all"],
                    sp["stats_all"], sp["stats_all"], sp["seg"], sp["seeds"]], sp["bias_k"],
                   (sp["block_k"], sp["block_k"]), (like, like), "flash_attention_dkv")(*args)
    (dq,) = _call(_dq_kernel, lay, lay.block_q,
                  [sp["block_q"], sp["all"], sp["all"], sp["block_q"], sp["stats_q"],
                   sp["stats_q"], sp["stats_q"], sp["seg"], sp["seeds"]], sp["bias_q"],
                  (sp["block_q"],), (like,), "flash_attention_dq")(*args)
    return dq, dk, dv, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _pad(a: jax.Array, sizes: dict[int, int]) -> jax.Array:
    """``a`` with zeros appended along each axis in ``sizes`` up to its size (no copy if none)."""
    widths = [(0, sizes.get(axis, n) - n) for axis, n in enumerate(a.shape)]
    return a if not any(w for _, w in widths) else jnp.pad(a, widths)


def flash_attention(q_btad: jax.Array, k_btad: jax.Array, v_btad: jax.Array,
                    segment_ids_bt: jax.Array, *, dropout_rate: float = 0.0,
                    dropout_key: jax.Array | None = None, score_bias: jax.Array | None = None,
                    scale: float | None = None, block_q: int | None = None,
                    block_k: int | None = None) -> jax.Array:
    """Context ``[B, T, A, D]`` (q's dtype) of ``softmax(scale * q k^T + bias, masked)`` with the
    probabilities' hash dropout (``dropout_rate`` > 0 and a ``dropout_key``; none otherwise).

    ``segment_ids_bt`` ``[B, T]``: 0 padding, packed documents 1, 2, ...; ``score_bias``
    ``[A, T, T]`` float32 or None, a constant (zero gradient); ``scale`` defaults to
    ``1 / sqrt(D)``; ``block_q``/``block_k`` (powers of two >= 16) override the block sizes."""
    b, t, heads, d = q_btad.shape
    if k_btad.shape != q_btad.shape or v_btad.shape != q_btad.shape:
        raise ValueError(f"q, k, v must have one shape [B, T, A, D] (got {q_btad.shape}, "
                         f"{k_btad.shape}, {v_btad.shape})")
    if segment_ids_bt.shape != (b, t):
        raise ValueError(f"segment_ids must be [B, T] = {(b, t)} (got {segment_ids_bt.shape})")
    if not kernel_applies(d):
        raise ValueError(f"flash attention takes head sizes up to {MAX_HEAD_DIM} (got {d})")
    if score_bias is not None and score_bias.shape != (heads, t, t):
        raise ValueError(f"score_bias must be [A, T, T] = {(heads, t, t)} "
                         f"(got {score_bias.shape})")
    rate = float(dropout_rate) if dropout_key is not None else 0.0
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1) (got {rate})")
    lay = _layout(t, heads, d, rate, float(d ** -0.5 if scale is None else scale),
                  score_bias is not None, block_q, block_k)
    seeds = (jax.random.bits(dropout_key, (2,), jnp.uint32) if rate > 0.0
             else jnp.zeros((2,), jnp.uint32))
    q, k, v = (_pad(x, {1: lay.tp, 3: lay.dp}) for x in (q_btad, k_btad, v_btad))
    seg = _pad(segment_ids_bt.astype(jnp.int32), {1: lay.tp})
    bias = None
    if score_bias is not None:
        bias = _pad(jax.lax.stop_gradient(score_bias).astype(jnp.float32), {1: lay.tp, 2: lay.tp})
    return _attention(q, k, v, seg, seeds, bias, lay)[:, :t, :, :d]
