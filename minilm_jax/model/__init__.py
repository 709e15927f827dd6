"""Flax NNX models of minilm-jax.

The names below are loaded on first use (PEP 562), so that a module that needs only the model's
configuration (``minilm_jax.model.config``, ``minilm_jax.model.sizes``: a command's ``--help``, its
flag checks) does not import flax and jax."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"ConfigError": "config", "ModelConfig": "config", "MaskedLM": "models",
          "SequenceClassifier": "models", "build_classifier": "models", "build_mlm": "models",
          "ENCODERS": "registry", "build_encoder": "registry", "register_encoder": "registry"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
