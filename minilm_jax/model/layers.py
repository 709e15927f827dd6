"""Transformer building blocks (Flax NNX): attention, feed-forward, one encoder layer.

Shape letters: B batch, T sequence, H hidden, A heads, D head size (H/A), I FFN size.
Dropout is functional: each call receives an explicit PRNG key (``None`` = deterministic), so jitted
training steps stay pure functions of arrays and the model holds no RNG state.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx
from jax.extend.core import Literal

import minilm_jax.model.fused_layer as fused_layer
import minilm_jax.model.target_platform as target_platform
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.attention_rules import (NEG_INF, attention_mask, hash_bits,  # noqa: F401
                                              segment_ids_from_mask)
from minilm_jax.model.flash_attention import flash_attention
from minilm_jax.model.init import Initializers


def dropout(x: jax.Array, rate: float, key: jax.Array | None, rng: str = "hash") -> jax.Array:
    """Inverted dropout; identity when ``key`` is None or ``rate`` is 0.

    ``rng``: ``"hash"`` (:func:`hash_bits`, the default) or ``"threefry"`` (jax.random.bernoulli).
    """
    if key is None or rate == 0.0:
        return x
    if rng == "hash":
        keep = hash_bits(key, x.shape) >= jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))
    else:
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(key: jax.Array | None, num: int) -> list[jax.Array | None]:
    """``num`` independent keys from ``key`` (or ``num`` Nones)."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact erf form (the paper's and BERT's activation)."""
    return jax.nn.gelu(x, approximate=False)


def make_linear(cfg: ModelConfig, init: Initializers, d_in: int, d_out: int,
                rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=init.kernel, bias_init=init.bias,
                      dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, epsilon: float):
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    x_f = x.astype(jnp.float32)
    centred = x_f - jnp.mean(x_f, axis=-1, keepdims=True)
    y = centred * (jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
                   * scale) + bias
    return y, (x, scale)


