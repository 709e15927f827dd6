"""Elementwise and row-wise math written for the inside of a Pallas kernel (Triton lowers no
``erf``/``erfc``), in float32, usable outside a kernel as well (the tests compare them there).

- :func:`erfc`: the complementary error function to ~1.2e-6 relative, 3.5e-7 absolute (XLA's
  float32 ``erfc`` is within 1.5e-7 of the exact value): Numerical Recipes' Chebyshev fit,
  ``t exp(-z^2 + P(t))`` with ``t = 1 / (1 + |z| / 2)``.
- :func:`gelu`, :func:`gelu_grad`: the exact (erf) GELU and its derivative.
- :func:`layer_norm_rows`, :func:`layer_norm_rows_grad`: LayerNorm over the last axis of a block
  of rows, two-pass statistics, and its backward with the scale and bias gradients summed over
  the block's rows.
- :func:`dropout_threshold`, :func:`kept`, :func:`dropped`, :func:`undropped`: the hash dropout of
  ``layers.dropout(..., "hash")`` drawn in a kernel from an element's flat index and the two seed
  words ``jax.random.bits(key, (2,), uint32)``.
- :func:`dot`, :func:`linear`, :func:`store_rows`: products in the compute dtype with float32
  accumulation, ``nnx.Linear``'s roundings, and writing a block of a per-program gradient buffer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from minilm_jax.model.attention_rules import mix32

# Numerical Recipes' erfc coefficients, lowest order first (fractional error < 1.2e-7 in exact
# arithmetic)
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
         1.48851587, -0.82215223, 0.17087277)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erfc(z: jax.Array) -> jax.Array:
    """``erfc(z)`` in float32 from ``exp`` and a polynomial (for kernels without ``erfc``)."""
    z = z.astype(jnp.float32)
    a = jnp.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = jnp.full_like(t, _ERFC[-1])
    for c in reversed(_ERFC[:-1]):
        poly = poly * t + c
    tail = t * jnp.exp(poly - a * a)
    return jnp.where(z >= 0.0, tail, 2.0 - tail)


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU ``x / 2 * erfc(-x / sqrt 2)`` (``jax.nn.gelu(approximate=False)``), float32."""
    x = x.astype(jnp.float32)
    return 0.5 * x * erfc(-x * _SQRT_HALF)


def gelu_grad(x: jax.Array) -> jax.Array:
    """``d gelu / dx = Phi(x) + x phi(x)``, float32."""
    x = x.astype(jnp.float32)
    return 0.5 * erfc(-x * _SQRT_HALF) + x * _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)


def layer_norm_rows(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(y, x_hat, inv_std)`` of LayerNorm over the last axis of ``x [R, H]`` (in float32): the mean,
    then the mean square of the centred values (two passes, as :class:`~minilm_jax.model.layers.
    LayerNorm` on a GPU); ``inv_std [R, 1]``."""
    x = x.astype(jnp.float32)
    width = x.shape[-1]
    centred = x - jnp.sum(x, axis=-1, keepdims=True) / width
    inv_std = jax.lax.rsqrt(jnp.sum(centred * centred, axis=-1, keepdims=True) / width + eps)
    x_hat = centred * inv_std
    return (x_hat * scale[None, :].astype(jnp.float32) + bias[None, :].astype(jnp.float32),
            x_hat, inv_std)


def layer_norm_rows_grad(dy: jax.Array, x_hat: jax.Array, inv_std: jax.Array, scale: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(dx, d scale, d bias)`` of :func:`layer_norm_rows` for the output gradient ``dy [R, H]``
    (float32); the scale and bias gradients summed over the rows ``[H]``."""
    width = x_hat.shape[-1]
    g = dy * scale[None, :].astype(jnp.float32)
    dx = inv_std * (g - jnp.sum(g, axis=-1, keepdims=True) / width
                    - x_hat * (jnp.sum(g * x_hat, axis=-1, keepdims=True) / width))
    return dx, jnp.sum(dy * x_hat, axis=0), jnp.sum(dy, axis=0)


def dropout_threshold(rate: float) -> int:
    """Keep an element iff its bits are >= this (as ``layers.dropout`` with ``rng="hash"``)."""
    return min(round(rate * 2.0**32), 2**32 - 1)


def kept(seed0: jax.Array, seed1: jax.Array, index: jax.Array, threshold: int) -> jax.Array:
    """The keep mask of the elements at flat indices ``index`` (uint32): ``hash_bits``' hash."""
    return mix32(mix32(index ^ seed0) + seed1) >= jnp.uint32(threshold)


def dropped(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout of ``x`` as ``layers.dropout`` computes it in ``x``'s dtype:
    ``x / (1 - rate)`` with the divisor rounded to that dtype (a Python float is weakly typed)
    and the quotient rounded once (divided in float32: Triton divides no bfloat16)."""
    divisor = float(np.asarray(1.0 - rate, x.dtype))
    quotient = (x.astype(jnp.float32) / divisor).astype(x.dtype)
    return jnp.where(keep, quotient, jnp.zeros_like(x))


def undropped(g: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """The gradient through :func:`dropped` (``keep`` None: no dropout)."""
    return g if keep is None else jnp.where(keep, g / (1.0 - rate), 0.0)


def dot(a: jax.Array, b: jax.Array, cdt, contract: tuple[int, int] = (1, 0)) -> jax.Array:
    """float32 product of ``a`` and ``b`` cast to the compute dtype, over the given axes."""
    return jax.lax.dot_general(a.astype(cdt), b.astype(cdt),
                               (((contract[0],), (contract[1],)), ((), ())),
                               preferred_element_type=jnp.float32)


def linear(x: jax.Array, w: jax.Array, b: jax.Array, cdt) -> jax.Array:
    """``x @ w + b`` rounded as ``nnx.Linear`` in the compute dtype (the product, then the sum)."""
    return dot(x, w, cdt).astype(cdt) + b.astype(cdt)


def store_rows(ref, row: int, value: jax.Array, col: int = 0) -> None:
    """Write ``value`` ``[n, m]`` (a vector as one row) at (row, col) of a kernel's output block."""
    if value.ndim == 1:
        value = value[None, :]
    ref[pl.ds(row, value.shape[0]), pl.ds(col, value.shape[1])] = value
