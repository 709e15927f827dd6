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


class SwiGLU(nnx.Module):
    """H -> (silu(gate) * up) -> H: the feed-forward block a variant swaps in."""

    def __init__(self, cfg, init, rngs: nnx.Rngs):
        self.gate = make_linear(cfg, init, cfg.hidden_dim, cfg.ffn_dim, rngs)
        self.up = make_linear(cfg, init, cfg.hidden_dim, cfg.ffn_dim, rngs)
        self.down = make_linear(cfg, init, cfg.ffn_dim, cfg.hidden_dim, rngs)

    def __call__(self, x_bth):
        return self.down(jax.nn.silu(self.gate(x_bth)) * self.up(x_bth))


class SwiGLULayer(EncoderLayer):
    feed_forward_class = SwiGLU


class UncountedSwiGLUEncoder(TransformerEncoder):
    """SwiGLU without a count declaration: refused (its tree has more parameters)."""

    layer_class = SwiGLULayer


class SwiGLUEncoder(UncountedSwiGLUEncoder):
    """SwiGLU declaring its gate: L x (H x I + I) parameters, L x 2 T H I forward FLOPs."""

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        layers, h, i = cfg.num_layers, cfg.hidden_dim, cfg.ffn_dim
        return accounting.VariantCounts(params=layers * (h * i + i),
                                        forward_flops=layers * 2.0 * seq_len * h * i)


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
