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

Pallas' Triton lowering has no ``erf``: :func:`erf` is XLA's float32 rational approximation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from minilm_jax.model.attention_rules import NEG_INF, mix32

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


def threshold(rate: float) -> int:
    """Keep an element iff its bits are >= this (as ``layers.dropout`` with ``rng="hash"``)."""
    return min(round(rate * 2.0**32), 2**32 - 1)


def erf(x: jax.Array) -> jax.Array:
    """float32 ``erf`` as XLA computes it: ``x P(x^2) / Q(x^2)`` on ``[-4, 4]`` (error ~1e-7)."""
    alpha = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
             -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
             -1.60960333262415e-02)
    beta = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
            -7.37332916720468e-03, -1.42647390514189e-02)
    x = jnp.clip(x, -4.0, 4.0)
    x2 = x * x
    p = jnp.full_like(x, alpha[0])
    for c in alpha[1:]:
        p = p * x2 + c
    q = jnp.full_like(x, beta[0])
    for c in beta[1:]:
        q = q * x2 + c
    return x * p / q


def gelu(u: jax.Array) -> jax.Array:
    """Exact GELU of float32 ``u``."""
    return 0.5 * u * (1.0 + erf(u * (1.0 / math.sqrt(2.0))))


def gelu_grad(u: jax.Array) -> jax.Array:
    """d GELU / du of float32 ``u``."""
    return (0.5 * (1.0 + erf(u * (1.0 / math.sqrt(2.0))))
            + u * jnp.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi)))


def _kept(seed0, seed1, index, thr: int):
    return mix32(mix32(index ^ seed0) + seed1) >= jnp.uint32(thr)


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


def _dot(a, b, cdt, contract=(1, 0)):
    """float32 product of ``a`` and ``b`` (cast to the compute dtype) over the given axes."""
    return jax.lax.dot_general(a.astype(cdt), b.astype(cdt), (((contract[0],), (contract[1],)),
                                                             ((), ())),
                               preferred_element_type=jnp.float32)


def _linear(x, w, b, cdt):
    """``x @ w + b`` rounded as ``nnx.Linear`` in the compute dtype (product, then sum)."""
    return _dot(x, w, cdt).astype(cdt) + b.astype(cdt)


def _hidden_keep(sq: _Seq, which: int, lay: Layout):
    """Dropout keep mask ``[Tp, H]`` of the hidden dropout ``which`` (1: attention, 2: FFN) at
    flat indices ``(b * T + t) * H + c``."""
    index = ((sq.b.astype(jnp.uint32) * jnp.uint32(lay.t) + sq.rows.astype(jnp.uint32))[:, None]
             * jnp.uint32(lay.h) + jnp.arange(lay.h).astype(jnp.uint32)[None, :])
    return _kept(sq.seeds[2 * which], sq.seeds[2 * which + 1], index, lay.thr_hidden)


def _drop(x, keep, rate: float, cdt):
    """Inverted dropout of ``x`` in the compute dtype (as ``layers.dropout``)."""
    return jnp.where(keep, (x.astype(jnp.float32) / (1.0 - rate)).astype(cdt),
                     jnp.zeros_like(x))


def _layer_norm(y, scale, bias, eps):
    """float32 LayerNorm over the last axis: (output, normalised x, 1 / std)."""
    y = y.astype(jnp.float32)
    centred = y - jnp.mean(y, axis=1, keepdims=True)
    inv = jax.lax.rsqrt(jnp.mean(centred * centred, axis=1, keepdims=True) + eps)
    x_hat = centred * inv
    y = x_hat * scale[None, :].astype(jnp.float32) + bias[None, :].astype(jnp.float32)
    return y, x_hat, inv


def _layer_norm_grad(g, x_hat, inv, scale):
    """(dx, dscale, dbias) of the LayerNorm for output gradient ``g`` (float32)."""
    gs = g * scale[None, :].astype(jnp.float32)
    dx = inv * (gs - jnp.mean(gs, axis=1, keepdims=True)
                - x_hat * jnp.mean(gs * x_hat, axis=1, keepdims=True))
    return dx, jnp.sum(g * x_hat, axis=0), jnp.sum(g, axis=0)


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
    q = _linear(x, wq[:, cols], bq[cols], cdt)
    q = (q.astype(jnp.float32) / lay.sqrt_d).astype(cdt)
    k = _linear(x, wk[:, cols], bk[cols], cdt)
    v = _linear(x, wv[:, cols], bv[cols], cdt)
    s = _dot(q, k, cdt, (1, 1))
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
        keep = _kept(sq.seeds[0], sq.seeds[1], index, lay.thr_probs)
        p_drop = _drop(p_drop, keep, lay.rate_probs, cdt)
    ctx = _dot(p_drop, v, cdt).astype(cdt)
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
        acc = acc + _dot(hd.ctx, p[6][pl.ds(a * lay.d, lay.d), :], cdt)
    attn = acc.astype(cdt) + p[7][...].astype(cdt)[None, :]
    keep_a = keep_f = None
    if sq.seeds is not None and lay.rate_hidden > 0.0:
        keep_a, keep_f = _hidden_keep(sq, 1, lay), _hidden_keep(sq, 2, lay)
        attn = _drop(attn, keep_a, lay.rate_hidden, cdt)
    y1, xh1, inv1 = _layer_norm(x + attn, p[8][...], p[9][...], lay.eps)
    x1 = y1.astype(cdt)
    acc = jnp.zeros((lay.tp, lay.h), jnp.float32)
    for c in range(lay.chunks):
        cols = pl.ds(c * lay.h, lay.h)
        u = _linear(x1, p[10][:, cols], p[11][cols], cdt)
        acc = acc + _dot(gelu(u.astype(jnp.float32)).astype(cdt), p[12][cols, :], cdt)
    ffn = acc.astype(cdt) + p[13][...].astype(cdt)[None, :]
    if keep_f is not None:
        ffn = _drop(ffn, keep_f, lay.rate_hidden, cdt)
    y2, xh2, inv2 = _layer_norm(x1 + ffn, p[14][...], p[15][...], lay.eps)
    return _Forward(x1, y2, (xh1, inv1, xh2, inv2), (keep_a, keep_f))


