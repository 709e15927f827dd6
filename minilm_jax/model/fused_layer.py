"""The built-in post-LN encoder layer as two Pallas kernels (``model.layer_impl="fused"``).

:func:`fused_encoder_layer` computes what :class:`~minilm_jax.model.layers.EncoderLayer` computes
(QKV projections with bias, scaled dot-product attention per head under the segment mask, softmax
in float32, attention-probability dropout, output projection, hidden dropout, residual, LayerNorm,
exact-GELU FFN, hidden dropout, residual, LayerNorm) in one kernel launch for the forward and one
for the backward (a ``jax.custom_vjp``), where XLA runs ~60 kernels on a GPU. A grid of one
program per sequence: the sequence's activations (``[T, H]``, each head's ``[T, T]`` scores, the
FFN's ``[T, I]`` in H-wide column blocks) never leave the chip; the weights are read whole by each
program. The backward keeps only the layer's input and recomputes the rest; it writes ``dx`` and
each sequence's parameter gradients in one ``[B, rows, H]`` float32 buffer, reduced over the
sequences by XLA in one kernel.

The dropout masks are drawn in the kernels from
:func:`~minilm_jax.model.attention_rules.hash_bits`' hash of the same flat indices, under the same
keys (``split_key(key, 3)``: probabilities, attention output, FFN output), as the unfused layer's
``dropout(..., "hash")``: the fused and unfused layers are one function of (x, mask, parameters,
key), equal within rounding (:mod:`tests.test_fused_layer`).

Bounds (:func:`unsupported`): H, head size D and FFN size I powers of two with 16 <= D,
16 <= H <= :data:`MAX_HIDDEN`, H <= I <= :data:`MAX_FFN`; T a multiple of 16 up to
:data:`MAX_SEQ` (padded to a power of two in the wrapper: padding keys are excluded, padding rows
sliced off). Compiled by Triton on GPUs; elsewhere Pallas' interpreter runs the same kernels.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import minilm_jax.model.fused_layer_kernels as kernels
import minilm_jax.model.kernel_math as km
import minilm_jax.model.pallas_backend as pallas_backend
from minilm_jax.model.config import ModelConfig

MAX_SEQ = 256  # each head's [T, T] scores of one sequence in one program
MAX_HIDDEN = 128
MAX_FFN = 512
PARAMS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_scale", "ln1_bias",
          "w1", "b1", "w2", "b2", "ln2_scale", "ln2_bias")


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def unsupported(t: int, hidden: int, heads: int, ffn: int) -> str | None:
    """Why the kernels cannot take these sizes (None: they can)."""
    d = hidden // heads
    if t % 16 or t > MAX_SEQ:
        return f"the sequence length must be a multiple of 16 up to {MAX_SEQ} (got {t})"
    if not (_pow2(d) and d >= 16):
        return f"the head size must be a power of two >= 16 (got {d})"
    if not (_pow2(hidden) and 16 <= hidden <= MAX_HIDDEN):
        return f"hidden_dim must be a power of two in [16, {MAX_HIDDEN}] (got {hidden})"
    if not (_pow2(ffn) and hidden <= ffn <= MAX_FFN):
        return f"ffn_dim must be a power of two in [hidden_dim, {MAX_FFN}] (got {ffn})"
    return None


def _layout(t, hidden, heads, ffn, rate_probs, rate_hidden, eps, dtype) -> kernels.Layout:
    tp = max(16, 1 << (t - 1).bit_length())
    d = hidden // heads
    sqrt_d = float(np.asarray(math.sqrt(d), jnp.dtype(dtype)))  # as the compute dtype rounds it
    return kernels.Layout(t, tp, hidden, heads, d, ffn, float(rate_probs), float(rate_hidden),
                          km.dropout_threshold(rate_probs), km.dropout_threshold(rate_hidden), sqrt_d,
                          float(eps), jnp.dtype(dtype).name)


def _compiler_params(lay: kernels.Layout):
    """Triton's parameters (None when interpreted): 8 warps from T = 128 on (each head's
    ``[T, T]`` float32 tiles in registers: 4 warps spill them, and compile 3x slower)."""
    if pallas_backend.interpret():
        return None
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=8 if lay.tp >= 128 else 4, num_stages=1)


def _call(kernel, lay: kernels.Layout, arrays, per_seq, out_shape, name):
    """``kernel`` over one program per sequence: ``per_seq`` of ``arrays`` (by position) and the
    outputs cut by their leading (batch) axis, the rest passed whole."""
    return pallas_backend.per_sequence_call(partial(kernel, lay=lay), arrays, per_seq, out_shape,
                                            name, _compiler_params(lay))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _layer(x, seg, seeds, params, lay: kernels.Layout):
    return _fwd(x, seg, seeds, params, lay)[0]


def _fwd(x, seg, seeds, params, lay):
    out = jax.ShapeDtypeStruct(x.shape, x.dtype)
    y = _call(kernels.forward_kernel, lay, (x, seg, seeds, *params), {0, 1}, out,
              "fused_layer_forward")
    return y, (x, seg, seeds, params)


def _bwd(lay, residuals, g):
    x, seg, seeds, params = residuals
    b = x.shape[0]
    outs = (jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct((b, lay.rows, lay.h), jnp.float32))
    dx, parts = _call(kernels.backward_kernel, lay, (x, seg, seeds, g.astype(x.dtype), *params),
                      {0, 1, 3}, outs, "fused_layer_backward")
    return (dx, None, None, _unpack(jnp.sum(parts, axis=0), params, lay))


def _unpack(total: jax.Array, params, lay: kernels.Layout) -> tuple:
    """Each parameter's gradient (in its dtype) from the summed ``[rows, H]`` block."""
    h, i = lay.h, lay.i

    def rows(name, n):
        return total[lay.row(name): lay.row(name) + n]

    w1 = rows("w1", i).reshape(lay.chunks, h, h).transpose(1, 0, 2).reshape(h, i)
    grads = {"wq": rows("wq", h), "wk": rows("wk", h), "wv": rows("wv", h), "wo": rows("wo", h),
             "w1": w1, "w2": rows("w2", i), "b1": rows("b1", lay.chunks).reshape(i)}
    for name in kernels.VECTORS:
        grads[name] = rows(name, 1)[0]
    return tuple(grads[name].astype(p.dtype) for name, p in zip(PARAMS, params))


