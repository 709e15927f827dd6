"""The encoder's embedding block as two Pallas kernels (``model.layer_impl`` "fused"): word +
position + token-type embeddings -> LayerNorm -> hash dropout -> (projection E -> H -> LayerNorm),
what :meth:`~minilm_jax.model.encoder.TransformerEncoder.embed`
computes, in one kernel forward and one backward where XLA runs ~25 on a GPU.

The sum of the three tables' rows is one XLA gather; a grid of one program per sequence then runs
the rest on chip. The backward recomputes from that sum and writes, per sequence, one float32
``[rows, max(E, H)]`` block: the rows' gradient (rows ``0 .. Tp-1``: each sequence's share of the
position table's gradient, and what the word table's scatter-add reads), the first LayerNorm's
scale and bias, the token-type table's rows, the projection's weight and bias and the second
LayerNorm's: one reduction over the sequences gives every table's and parameter's gradient but
the word table's. The dropout mask is ``layers.dropout(..., "hash")``'s for the same key (flat
index ``(b * T + t) * E + c``), so the two paths are one function (:mod:`tests.test_embed_kernel`).

Bounds (:func:`unsupported`): E and H powers of two in [16, :data:`MAX_WIDTH`], at most
:data:`MAX_TYPES` token types, T a multiple of 16 up to :data:`MAX_SEQ` (padded to a power of two).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import minilm_jax.model.kernel_math as km
import minilm_jax.model.pallas_backend as pallas_backend

MAX_WIDTH = 128
MAX_SEQ = 512
MAX_TYPES = 8


class Layout(NamedTuple):
    """Static sizes and constants; the rows of the per-sequence gradient block."""
    t: int
    tp: int
    e: int
    h: int
    types: int
    projection: bool
    rate: float
    threshold: int
    eps: float
    dtype: str

    @property
    def width(self) -> int:
        return max(self.e, self.h)

    def row(self, name: str) -> int:
        """First row of a gradient in the block: the rows' gradient (Tp rows), LayerNorm 1's scale
        and bias, the token types (one row each), then the projection's ``[E, H]`` weight, its
        bias and LayerNorm 2's scale and bias."""
        order = {"rows": 0, "ln1_scale": self.tp, "ln1_bias": self.tp + 1, "types": self.tp + 2,
                 "wp": self.tp + 2 + self.types}
        if name in order:
            return order[name]
        return order["wp"] + self.e + ("bp", "ln2_scale", "ln2_bias").index(name)

    @property
    def rows(self) -> int:
        return self.row("ln2_bias") + 1 if self.projection else self.row("wp")


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def unsupported(t: int, emb: int, hidden: int, types: int) -> str | None:
    """Why the kernels cannot take these sizes (None: they can)."""
    if t % 16 or t > MAX_SEQ:
        return f"the sequence length must be a multiple of 16 up to {MAX_SEQ} (got {t})"
    for name, width in (("emb_dim", emb), ("hidden_dim", hidden)):
        if not (_pow2(width) and 16 <= width <= MAX_WIDTH):
            return f"{name} must be a power of two in [16, {MAX_WIDTH}] (got {width})"
    if types > MAX_TYPES:
        return f"type_vocab_size must be at most {MAX_TYPES} (got {types})"
    return None


def _forward(x, seeds_ref, p, lay: Layout):
    """(output, first LayerNorm's (x_hat, 1/std), keep mask, dropped rows in the compute dtype,
    projection (z, x_hat, 1/std)) of one sequence's embedding sum ``x`` ``[Tp, E]``."""
    cdt = jnp.dtype(lay.dtype)
    e, xh1, inv1 = km.layer_norm_rows(x, p[0][...], p[1][...], lay.eps)
    keep = None
    if lay.rate > 0.0:
        rows = jnp.arange(lay.tp).astype(jnp.uint32)
        index = ((pl.program_id(0).astype(jnp.uint32) * jnp.uint32(lay.t) + rows)[:, None]
                 * jnp.uint32(lay.e) + jnp.arange(lay.e).astype(jnp.uint32)[None, :])
        keep = km.kept(seeds_ref[0], seeds_ref[1], index, lay.threshold)
        e = km.dropped(e, keep, lay.rate)
    e = e.astype(cdt)
    if not lay.projection:
        return e, (xh1, inv1), keep, e, None
    z = km.linear(e, p[2][...], p[3][...], cdt).astype(jnp.float32)
    y, xh2, inv2 = km.layer_norm_rows(z, p[4][...], p[5][...], lay.eps)
    return y.astype(cdt), (xh1, inv1), keep, e, (xh2, inv2)


def forward_kernel(x_ref, seeds_ref, *refs, lay: Layout):
    *p, o_ref = refs
    o_ref[...] = _forward(x_ref[...], seeds_ref, p, lay)[0].astype(o_ref.dtype)