def forward_kernel(*refs, lay: Layout):
    """One sequence: ``x`` ``[Tp, H]`` -> the layer's output."""
    x_ref, seg_ref, seeds_ref, *params, o_ref = refs
    sq = _seq(seg_ref, seeds_ref, lay)
    o_ref[...] = _forward(x_ref[...], params, sq, lay).y.astype(o_ref.dtype)


def _undrop(g, keep, rate: float):
    """The gradient through inverted dropout (float32)."""
    return g if keep is None else jnp.where(keep, g / (1.0 - rate), 0.0)


def _store_rows(ref, row: int, value, col: int = 0):
    """Write ``value`` ``[n, m]`` (or a vector as one row) at (row, col) of the gradient block."""
    if value.ndim == 1:
        value = value[None, :]
    ref[pl.ds(row, value.shape[0]), pl.ds(col, value.shape[1])] = value


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
    d2, ds2, db2 = _layer_norm_grad(g_ref[...].astype(jnp.float32), xh2, inv2, p[14][...])
    _store_rows(gw_ref, lay.row("ln2_scale"), ds2)
    _store_rows(gw_ref, lay.row("ln2_bias"), db2)
    dffn = _undrop(d2, keep_f, lay.rate_hidden)
    _store_rows(gw_ref, lay.row("b2"), jnp.sum(dffn, axis=0))
    dx1 = d2
    for c in range(lay.chunks):
        cols = pl.ds(c * lay.h, lay.h)
        w1 = p[10][:, cols]
        u = _linear(fw.x1, w1, p[11][cols], cdt).astype(jnp.float32)
        act = gelu(u).astype(cdt)
        _store_rows(gw_ref, lay.row("w2") + c * lay.h, _dot(act, dffn, cdt, (0, 0)))
        du = _dot(dffn, p[12][cols, :], cdt, (1, 1)) * gelu_grad(u)
        _store_rows(gw_ref, lay.row("b1") + c, jnp.sum(du, axis=0))
        _store_rows(gw_ref, lay.row("w1") + c * lay.h, _dot(fw.x1, du, cdt, (0, 0)))
        dx1 = dx1 + _dot(du, w1, cdt, (1, 1))
    d1, ds1, db1 = _layer_norm_grad(dx1, xh1, inv1, p[8][...])
    _store_rows(gw_ref, lay.row("ln1_scale"), ds1)
    _store_rows(gw_ref, lay.row("ln1_bias"), db1)
    dattn = _undrop(d1, keep_a, lay.rate_hidden)
    _store_rows(gw_ref, lay.row("bo"), jnp.sum(dattn, axis=0))
    dx = d1
    for a in range(lay.heads):
        hd = _head(x, p, a, sq, lay)
        cols = pl.ds(a * lay.d, lay.d)
        wo = p[6][cols, :]
        _store_rows(gw_ref, lay.row("wo") + a * lay.d, _dot(hd.ctx, dattn, cdt, (0, 0)))
        dctx = _dot(dattn, wo, cdt, (1, 1))
        dv = _dot(hd.p_drop, dctx, cdt, (0, 0))
        dp = _undrop(_dot(dctx, hd.v, cdt, (1, 1)), hd.keep, lay.rate_probs)
        ds = hd.p * (dp - jnp.sum(hd.p * dp, axis=1, keepdims=True))
        ds = jnp.where(sq.allowed, ds, 0.0)
        dq = _dot(ds, hd.k, cdt) / lay.sqrt_d
        dk = _dot(ds, hd.q, cdt, (0, 0))
        for name, grad, w in (("q", dq, p[0]), ("k", dk, p[2]), ("v", dv, p[4])):
            _store_rows(gw_ref, lay.row("w" + name), _dot(x, grad, cdt, (0, 0)), a * lay.d)
            _store_rows(gw_ref, lay.row("b" + name), jnp.sum(grad, axis=0), a * lay.d)
            dx = dx + _dot(grad, w[:, cols], cdt, (1, 1))
    dx_ref[...] = dx.astype(dx_ref.dtype)
