"""The Pallas kernels of :mod:`~minilm_jax.model.fused_layer`: one post-LN encoder layer per
sequence, forward and backward, every activation on chip.

Each program takes one sequence ``[T, H]`` and all the layer's weights (loaded whole, cast to the
compute dtype in the kernel; per head and per FFN column block through static ref slices). The
arithmetic follows the unfused layer's rounding points (each linear's product and bias rounded to
the compute dtype, softmax and LayerNorm statistics in float32, dropout in the compute dtype) and
its dropout bits: :func:`~minilm_jax.model.attention_rules.hash_bits`' hash of each element's flat
index in ``[B, A, T, T]`` (probabilities) and ``[B, T, H]`` (both hidden dropouts), keyed by the
seed words the wrapper draws. The backward recomputes everything from the layer's input and writes
``dx`` and this sequence's share of every parameter gradient into one ``[rows, H]`` float32 block
(:class:`Layout` places them), summed over the sequences afterwards.

The in-kernel math (GELU without ``erf``, which Triton does not lower; LayerNorm; the hash
dropout; products in the compute dtype) is :mod:`~minilm_jax.model.kernel_math`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import minilm_jax.model.kernel_math as km
from minilm_jax.model.attention_rules import NEG_INF

_PAD_SCORE = -1e30  # score of a padding key column (beyond the real T): exp() of it is 0
# rows of the per-sequence vector gradients, after the matrices (see Layout.vec_row)
VECTORS = ("bq", "bk", "bv", "bo", "ln1_scale", "ln1_bias", "b2", "ln2_scale", "ln2_bias")


class Layout(NamedTuple):
    """Static sizes and constants: real T and its padded (power-of-two) size, H, heads A, head
    size D, FFN size I; dropout rates and their uint32 thresholds; the score divisor (sqrt(D) in
    the compute dtype, as the unfused path divides); LayerNorm epsilon; compute dtype."""
    t: int
    tp: int
    h: int
    heads: int
    d: int
    i: int
    rate_probs: float
    rate_hidden: float
    thr_probs: int
    thr_hidden: int
    sqrt_d: float
    eps: float
    dtype: str

    @property
    def chunks(self) -> int:
        """FFN column blocks of width H (the FFN runs block by block)."""
        return self.i // self.h

    def row(self, name: str) -> int:
        """First row of a gradient in the per-sequence ``[rows, H]`` block: the four ``[H, H]``
        attention matrices, W1 as I/H ``[H, H]`` column blocks, W2 ``[I, H]``, then one row per
        vector (:data:`VECTORS`) and one per H-wide block of b1."""
        h, i = self.h, self.i
        mats = {"wq": 0, "wk": h, "wv": 2 * h, "wo": 3 * h, "w1": 4 * h, "w2": 4 * h + i}
        if name in mats:
            return mats[name]
        base = 4 * h + 2 * i
        if name == "b1":
            return base + len(VECTORS)
        return base + VECTORS.index(name)

    @property
    def rows(self) -> int:
        return self.row("b1") + self.chunks


class _Seq(NamedTuple):
    """What every step of one program shares: the batch row, the compute dtype, the segment
    rule, the dropout seeds (``None`` without dropout) and the row/column indices."""
    b: jax.Array
    cdt: jnp.dtype
    allowed: jax.Array  # [Tp, Tp] the segment mask
    real_key: jax.Array  # [Tp] columns below the real T
    seeds: tuple | None
    rows: jax.Array  # [Tp]


def _seq(seg_ref, seeds_ref, lay: Layout) -> _Seq:
    seg = seg_ref[...]
    allowed = (seg[:, None] == seg[None, :]) & (seg[None, :] != 0)
    rows = jnp.arange(lay.tp)
    seeds = None
    if lay.rate_probs > 0.0 or lay.rate_hidden > 0.0:
        seeds = tuple(seeds_ref[n] for n in range(6))
    return _Seq(pl.program_id(0), jnp.dtype(lay.dtype), allowed, rows < lay.t, seeds, rows)


def _hidden_keep(sq: _Seq, which: int, lay: Layout):
    """Dropout keep mask ``[Tp, H]`` of the hidden dropout ``which`` (1: attention, 2: FFN) at
    flat indices ``(b * T + t) * H + c``."""
    index = ((sq.b.astype(jnp.uint32) * jnp.uint32(lay.t) + sq.rows.astype(jnp.uint32))[:, None]
             * jnp.uint32(lay.h) + jnp.arange(lay.h).astype(jnp.uint32)[None, :])
    return km.kept(sq.seeds[2 * which], sq.seeds[2 * which + 1], index, lay.thr_hidden)


class _Head(NamedTuple):
    q: jax.Array  # scaled queries [Tp, D] (compute dtype)
    k: jax.Array
    v: jax.Array
    p: jax.Array  # float32 probabilities [Tp, Tp]
    p_drop: jax.Array  # after dropout, compute dtype
    keep: jax.Array | None
    ctx: jax.Array  # [Tp, D] compute dtype


def _head(x, refs, a: int, sq: _Seq, lay: Layout) -> _Head:
    """Head ``a``'s attention of the sequence ``x`` ``[Tp, H]``."""
    wq, bq, wk, bk, wv, bv = refs[:6]
    cols, cdt = pl.ds(a * lay.d, lay.d), sq.cdt
    q = km.linear(x, wq[:, cols], bq[cols], cdt)
    q = (q.astype(jnp.float32) / lay.sqrt_d).astype(cdt)
    k = km.linear(x, wk[:, cols], bk[cols], cdt)
    v = km.linear(x, wv[:, cols], bv[cols], cdt)
    s = km.dot(q, k, cdt, (1, 1))
    s = jnp.where(sq.allowed, s, NEG_INF)
    s = jnp.where(sq.real_key[None, :], s, _PAD_SCORE)
    e = jnp.exp(s - jnp.max(s, axis=1, keepdims=True))
    p = e / jnp.sum(e, axis=1, keepdims=True)
    p_drop, keep = p.astype(cdt), None
    if sq.seeds is not None and lay.rate_probs > 0.0:
        t = jnp.uint32(lay.t)
        base = sq.b.astype(jnp.uint32) * jnp.uint32(lay.heads) + jnp.uint32(a)
        index = ((base * t + sq.rows.astype(jnp.uint32))[:, None] * t
                 + sq.rows.astype(jnp.uint32)[None, :])
        keep = km.kept(sq.seeds[0], sq.seeds[1], index, lay.thr_probs)
        p_drop = km.dropped(p_drop, keep, lay.rate_probs)
    ctx = km.dot(p_drop, v, cdt).astype(cdt)
    return _Head(q, k, v, p, p_drop, keep, ctx)


