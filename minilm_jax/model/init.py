"""Initialisation schemes: ``paper`` (Glorot normal, untruncated, fan-average, for every matrix and
embedding table; biases 0.01) and ``bert`` (normal with std 0.02; zero biases)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

Initializer = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Initializers:
    kernel: Initializer
    embedding: Initializer
    bias: Initializer


def _glorot_normal_untruncated() -> Initializer:
    # jax's "normal" distribution is the untruncated one ("truncated_normal" is glorot_normal's).
    return jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def make_initializers(scheme: str) -> Initializers:
    """Initializers for a named scheme."""
    if scheme == "paper":
        glorot = _glorot_normal_untruncated()
        return Initializers(kernel=glorot, embedding=glorot,
                            bias=jax.nn.initializers.constant(0.01))
    if scheme == "bert":
        normal = jax.nn.initializers.normal(stddev=0.02)
        return Initializers(kernel=normal, embedding=normal, bias=jax.nn.initializers.zeros)
    raise ValueError(f"unknown init scheme {scheme!r}; valid: paper, bert")