def _layer_norm_bwd(epsilon, residuals, g):
    x, scale = residuals
    x_f, g = x.astype(jnp.float32), g.astype(jnp.float32)
    g_scaled = g * scale
    mean = jnp.mean(x_f, axis=-1, keepdims=True)
    centred = x_f - mean
    inv = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    x_hat = centred * inv
    dx = inv * (g_scaled - jnp.mean(g_scaled, axis=-1, keepdims=True)
                - x_hat * jnp.mean(g_scaled * x_hat, axis=-1, keepdims=True))
    both = jnp.sum(jnp.stack([g * x_hat, g], axis=-2).reshape(-1, 2, g.shape[-1]), axis=0)
    return dx.astype(x.dtype), both[0], both[1]


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.LayerNorm):
    """``nnx.LayerNorm`` (statistics in float32); with ``impl`` "gpu" (``model.norm_impl``; "auto"
    in a program built for a GPU), the same function written for XLA's GPU fusions: the forward's
    statistics in two passes (mean, then the mean square of the centred values: fused with the
    normalisation into one kernel) and its gradient a custom VJP that keeps only the input,
    recomputes the statistics in the kernel that needs them and reduces the scale and bias
    gradients together (step 154 -> 143 kernels on the H100, and 6% more bytes at `base-large`).
    The same values within float32 rounding; with "xla" exactly ``nnx.LayerNorm``."""

    def __init__(self, *args, impl: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.impl = impl

    def gpu_form(self) -> bool:
        """Whether this norm runs its GPU formulation (``impl``, and :meth:`plain`)."""
        wanted = self.impl == "gpu" or (self.impl == "auto"
                                        and target_platform.platform() == "gpu")
        return wanted and self.plain()

    def plain(self) -> bool:
        """With a scale and a bias, over the last axis, with the fast variance: the function this
        class's GPU formulation and the project's kernels compute."""
        return (self.scale is not None and self.bias is not None and self.use_fast_variance
                and tuple(np.atleast_1d(self.reduction_axes)) == (-1,))

    def __call__(self, x, *, mask=None):
        if mask is not None or not self.gpu_form():
            return super().__call__(x, mask=mask)
        y = _layer_norm(x, self.scale[...].astype(jnp.float32),
                        self.bias[...].astype(jnp.float32), float(self.epsilon))
        return y.astype(self.dtype or x.dtype)


def make_layer_norm(cfg: ModelConfig, dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # LayerNorm statistics are computed in float32 even under bf16 compute.
    return LayerNorm(dim, epsilon=cfg.layer_norm_eps, dtype=jnp.float32,
                     param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs, impl=cfg.norm_impl)


def runs_kernels(cfg: ModelConfig, what: str, why_not: Callable[[], str | None]) -> bool:
    """Whether ``what`` (the encoder's embeddings, a layer) runs as its Pallas kernels:
    ``model.layer_impl`` "fused", where ``why_not()`` gives no reason against (a ConfigError
    naming the reason otherwise). "auto" runs the modules on every backend: on an H200 the
    kernels' step of ``paper-1.25m`` took 1.15 ms and the modules' 0.97 ms
    (docs/performance.md, "Device check")."""
    if cfg.layer_impl != "fused":
        return False
    why = why_not()
    if why is not None:
        raise ConfigError(f"model.layer_impl='fused' cannot run {what}: {why}; use "
                          "layer_impl='auto' or 'xla'")
    return True


def _depends_on_params(module: nnx.Module, fn) -> bool:
    """Whether ``fn(module)`` reads any of ``module``'s parameters (``nnx.Param``): traced as a
    function of them (in eager mode, under ``jit``, ``vmap`` or ``grad`` alike: a fresh trace of a
    copy of the module), an output reached from a parameter through any equation."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    closed = jax.make_jaxpr(lambda p: fn(nnx.merge(graphdef, p, rest)))(params)
    reached = set(closed.jaxpr.invars)
    for eqn in closed.jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    return any(not isinstance(v, Literal) and v in reached
               for v in closed.jaxpr.outvars)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with Q/K/V/O projections (all with bias); heads honoured."""

    def __init__(self, cfg: ModelConfig, init: Initializers, rngs: nnx.Rngs):
        self.cfg = cfg
        h = cfg.hidden_dim
        self.query = make_linear(cfg, init, h, h, rngs)
        self.key = make_linear(cfg, init, h, h, rngs)
        self.value = make_linear(cfg, init, h, h, rngs)
        self.output = make_linear(cfg, init, h, h, rngs)

    def project_qkv(self, x_bth: jax.Array) -> tuple[jax.Array, ...]:
        """Q, K, V ``[B, T, H]`` each, from one ``[H, 3H]`` GEMM over the concatenated kernels:
        one pass over x (and one transpose of it for the weight gradient) instead of three."""
        dtype = jnp.dtype(self.cfg.dtype)
        linears = (self.query, self.key, self.value)
        kernel_h3h = jnp.concatenate([lin.kernel[...] for lin in linears], axis=1).astype(dtype)
        bias_3h = jnp.concatenate([lin.bias[...] for lin in linears]).astype(dtype)
        qkv_bt3h = jnp.dot(x_bth.astype(dtype), kernel_h3h) + bias_3h
        return tuple(jnp.split(qkv_bt3h, 3, axis=-1))

    def position_qk(self, q_btad: jax.Array, k_btad: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The position-encoding hook: queries and keys ``[B, T, A, D]`` as the scores see them.
        The built-in encoder adds positions to its embeddings, so this passes them through; a
        variant overrides it (e.g. rotary embeddings) and sets its encoder's
        ``position_table = False``."""
        return q_btad, k_btad

    def score_bias(self, q_len: int, k_len: int) -> jax.Array | None:
        """The additive attention-prior hook: ``[A, Tq, Tk]`` float32 added to the scaled scores
        before the mask and the softmax, on every attention path (e.g. ALiBi's ``-slope x |i - j|``,
        or T5-style learned relative buckets). None in the built-in encoder: nothing added."""
        return None

    def checked_score_bias(self, t: int, shared: jax.Array | None = None) -> jax.Array | None:
        """:meth:`score_bias` ``[A, T, T]`` (or ``shared``, the encoder's once-per-forward bias)
        as float32, its shape checked; on the flash path one that depends on a parameter is
        refused (the kernels give the bias no gradient)."""
        bias_att = self.score_bias(t, t) if shared is None else shared
        if bias_att is None:
            return None
        want = (self.cfg.num_heads, t, t)
        if tuple(bias_att.shape) != want:
            hook = (f"{type(self).__name__}.score_bias({t}, {t})" if shared is None
                    else f"the encoder's shared_score_bias({t})")
            raise ConfigError(f"{hook} must be [A, Tq, Tk] = {list(want)}, not "
                              f"{list(bias_att.shape)}")
        if self.cfg.attention_impl == "flash" and shared is None and _depends_on_params(
                self, lambda module: module.score_bias(t, t)):
            raise ConfigError(f"{type(self).__name__}.score_bias depends on parameters, which "
                              "attention_impl='flash' cannot train (its bias gets no gradient); "
                              "use attention_impl='einsum', 'xla' or 'cudnn'")
        return bias_att.astype(jnp.float32)

    def __call__(self, x_bth: jax.Array, mask_b1tt: jax.Array, key: jax.Array | None = None,
                 score_bias: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        b, t, _ = x_bth.shape
        heads, head_dim = cfg.num_heads, cfg.head_dim
        q_btad, k_btad, v_btad = (a.reshape(b, t, heads, head_dim) for a in self.project_qkv(x_bth))
        q_btad, k_btad = self.position_qk(q_btad, k_btad)
        bias_att = self.checked_score_bias(t, score_bias)
        if cfg.attention_impl == "einsum":
            # Head-major [B, A, T, D] operands: the batched dots run 2-3x faster on CPU than
            # with the head axis between T and D.
            q_batd, k_batd, v_batd = (a.transpose(0, 2, 1, 3) for a in (q_btad, k_btad, v_btad))
            q_batd = q_batd / jnp.sqrt(jnp.asarray(head_dim, q_batd.dtype))
            scores_batt = jnp.einsum("baqd,bakd->baqk", q_batd, k_batd).astype(jnp.float32)
            if bias_att is not None:
                scores_batt = scores_batt + bias_att[None]
            scores_batt = jnp.where(mask_b1tt, scores_batt, NEG_INF)
            probs_batt = jax.nn.softmax(scores_batt, axis=-1).astype(v_batd.dtype)
            probs_batt = dropout(probs_batt, cfg.attention_dropout, key, cfg.dropout_rng)
            ctx_batd = jnp.einsum("baqk,bakd->baqd", probs_batt, v_batd)
            ctx_btad = ctx_batd.transpose(0, 2, 1, 3)
        elif cfg.attention_impl == "flash":
            ctx_btad = flash_attention(q_btad, k_btad, v_btad, segment_ids_from_mask(mask_b1tt),
                                       dropout_rate=cfg.attention_dropout, dropout_key=key,
                                       score_bias=bias_att)
        else:
            if key is not None and cfg.attention_dropout > 0.0:
                raise ConfigError(f"model.attention_impl={cfg.attention_impl!r} has no attention-"
                                  f"probability dropout (model.attention_dropout="
                                  f"{cfg.attention_dropout:g}): set model.attention_dropout=0 or "
                                  "use attention_impl='einsum' or 'flash'")
            cudnn = cfg.attention_impl == "cudnn"
            # the bias broadcasts over the batch ([1, A, T, T]); cuDNN adds it (and the mask, as
            # a bias) in the operands' dtype
            bias_1att = None if bias_att is None else bias_att[None].astype(
                q_btad.dtype if cudnn else jnp.float32)
            ctx_btad = jax.nn.dot_product_attention(
                q_btad, k_btad, v_btad, bias=bias_1att, mask=mask_b1tt,
                implementation="cudnn" if cudnn else None)
        return self.output(ctx_btad.reshape(b, t, heads * head_dim))


class FeedForward(nnx.Module):
    """H -> I -> H with exact GELU."""

    def __init__(self, cfg: ModelConfig, init: Initializers, rngs: nnx.Rngs):
        self.up = make_linear(cfg, init, cfg.hidden_dim, cfg.ffn_dim, rngs)
        self.down = make_linear(cfg, init, cfg.ffn_dim, cfg.hidden_dim, rngs)

    def __call__(self, x_bth: jax.Array) -> jax.Array:
        return self.down(gelu_exact(self.up(x_bth)))


class EncoderLayer(nnx.Module):
    """One transformer layer, post-LN (the paper, BERT) or pre-LN.

    Hooks: a variant replaces one block by subclassing and naming its class here
    (``feed_forward_class = SwiGLU``), each built as ``cls(cfg, init, rngs)`` with the same call
    as the block it replaces; :class:`~minilm_jax.model.encoder.TransformerEncoder`'s
    ``layer_class`` then names the layer."""

    attention_class: type = SelfAttention  # (x_bth, mask_b1tt, key) -> [B, T, H]
    feed_forward_class: type = FeedForward  # (x_bth) -> [B, T, H]
    make_norm = staticmethod(make_layer_norm)  # (cfg, dim, rngs) -> a module (x) -> x

    def __init__(self, cfg: ModelConfig, init: Initializers, rngs: nnx.Rngs):
        self.cfg = cfg
        self.attention = self.attention_class(cfg, init, rngs)
        self.attention_norm = self.make_norm(cfg, cfg.hidden_dim, rngs)
        self.ffn = self.feed_forward_class(cfg, init, rngs)
        self.ffn_norm = self.make_norm(cfg, cfg.hidden_dim, rngs)

    def __call__(self, x_bth: jax.Array, mask_b1tt: jax.Array, key: jax.Array | None = None,
                 score_bias: jax.Array | None = None) -> jax.Array:
        """``score_bias``: the encoder's once-per-forward attention bias (``shared_score_bias``),
        handed to the attention in place of its own; None: the attention's own hook."""
        cfg = self.cfg
        if self._runs_fused(x_bth, key, score_bias):
            return fused_layer.apply(self, x_bth, mask_b1tt, key)
        k_probs, k_attn, k_ffn = split_key(key, 3)
        dtype = x_bth.dtype
        shared = {} if score_bias is None else {"score_bias": score_bias}
        if cfg.norm_position == "post":
            attn = dropout(self.attention(x_bth, mask_b1tt, k_probs, **shared), cfg.hidden_dropout,
                           k_attn, cfg.dropout_rng)
            x_bth = self.attention_norm(x_bth + attn).astype(dtype)
            ffn = dropout(self.ffn(x_bth), cfg.hidden_dropout, k_ffn, cfg.dropout_rng)
            return self.ffn_norm(x_bth + ffn).astype(dtype)
        attn = self.attention(self.attention_norm(x_bth).astype(dtype), mask_b1tt, k_probs,
                              **shared)
        x_bth = x_bth + dropout(attn, cfg.hidden_dropout, k_attn, cfg.dropout_rng)
        ffn = self.ffn(self.ffn_norm(x_bth).astype(dtype))
        return x_bth + dropout(ffn, cfg.hidden_dropout, k_ffn, cfg.dropout_rng)

    def _runs_fused(self, x_bth: jax.Array, key: jax.Array | None,
                    score_bias: jax.Array | None) -> bool:
        """Whether this call runs the fused kernels (:mod:`~minilm_jax.model.fused_layer`):
        :func:`runs_kernels`, with the layer exactly the built-in one at sizes the kernels take."""
        def why_not() -> str | None:
            builtin = (type(self) is EncoderLayer and type(self.attention) is SelfAttention
                       and type(self.ffn) is FeedForward
                       and all(type(n) is LayerNorm for n in (self.attention_norm, self.ffn_norm)))
            if not builtin:
                return "the layer, its attention, feed-forward or norms are not the built-in ones"
            if score_bias is not None:
                return "the encoder gives an attention score bias"
            return fused_layer.why_not(self.cfg, x_bth, key is not None)

        return runs_kernels(self.cfg, "this layer", why_not)
