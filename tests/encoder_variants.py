"""Encoder variants as a user writes them in their own module (not the library's), selected with
``--config.model.arch=encoder_variants:GatedEmbeddingEncoder``."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.encoder import TransformerEncoder


class GatedEmbeddingEncoder(TransformerEncoder):
    """The built-in encoder plus one learned gate on the embeddings: one parameter more than the
    baseline's tree, so a baseline checkpoint does not fit it."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.embedding_gate = nnx.Param(jnp.ones((cfg.emb_dim,), jnp.dtype(cfg.param_dtype)))

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        from minilm_jax.model.accounting import VariantCounts
        return VariantCounts(params=cfg.emb_dim)  # the gate; its multiply is not a matmul


# ------------------------------------------------------------------ SwiGLU through the layer hook
import jax  # noqa: E402

from minilm_jax.model import accounting  # noqa: E402
from minilm_jax.model.layers import EncoderLayer, make_linear  # noqa: E402


def swiglu_width(cfg) -> int:
    """The gated block's width: ``ffn_scale`` x I (a variant field; 2/3 matches the baseline's
    parameters)."""
    return max(1, round(cfg.ffn_dim * float(cfg.extra_value("ffn_scale", 1.0))))


class SwiGLU(nnx.Module):
    """H -> (silu(gate) * up) -> H: the feed-forward block a variant swaps in."""

    def __init__(self, cfg, init, rngs: nnx.Rngs):
        width = swiglu_width(cfg)
        self.gate = make_linear(cfg, init, cfg.hidden_dim, width, rngs)
        self.up = make_linear(cfg, init, cfg.hidden_dim, width, rngs)
        self.down = make_linear(cfg, init, width, cfg.hidden_dim, rngs)

    def __call__(self, x_bth):
        return self.down(jax.nn.silu(self.gate(x_bth)) * self.up(x_bth))


class SwiGLULayer(EncoderLayer):
    feed_forward_class = SwiGLU


class UncountedSwiGLUEncoder(TransformerEncoder):
    """SwiGLU without a count declaration: its counts derived from its tree and trace."""

    layer_class = SwiGLULayer
    config_fields = {"ffn_scale": 1.0}


class SwiGLUEncoder(UncountedSwiGLUEncoder):
    """SwiGLU declaring its counts: three H x J matrices (J = ffn_scale x I, biases J, J, H) in
    place of two H x I (biases I, H), per layer; at J = I that is L x (H x I + I) parameters and
    L x 2 T H I forward FLOPs more than the baseline."""

    torch_twin = "modeling_encoder_variants.py"  # its PyTorch module, for Hugging Face export

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        layers, h, i, j = cfg.num_layers, cfg.hidden_dim, cfg.ffn_dim, swiglu_width(cfg)
        return accounting.VariantCounts(params=layers * (3 * h * j + 2 * j - 2 * h * i - i),
                                        forward_flops=layers * 2.0 * seq_len * h * (3 * j - 2 * i))


class MiscountedSwiGLUEncoder(UncountedSwiGLUEncoder):
    """Right parameters, no FLOPs declared: refused by XLA's count."""

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(params=cfg.num_layers * (cfg.hidden_dim * cfg.ffn_dim
                                                                 + cfg.ffn_dim))


class TrainingBugEncoder(TransformerEncoder):
    """A variant with a bug on its training path only: it fails at the first step."""

    def __call__(self, *args, train: bool = False, **kwargs):
        if train:
            raise ValueError("a bug in the variant's training path")
        return super().__call__(*args, train=train, **kwargs)


class GateInitEncoder(TransformerEncoder):
    """A variant with a field of its own: the gate's initial value
    (``--config.model.extra.gate_init=0.5``), recorded with the run's config."""

    config_fields = {"gate_init": 1.0}

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        value = float(cfg.extra_value("gate_init", 1.0))
        self.embedding_gate = nnx.Param(jnp.full((cfg.emb_dim,), value,
                                                 jnp.dtype(cfg.param_dtype)))

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(params=cfg.emb_dim)


