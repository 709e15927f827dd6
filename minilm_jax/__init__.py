"""minilm-jax: tiny masked language models in JAX.

``minilm_jax.load_run(path)``: a run's model, config, tokenizer and step in Python
(:mod:`minilm_jax.runs.loaded`). Importing the package imports nothing else."""

from __future__ import annotations

from typing import Any

__all__ = ["load_run", "LoadedRun"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # loaded on first use: ``import minilm_jax`` stays cheap
        from minilm_jax.runs import loaded

        return getattr(loaded, name)
    raise AttributeError(f"module 'minilm_jax' has no attribute {name!r}")