class _Forward(NamedTuple):
    x1: jax.Array  # first LayerNorm's output, compute dtype [Tp, H]
    y: jax.Array  # the layer's output, float32
    stats: tuple  # (x_hat, inv) of both LayerNorms
    keeps: tuple  # hidden dropout masks (attention, FFN) or Nones


def _forward(x, p, sq: _Seq, lay: Layout, heads: list | None = None) -> _Forward:
    """The layer on one sequence from the parameter refs ``p`` (in :func:`param_order`'s order);
    appends each head's :class:`_Head` to ``heads`` when given."""
    cdt = sq.cdt
    acc = jnp.zeros((lay.tp, lay.h), jnp.float32)
    for a in range(lay.heads):
        hd = _head(x, p, a, sq, lay)
        if heads is not None:
            heads.append(hd)
        acc = acc + km.dot(hd.ctx, p[6][pl.ds(a * lay.d, lay.d), :], cdt)
    attn = acc.astype(cdt) + p[7][...].astype(cdt)[None, :]
    keep_a = keep_f = None
    if sq.seeds is not None and lay.rate_hidden > 0.0:
        keep_a, keep_f = _hidden_keep(sq, 1, lay), _hidden_keep(sq, 2, lay)
        attn = km.dropped(attn, keep_a, lay.rate_hidden)
    y1, xh1, inv1 = km.layer_norm_rows(x + attn, p[8][...], p[9][...], lay.eps)
    x1 = y1.astype(cdt)
    acc = jnp.zeros((lay.tp, lay.h), jnp.float32)
    for c in range(lay.chunks):
        cols = pl.ds(c * lay.h, lay.h)
        u = km.linear(x1, p[10][:, cols], p[11][cols], cdt)
        acc = acc + km.dot(km.gelu(u.astype(jnp.float32)).astype(cdt), p[12][cols, :], cdt)
    ffn = acc.astype(cdt) + p[13][...].astype(cdt)[None, :]
    if keep_f is not None:
        ffn = km.dropped(ffn, keep_f, lay.rate_hidden)
    y2, xh2, inv2 = km.layer_norm_rows(x1 + ffn, p[14][...], p[15][...], lay.eps)
    return _Forward(x1, y2, (xh1, inv1, xh2, inv2), (keep_a, keep_f))


