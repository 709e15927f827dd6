"""A learned relative position bias (T5-style: one ``[buckets, A]`` table per layer, the key's
offset ``j - i`` clipped to ``±max_distance``, a field of the variant) through the attention's
``score_bias`` hook, and two
variants of it that differ only in the PyTorch twin they name
(``tests/modeling_relative_bias_variants.py``): one whose twin reads the table with the direction
flipped (``i - j``), one whose twin drops the bias. The table starts at zero, so a freshly
initialised model (a run at the unigram plateau is close to one) gives the same logits through
all three twins: only parameters away from their initial values tell a wrong twin apart."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.layers import EncoderLayer, SelfAttention

MAX_DISTANCE = 4  # the field's default: 2 x 4 + 1 buckets


def max_distance(cfg) -> int:
    return int(cfg.extra_value("max_distance", MAX_DISTANCE))


def relative_buckets(q_len: int, k_len: int, distance: int) -> jax.Array:
    """``[Tq, Tk]``: the bucket of key j seen from query i, ``clip(j - i) + distance``."""
    rel = jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None]
    return jnp.clip(rel, -distance, distance) + distance


class RelativeBiasAttention(SelfAttention):
    def __init__(self, cfg, init, rngs: nnx.Rngs):
        super().__init__(cfg, init, rngs)
        self.relative_bias = nnx.Param(jnp.zeros((2 * max_distance(cfg) + 1, cfg.num_heads),
                                                 jnp.dtype(cfg.param_dtype)))

    def score_bias(self, q_len, k_len):  # [A, Tq, Tk]
        table = self.relative_bias[...].astype(jnp.float32)
        return table[relative_buckets(q_len, k_len, max_distance(self.cfg))].transpose(2, 0, 1)


class RelativeBiasLayer(EncoderLayer):
    attention_class = RelativeBiasAttention


class RelativeBiasEncoder(TransformerEncoder):
    """The bias with its right twin."""

    layer_class = RelativeBiasLayer
    config_fields = {"max_distance": MAX_DISTANCE}
    torch_twin = "modeling_relative_bias_variants.py"


class FlippedBucketEncoder(RelativeBiasEncoder):
    """The same model; its twin reads bucket ``clip(i - j)``: every offset's bias mirrored."""


class DroppedBiasEncoder(RelativeBiasEncoder):
    """The same model; its twin loads the table and adds no bias."""
