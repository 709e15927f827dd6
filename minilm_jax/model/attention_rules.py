"""The two rules both attention paths share (the einsum path of
:class:`~minilm_jax.model.layers.SelfAttention` and the Pallas kernels of
:mod:`~minilm_jax.model.flash_attention`), so they give the same numbers: which key a query may
see (segments; a masked score is :data:`NEG_INF`) and the dropout bits (:func:`hash_bits`: a keyed
hash of each element's flat index)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e9  # finite, so that fully masked rows (padding queries) stay NaN-free


def mix32(h_u32: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection that mixes every input bit into every output bit."""
    h_u32 = h_u32 ^ (h_u32 >> 16)
    h_u32 = h_u32 * jnp.uint32(0x85EBCA6B)
    h_u32 = h_u32 ^ (h_u32 >> 13)
    h_u32 = h_u32 * jnp.uint32(0xC2B2AE35)
    return h_u32 ^ (h_u32 >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform uint32 bits of ``shape``: a keyed two-round hash of each element's flat index.

    Counter-based like threefry, so the bits of an element depend only on (key, index): the same on
    any mesh, and computed inside the consumer's fusion instead of a separate random-bits pass.
    Statistically fine for dropout masks (not for anything cryptographic).
    """
    seed_u32 = jax.random.bits(key, (2,), jnp.uint32)
    index_u32 = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(len(shape))):
        index_u32 = index_u32 + jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * jnp.uint32(stride)
        stride = (stride * shape[dim]) % (1 << 32)
    return mix32(mix32(index_u32 ^ seed_u32[0]) + seed_u32[1])


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """Boolean mask [B, 1, T, T]: query i may attend key j iff both sit in the same non-zero segment.

    Segment 0 is padding; packed documents carry distinct ids 1, 2, ... so they never see each other.
    """
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
    real_key = (segment_ids != 0)[:, None, :]  # [B, 1, T]
    return (same & real_key)[:, None, :, :]


def segment_ids_from_mask(mask_b1tt: jax.Array) -> jax.Array:
    """Segment ids ``[B, T]`` that give ``mask_b1tt`` back under ``attention_mask``, for a mask that
    ``attention_mask`` built: each real query's first visible key + 1 names its segment, 0 for a
    query that sees no key (padding). A reduction over the boolean mask; no scores."""
    mask_btt = mask_b1tt[:, 0]
    first_bt = jnp.argmax(mask_btt, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.any(mask_btt, axis=-1), first_bt + 1, 0)