def backward_kernel(x_ref, types_ref, seeds_ref, g_ref, *refs, lay: Layout):
    """One sequence: recompute from the embedding sum, then every gradient into the block."""
    *p, gw_ref = refs
    cdt = jnp.dtype(lay.dtype)
    _, (xh1, inv1), keep, e, second = _forward(x_ref[...], seeds_ref, p, lay)
    g = g_ref[...].astype(jnp.float32)
    if lay.projection:
        xh2, inv2 = second
        dz, ds2, db2 = km.layer_norm_rows_grad(g, xh2, inv2, p[4][...].astype(jnp.float32))
        dz = dz.astype(cdt)  # the LayerNorm's gradient in its input's (the compute) dtype
        km.store_rows(gw_ref, lay.row("ln2_scale"), ds2)
        km.store_rows(gw_ref, lay.row("ln2_bias"), db2)
        km.store_rows(gw_ref, lay.row("bp"), jnp.sum(dz.astype(jnp.float32), axis=0))
        km.store_rows(gw_ref, lay.row("wp"), km.dot(e, dz, cdt, (0, 0)))
        g = km.dot(dz, p[2][...], cdt, (1, 1)).astype(cdt).astype(jnp.float32)
    g = km.undropped(g, keep, lay.rate)
    dx, ds1, db1 = km.layer_norm_rows_grad(g, xh1, inv1, p[0][...].astype(jnp.float32))
    km.store_rows(gw_ref, lay.row("rows"), dx)
    km.store_rows(gw_ref, lay.row("ln1_scale"), ds1)
    km.store_rows(gw_ref, lay.row("ln1_bias"), db1)
    types = types_ref[...]
    for k in range(lay.types):
        km.store_rows(gw_ref, lay.row("types") + k,
                      jnp.sum(jnp.where((types == k)[:, None], dx, 0.0), axis=0))


def _sum_rows(tokens, types, tables, lay: Layout) -> jax.Array:
    """word[token] + position rows + type rows ``[B, Tp, E]`` float32 (the unfused path's order
    and the type rows selected by comparison), padding rows zero."""
    word, positions, type_table = tables
    x = word[tokens] + positions[None]
    picked = (types[..., None] == jnp.arange(lay.types))[..., None]
    x = x + jnp.sum(jnp.where(picked, type_table, 0), axis=2)
    return jnp.pad(x, [(0, 0), (0, lay.tp - lay.t), (0, 0)]).astype(jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _embed(tokens, types, seeds, tables, params, lay: Layout):
    return _embed_fwd(tokens, types, seeds, tables, params, lay)[0]


def _padded(a: jax.Array, lay: Layout) -> jax.Array:
    return jnp.pad(a, [(0, 0), (0, lay.tp - lay.t)])


def _embed_fwd(tokens, types, seeds, tables, params, lay):
    x = _sum_rows(tokens, types, tables, lay)
    b = tokens.shape[0]
    out = jax.ShapeDtypeStruct((b, lay.tp, lay.h if lay.projection else lay.e),
                               jnp.dtype(lay.dtype))
    y = pallas_backend.per_sequence_call(partial(forward_kernel, lay=lay), (x, seeds, *params),
                                         {0}, out, "embed_forward")
    return y[:, :lay.t], (tokens, types, seeds, tables, params, x)


def _embed_bwd(lay, residuals, g):
    tokens, types, seeds, tables, params, x = residuals
    b = tokens.shape[0]
    g = jnp.pad(g, [(0, 0), (0, lay.tp - lay.t), (0, 0)]).astype(jnp.dtype(lay.dtype))
    out = jax.ShapeDtypeStruct((b, lay.rows, lay.width), jnp.float32)
    parts = pallas_backend.per_sequence_call(partial(backward_kernel, lay=lay),
                                             (x, _padded(types, lay), seeds, g, *params),
                                             {0, 1, 3}, out, "embed_backward")
    total = jnp.sum(parts, axis=0)
    word, positions, type_table = tables
    e, t = lay.e, lay.t
    d_word = jnp.zeros(word.shape, jnp.float32).at[tokens.reshape(-1)].add(
        parts[:, :t, :e].reshape(-1, e))

    def rows(name, n, width):
        return total[lay.row(name): lay.row(name) + n, :width]

    d_tables = (d_word.astype(word.dtype), rows("rows", t, e).astype(positions.dtype),
                rows("types", lay.types, e).astype(type_table.dtype))
    grads = [rows("ln1_scale", 1, e)[0], rows("ln1_bias", 1, e)[0]]
    if lay.projection:
        grads += [rows("wp", e, lay.h), rows("bp", 1, lay.h)[0], rows("ln2_scale", 1, lay.h)[0],
                  rows("ln2_bias", 1, lay.h)[0]]
    return (None, None, None, d_tables,
            tuple(grad.astype(p.dtype) for grad, p in zip(grads, params)))


_embed.defvjp(_embed_fwd, _embed_bwd)


def fused_embeddings(tokens_bt: jax.Array, types_bt: jax.Array, tables: tuple, params: tuple,
                     key: jax.Array | None, *, rate: float, eps: float, dtype: str) -> jax.Array:
    """The embedding block of ``tokens_bt`` ``[B, T]`` (token types ``types_bt``) in the compute
    dtype ``dtype``: ``tables`` (word ``[V, E]``, the T position rows ``[T, E]``, types ``[K, E]``)
    and ``params`` (LayerNorm 1's scale and bias, then, with a projection, its ``[E, H]`` kernel
    and bias and LayerNorm 2's scale and bias); hash dropout keyed by ``key`` (None: none).
    Differentiable in the tables and parameters."""
    b, t = tokens_bt.shape
    word, _, type_table = tables
    e = word.shape[1]
    projection = len(params) == 6
    h = params[2].shape[1] if projection else e
    why = unsupported(t, e, h, type_table.shape[0])
    if why is not None:
        raise ValueError(f"fused embeddings: {why}")
    rate = float(rate) if key is not None else 0.0
    lay = Layout(t, max(16, 1 << (t - 1).bit_length()), e, h, type_table.shape[0], projection,
                 rate, km.dropout_threshold(rate), float(eps), jnp.dtype(dtype).name)
    seeds = (jax.random.bits(key, (2,), jnp.uint32) if rate > 0.0
             else jnp.zeros((2,), jnp.uint32))
    return _embed(tokens_bt.astype(jnp.int32), types_bt.astype(jnp.int32), seeds, tables,
                  tuple(params), lay)
