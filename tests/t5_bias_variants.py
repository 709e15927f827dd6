"""A T5-style learned relative position bias (Raffel et al. 2020, bidirectional buckets), one
``[buckets, A]`` table shared by every layer, in two forms with the same parameters and function:

* :class:`SharedT5BiasEncoder`: the table on the encoder, the bias computed once per forward
  through ``TransformerEncoder.shared_score_bias`` and added by every layer's attention;
* :class:`PerLayerT5BiasEncoder`: the table attached to every layer's attention by
  ``make_layers`` (one module, held once), the bias recomputed by each layer's ``score_bias``.

Both read their fields (``num_buckets``, ``max_distance``) with no default at the call: the
declared ones apply however the config was built."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.layers import EncoderLayer, SelfAttention

FIELDS = {"num_buckets": 12, "max_distance": 16}


def relative_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> jax.Array:
    """``[Tq, Tk]`` bucket of ``j - i``: half the buckets per direction, exact up to a quarter of
    them, then log-spaced up to ``max_distance`` (T5's bidirectional scheme)."""
    rel = jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None]
    half = num_buckets // 2
    exact = half // 2
    n = jnp.abs(rel)
    far = exact + (jnp.log(jnp.maximum(n, 1) / exact) / math.log(max_distance / exact)
                   * (half - exact)).astype(jnp.int32)
    return jnp.where(rel > 0, half, 0) + jnp.where(n < exact, n, jnp.minimum(far, half - 1))


class RelativeBias(nnx.Module):
    """The learned table ``[buckets, A]`` and the bias ``[A, Tq, Tk]`` it gives."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.cfg = cfg
        shape = (int(cfg.extra_value("num_buckets")), cfg.num_heads)
        self.table = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))

    def __call__(self, q_len: int, k_len: int) -> jax.Array:
        buckets = relative_buckets(q_len, k_len, int(self.cfg.extra_value("num_buckets")),
                                   int(self.cfg.extra_value("max_distance")))
        return self.table[...][buckets].transpose(2, 0, 1)


class SharedT5BiasEncoder(TransformerEncoder):
    """The once-per-forward form: one table on the encoder, one gather per forward."""

    config_fields = dict(FIELDS)

    def __init__(self, cfg, *, rngs):
        super().__init__(cfg, rngs=rngs)
        self.relative_bias = RelativeBias(cfg, rngs)

    def shared_score_bias(self, t):
        return self.relative_bias(t, t)


class PerLayerT5Attention(SelfAttention):
    def score_bias(self, q_len, k_len):
        return self.relative_bias(q_len, k_len)


class PerLayerT5Layer(EncoderLayer):
    attention_class = PerLayerT5Attention


class PerLayerT5BiasEncoder(TransformerEncoder):
    """The per-layer form: ``make_layers`` attaches one table to every attention; each layer
    gathers it again."""

    layer_class = PerLayerT5Layer
    config_fields = dict(FIELDS)

    def make_layers(self, cfg, init, rngs):
        layers = [self.layer_class(cfg, init, rngs) for _ in range(cfg.num_layers)]
        shared = RelativeBias(cfg, rngs)  # drawn after the layers, as the shared form draws it
        for layer in layers:
            layer.attention.relative_bias = shared
        return layers
