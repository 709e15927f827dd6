"""Encoder registry: ``ModelConfig.arch`` -> encoder class. A new encoder variant needs no line
here: ``arch`` may be an import path, ``package.module:ClassName``
(``--config.model.arch=my_lab.encoders:GatedEncoder``), imported when the model is built, or a
short name the user's installed package declares as an entry point of the group
:data:`ENTRY_POINT_GROUP` (``[project.entry-points."minilm_jax.encoders"]`` ``gated =
"my_lab.encoders:GatedEncoder"`` in its pyproject.toml; ``--config.model.arch=gated``)."""

from __future__ import annotations

import importlib
from typing import Callable

from flax import nnx

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.encoder import ConvFrontEncoder, TransformerEncoder

EncoderFactory = Callable[..., nnx.Module]  # (cfg: ModelConfig, *, rngs: nnx.Rngs) -> encoder
ENTRY_POINT_GROUP = "minilm_jax.encoders"

ENCODERS: dict[str, EncoderFactory] = {
    "roberta": TransformerEncoder,
    "bert": TransformerEncoder,
    "bert_conv": ConvFrontEncoder,
}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Register an encoder class under ``name`` (usable as ``--config.model.arch=<name>``)."""
    ENCODERS[name] = factory


def installed_encoders() -> dict[str, str]:
    """Short names installed packages declare (entry points of :data:`ENTRY_POINT_GROUP`) ->
    their ``module:Class`` paths."""
    from importlib import metadata

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def encoder_factory(arch: str) -> EncoderFactory:
    """The factory ``arch`` names: a registered name, an installed package's short name, or
    ``module.path:Name`` (imported)."""
    if arch in ENCODERS:
        return ENCODERS[arch]
    if ":" not in arch:
        installed = installed_encoders()
        if arch in installed:
            return encoder_factory(installed[arch])
        raise ConfigError(f"model.arch: unknown encoder {arch!r}; registered: "
                          f"{sorted(ENCODERS) + sorted(installed)}, or an import path such as "
                          "my_lab.encoders:MyEncoder")
    module_name, _, attribute = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"model.arch={arch!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"model.arch={arch!r}: {module_name} has no encoder {attribute!r}")
    return factory


def is_library_encoder(arch: str) -> bool:
    """Whether ``arch`` names one of this library's encoders (counted by the paper's formula,
    recorded in rows without an ``arch``), not a user's variant (registered, installed or named by
    import path). Nothing is imported: results rows are written where the variant may not be."""
    if arch in ENCODERS:
        return getattr(ENCODERS[arch], "__module__", "").startswith("minilm_jax.")
    return ":" in arch and arch.partition(":")[0].startswith("minilm_jax.")


def build_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The encoder named by ``cfg.arch``."""
    return encoder_factory(cfg.arch)(cfg, rngs=rngs)
