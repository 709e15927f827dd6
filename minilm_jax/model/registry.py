"""Encoder registry: ``ModelConfig.arch`` -> encoder class. A new encoder variant is one new module
plus one line here, or no line at all: ``arch`` may be an import path, ``package.module:ClassName``
(``--config.model.arch=my_lab.encoders:GatedEncoder``), imported when the model is built."""

from __future__ import annotations

import importlib
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


def encoder_factory(arch: str) -> EncoderFactory:
    """The factory ``arch`` names: a registered name, or ``module.path:Name`` (imported)."""
    if arch in ENCODERS:
        return ENCODERS[arch]
    if ":" not in arch:
        raise ConfigError(f"model.arch: unknown encoder {arch!r}; registered: {sorted(ENCODERS)}, "
                          f"or an import path such as my_lab.encoders:MyEncoder")
    module_name, _, attribute = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"model.arch={arch!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"model.arch={arch!r}: {module_name} has no encoder {attribute!r}")
    return factory


def build_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The encoder named by ``cfg.arch``."""
    return encoder_factory(cfg.arch)(cfg, rngs=rngs)
