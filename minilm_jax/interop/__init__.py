"""Interoperability with other frameworks' checkpoint formats (Hugging Face ``transformers``).

Names are imported lazily so that ``python -m minilm_jax.interop.hf_roberta`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: "minilm_jax.interop.hf_roberta" for name in (
    "InteropError", "export_roberta", "hf_config_from_model_config", "model_config_from_hf")}
_EXPORTS["import_roberta"] = "minilm_jax.interop.hf_import"

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