_layer.defvjp(_fwd, _bwd)


def _pad_rows(a: jax.Array, tp: int) -> jax.Array:
    if a.shape[1] == tp:
        return a
    return jnp.pad(a, [(0, 0), (0, tp - a.shape[1])] + [(0, 0)] * (a.ndim - 2))


def fused_encoder_layer(x_bth: jax.Array, segment_ids_bt: jax.Array, params: dict,
                        key: jax.Array | None, *, heads: int, attention_dropout: float,
                        hidden_dropout: float, eps: float, dtype: str) -> jax.Array:
    """The post-LN encoder layer of ``x`` ``[B, T, H]`` (in the compute dtype ``dtype``) under the
    segment mask of ``segment_ids_bt`` (0 padding), with hash dropout keyed by ``key`` (None: no
    dropout). ``params``: :data:`PARAMS` -> arrays (kernels ``[in, out]``, LayerNorm scales and
    biases). Differentiable in ``x`` and ``params``."""
    b, t, hidden = x_bth.shape
    ffn = params["w1"].shape[1]
    why = unsupported(t, hidden, heads, ffn)
    if why is not None:
        raise ValueError(f"fused encoder layer: {why}")
    if key is None:
        attention_dropout = hidden_dropout = 0.0
    lay = _layout(t, hidden, heads, ffn, attention_dropout, hidden_dropout, eps, dtype)
    seeds = jnp.zeros((8,), jnp.uint32)
    if key is not None and (attention_dropout > 0.0 or hidden_dropout > 0.0):
        # split_key(key, 3)'s keys (probabilities, attention output, FFN output), drawn together
        bits = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(jax.random.split(key, 3))
        seeds = jnp.pad(bits.reshape(6), (0, 2))
    x = _pad_rows(x_bth.astype(jnp.dtype(dtype)), lay.tp)
    seg = _pad_rows(segment_ids_bt.astype(jnp.int32), lay.tp)
    y = _layer(x, seg, seeds, tuple(params[name] for name in PARAMS), lay)
    return y[:, :t]


def why_not(cfg: ModelConfig, x_bth: jax.Array, dropout: bool) -> str | None:
    """Why the kernels cannot run a built-in layer of ``cfg`` on ``x_bth`` (None: they can);
    ``dropout``: whether the call has a dropout key."""
    if cfg.norm_position != "post":
        return f"model.norm_position={cfg.norm_position!r} (the kernels are post-LN)"
    if cfg.attention_impl not in ("einsum", "flash"):
        return f"model.attention_impl={cfg.attention_impl!r} (the kernels replace einsum or flash)"
    if (dropout and cfg.dropout_rng != "hash"
            and (cfg.attention_dropout > 0.0 or cfg.hidden_dropout > 0.0)):
        return f"model.dropout_rng={cfg.dropout_rng!r} (the kernels draw 'hash' masks)"
    if jnp.dtype(x_bth.dtype) != jnp.dtype(cfg.dtype):
        return f"the layer's input is {jnp.dtype(x_bth.dtype).name}, not model.dtype={cfg.dtype}"
    return unsupported(x_bth.shape[1], cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim)


def _segment_ids(mask_b1tt: jax.Array) -> jax.Array:
    """Segment ids for the kernels from an ``attention_mask`` in one reduction: each query's
    ``T - j`` for the first key j it sees (0: none, a padding row). Queries of one segment see
    the same first key, those of different segments different ones: the same mask."""
    t = mask_b1tt.shape[-1]
    return jnp.max(jnp.where(mask_b1tt[:, 0], t - jnp.arange(t, dtype=jnp.int32), 0), axis=-1)


def apply(layer, x_bth: jax.Array, mask_b1tt: jax.Array, key: jax.Array | None) -> jax.Array:
    """:func:`fused_encoder_layer` with the parameters of ``layer``, a built-in
    :class:`~minilm_jax.model.layers.EncoderLayer` (its blocks' attributes read here), and the
    segment ids of ``mask_b1tt``, which must be an ``attention_mask`` of segment ids (as the
    encoder builds it; the flash path assumes the same): another mask is not representable."""
    cfg, att, ffn = layer.cfg, layer.attention, layer.ffn
    modules = {"q": att.query, "k": att.key, "v": att.value, "o": att.output, "1": ffn.up,
               "2": ffn.down}
    params = {}
    for name, module in modules.items():
        params["w" + name], params["b" + name] = module.kernel[...], module.bias[...]
    for n, norm in (("1", layer.attention_norm), ("2", layer.ffn_norm)):
        params[f"ln{n}_scale"], params[f"ln{n}_bias"] = norm.scale[...], norm.bias[...]
    return fused_encoder_layer(x_bth, _segment_ids(mask_b1tt), params, key,
                               heads=cfg.num_heads, attention_dropout=cfg.attention_dropout,
                               hidden_dropout=cfg.hidden_dropout, eps=cfg.layer_norm_eps,
                               dtype=cfg.dtype)
