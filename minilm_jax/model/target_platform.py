"""The platform a program is being built for: the attached backend, or the target of an
ahead-of-time compile (``python -m minilm_jax.aot --target=cuda:h100`` builds a GPU program on a
CPU-only machine). Choices that depend on the platform (the output layer's implementation, whether
Pallas kernels are interpreted, how members run together) read :func:`platform`, never
``jax.default_backend()`` directly, so a deviceless compile builds what the target would run."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("minilm_target_platform",
                                                                     default=None)


def platform() -> str:
    """``cpu``, ``gpu`` or ``tpu``: the platform of the program being built."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def building_for(target: str) -> Iterator[None]:
    """Build (trace and lower) programs for ``target`` (``cpu``, ``gpu``, ``tpu``) inside the block,
    whatever backend this process has."""
    token = _TARGET.set({"cuda": "gpu", "rocm": "gpu"}.get(target, target))
    try:
        yield
    finally:
        _TARGET.reset(token)
