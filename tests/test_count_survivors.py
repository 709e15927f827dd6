"""Traced matmul FLOPs (minilm_jax/model/traced_flops.py) of convolutions and custom derivatives,
against hand counts: a convolution does, per output element, one multiply-add per kernel element
of one output feature (``I / groups x window``), in any layout and with feature groups; a
``custom_vjp`` function is traced through once, alone and inside a user's encoder variant."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from minilm_jax.model import accounting
from minilm_jax.model.count_check import check_declared_counts, same_as_builtin
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.traced_flops import encoder_matmul_flops, matmul_flops


def flops(fn, *args) -> float:
    return matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_a_convolution_counts_one_multiply_add_per_kernel_element_of_its_output_feature(groups):
    n, c, o, h, w, kh, kw = 2, 4, 8, 9, 7, 3, 2
    x = jnp.ones((n, c, h, w))
    k = jnp.ones((o, c // groups, kh, kw))
    out_h, out_w = h - kh + 1, w - kw + 1  # VALID, stride 1
    hand = 2 * (n * o * out_h * out_w) * (c // groups) * kh * kw
    conv = flops(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "VALID",
                                                       feature_group_count=groups), x, k)
    assert conv == hand
    # the same convolution channels-last (NHWC input, HWIO kernel): the same count
    nhwc = flops(lambda a, b: lax.conv_general_dilated(
        a, b, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups), jnp.ones((n, h, w, c)), jnp.ones((kh, kw, c // groups, o)))
    assert nhwc == hand
    # stride 2 halves (rounded up) each output side: the count follows the output's size
    strided = flops(lambda a, b: lax.conv_general_dilated(a, b, (2, 2), "VALID",
                                                          feature_group_count=groups), x, k)
    assert strided == 2 * (n * o * math.ceil(out_h / 2) * math.ceil(out_w / 2)) * (
        c // groups) * kh * kw


W = jnp.ones((6, 6))


@jax.custom_vjp
def mixed(y):
    """``y @ M`` (M: E x E ones / E) with a hand-written backward."""
    return y @ (jnp.ones((y.shape[-1], y.shape[-1]), y.dtype) / y.shape[-1])


mixed.defvjp(lambda y: (mixed(y), None), lambda _, g: (g,))


def test_a_custom_vjp_is_traced_through_once():
    x = jnp.ones((4, 6))
    assert flops(mixed, x) == 2 * 4 * 6 * 6
    assert flops(lambda a: mixed(mixed(a)) @ W, x) == 3 * 2 * 4 * 6 * 6


class CustomVjpMixedEncoder(TransformerEncoder):
    """The built-in encoder, its output passed through :func:`mixed` (one E x E matmul per
    token, with a custom derivative)."""

    def __call__(self, tokens_bt, *args, **kwargs):
        return mixed(super().__call__(tokens_bt, *args, **kwargs))


def test_a_variant_with_a_custom_vjp_is_counted_by_hand():
    for cache in (encoder_matmul_flops, accounting.derived_counts, check_declared_counts,
                  same_as_builtin):
        cache.cache_clear()
    base = resolve_point("E16-H16-I32-L1-A2-V300").replace(max_len=16)
    variant = base.replace(arch="test_count_survivors:CustomVjpMixedEncoder")
    tokens, emb = base.max_len, base.emb_dim
    assert encoder_matmul_flops(variant) - encoder_matmul_flops(base) == 2 * tokens * emb * emb
    assert accounting.variant_counts(variant).forward_flops == 2 * tokens * emb * emb
