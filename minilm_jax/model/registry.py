"""Encoder registry: ``ModelConfig.arch`` -> encoder class. A new encoder variant is one new module
plus one line here."""

from __future__ import annotations

from typing import Callable

from flax import nnx

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.encoder import ConvFrontEncoder, TransformerEncoder

EncoderFactory = Callable[..., nnx.Module]  # (cfg: ModelConfig, *, rngs: nnx.Rngs) -> encoder

ENCODERS: dict[str, EncoderFactory] = {
    "roberta": TransformerEncoder,
    "bert": TransformerEncoder,
    "bert_conv": ConvFrontEncoder,
}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Register an encoder class under ``name`` (usable as ``--config.model.arch=<name>``)."""
    ENCODERS[name] = factory


def build_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The encoder named by ``cfg.arch``."""
    if cfg.arch not in ENCODERS:
        raise ConfigError(f"model.arch: unknown encoder {cfg.arch!r}; registered: {sorted(ENCODERS)}")
    return ENCODERS[cfg.arch](cfg, rngs=rngs)