def forward_kernel(*refs, lay: Layout):
    """One sequence: ``x`` ``[Tp, H]`` -> the layer's output."""
    x_ref, seg_ref, seeds_ref, *params, o_ref = refs
    sq = _seq(seg_ref, seeds_ref, lay)
    o_ref[...] = _forward(x_ref[...], params, sq, lay).y.astype(o_ref.dtype)


def _norm_and_dropout_grad(gw_ref, g, stats, scale_ref, keep, n: int, bias: str, lay: Layout):
    """Back through LayerNorm ``n`` (its scale and bias gradients stored) and the hidden dropout
    before it (the sublayer's output bias gradient ``bias`` stored): (the residual's gradient,
    the sublayer output's)."""
    d, d_scale, d_bias = km.layer_norm_rows_grad(g, *stats, scale_ref[...])
    km.store_rows(gw_ref, lay.row(f"ln{n}_scale"), d_scale)
    km.store_rows(gw_ref, lay.row(f"ln{n}_bias"), d_bias)
    d_sub = km.undropped(d, keep, lay.rate_hidden)
    km.store_rows(gw_ref, lay.row(bias), jnp.sum(d_sub, axis=0))
    return d, d_sub


def backward_kernel(*refs, lay: Layout):
    """One sequence: recompute the layer from ``x``, then ``dx`` and this sequence's parameter
    gradients from the output gradient ``g``."""
    x_ref, seg_ref, seeds_ref, g_ref, *rest = refs
    p, dx_ref, gw_ref = rest[:16], rest[16], rest[17]
    sq = _seq(seg_ref, seeds_ref, lay)
    cdt = sq.cdt
    x = x_ref[...]
    fw = _forward(x, p, sq, lay)
    xh1, inv1, xh2, inv2 = fw.stats
    keep_a, keep_f = fw.keeps
    # second LayerNorm, FFN (block by block), first LayerNorm
    d2, dffn = _norm_and_dropout_grad(gw_ref, g_ref[...].astype(jnp.float32), (xh2, inv2), p[14],
                                      keep_f, 2, "b2", lay)
    dx1 = d2
    for c in range(lay.chunks):
        cols = pl.ds(c * lay.h, lay.h)
        w1 = p[10][:, cols]
        u = km.linear(fw.x1, w1, p[11][cols], cdt).astype(jnp.float32)
        act = km.gelu(u).astype(cdt)
        km.store_rows(gw_ref, lay.row("w2") + c * lay.h, km.dot(act, dffn, cdt, (0, 0)))
        du = km.dot(dffn, p[12][cols, :], cdt, (1, 1)) * km.gelu_grad(u)
        km.store_rows(gw_ref, lay.row("b1") + c, jnp.sum(du, axis=0))
        km.store_rows(gw_ref, lay.row("w1") + c * lay.h, km.dot(fw.x1, du, cdt, (0, 0)))
        dx1 = dx1 + km.dot(du, w1, cdt, (1, 1))
    d1, dattn = _norm_and_dropout_grad(gw_ref, dx1, (xh1, inv1), p[8], keep_a, 1, "bo", lay)
    dx = d1
    for a in range(lay.heads):
        hd = _head(x, p, a, sq, lay)
        cols = pl.ds(a * lay.d, lay.d)
        wo = p[6][cols, :]
        km.store_rows(gw_ref, lay.row("wo") + a * lay.d, km.dot(hd.ctx, dattn, cdt, (0, 0)))
        dctx = km.dot(dattn, wo, cdt, (1, 1))
        dv = km.dot(hd.p_drop, dctx, cdt, (0, 0))
        dp = km.undropped(km.dot(dctx, hd.v, cdt, (1, 1)), hd.keep, lay.rate_probs)
        ds = hd.p * (dp - jnp.sum(hd.p * dp, axis=1, keepdims=True))
        ds = jnp.where(sq.allowed, ds, 0.0)
        dq = km.dot(ds, hd.k, cdt) / lay.sqrt_d
        dk = km.dot(ds, hd.q, cdt, (0, 0))
        for name, grad, w in (("q", dq, p[0]), ("k", dk, p[2]), ("v", dv, p[4])):
            km.store_rows(gw_ref, lay.row("w" + name), km.dot(x, grad, cdt, (0, 0)), a * lay.d)
            km.store_rows(gw_ref, lay.row("b" + name), jnp.sum(grad, axis=0), a * lay.d)
            dx = dx + km.dot(grad, w[:, cols], cdt, (1, 1))
    dx_ref[...] = dx.astype(dx_ref.dtype)