def _rms_norm(cfg, dim, rngs):
    return nnx.RMSNorm(dim, epsilon=cfg.layer_norm_eps, rngs=rngs)


class RMSNormLayer(EncoderLayer):
    make_norm = staticmethod(_rms_norm)


class RMSNormNoPositionEncoder(TransformerEncoder):
    """Normalisation and position-encoding hooks: RMSNorm everywhere (no biases), no learned
    position table (positions would come from the variant's attention, e.g. rotary)."""

    layer_class = RMSNormLayer
    make_norm = staticmethod(_rms_norm)
    position_table = False

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        e, h = cfg.emb_dim, cfg.hidden_dim
        non_embedding = -(h if cfg.embed_projection else 0) - 2 * cfg.num_layers * h - (
            h if cfg.norm_position == "pre" else 0)
        return accounting.VariantCounts(params=non_embedding,
                                        embedding_params=-(cfg.num_positions * e) - e)


# ------------------------------------------------------- rotary positions through the attention hook
from minilm_jax.model.layers import SelfAttention  # noqa: E402


def rotate(x_btad, base: float):
    """Rotary position embedding of queries or keys ``[B, T, A, D]`` (the two halves of D as the
    real and imaginary parts; position p turns pair i by p x base^(-2i/D))."""
    t, d = x_btad.shape[1], x_btad.shape[-1]
    inverse = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
    angles_tf = jnp.arange(t, dtype=jnp.float32)[:, None] * inverse[None]
    cos, sin = (f(angles_tf)[None, :, None, :].astype(x_btad.dtype) for f in (jnp.cos, jnp.sin))
    first, second = x_btad[..., : d // 2], x_btad[..., d // 2:]
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


class RotaryAttention(SelfAttention):
    def position_qk(self, q_btad, k_btad):
        base = float(self.cfg.extra_value("rope_base", 10000.0))
        return rotate(q_btad, base), rotate(k_btad, base)


class RotaryLayer(EncoderLayer):
    attention_class = RotaryAttention


class RotaryEncoder(TransformerEncoder):
    """Rotary positions (``--config.model.extra.rope_base``) in place of the learned table: the
    table's T x E parameters less; the rotation is element-wise, no matmul FLOPs."""

    layer_class = RotaryLayer
    position_table = False
    config_fields = {"rope_base": 10000.0}
    torch_twin = "modeling_encoder_variants.py"  # its PyTorch module, for Hugging Face export

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(embedding_params=-cfg.num_positions * cfg.emb_dim)


# ---------------------------------------------- ALiBi through the attention's score_bias hook
def alibi_slopes(heads: int):
    """Press et al. (2022): head h (0-based) gets 2^(-8 (h + 1) / A), a geometric sequence."""
    return 2.0 ** (-8.0 / heads * jnp.arange(1, heads + 1, dtype=jnp.float32))


class AlibiAttention(SelfAttention):
    def score_bias(self, q_len, k_len):  # [A, Tq, Tk]: -slope x |i - j| (bidirectional)
        distance = jnp.abs(jnp.arange(q_len)[:, None] - jnp.arange(k_len)[None, :])
        return -alibi_slopes(self.cfg.num_heads)[:, None, None] * distance.astype(jnp.float32)


class AlibiLayer(EncoderLayer):
    attention_class = AlibiAttention


class AlibiEncoder(TransformerEncoder):
    """ALiBi in place of the learned position table (derived counts: the table's T x E less)."""

    layer_class = AlibiLayer
    position_table = False
    torch_twin = "modeling_encoder_variants.py"  # its PyTorch module, for Hugging Face export


# ------------------------------------------- cross-layer sharing through the make_layers hook
class SharedLayerEncoder(TransformerEncoder):
    """ALBERT-style: one layer's parameters applied num_layers times (derived counts: L - 1
    layers' parameters less, the FLOPs of L layers)."""

    torch_twin = "modeling_encoder_variants.py"  # its PyTorch module, for Hugging Face export

    def make_layers(self, cfg, init, rngs):
        return [self.layer_class(cfg, init, rngs)] * cfg.num_layers
