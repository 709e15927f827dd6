"""The MLM head's transform in Pallas kernels (model.head_kernel, Pallas' interpreter on the CPU):
the kernel math (erfc, GELU and its derivative) against scipy in float64, the head's loss and every
gradient against a float64 reference written out by hand, the bfloat16 roundings against the unfused
head, the batched (population) kernels against each member alone, and where the model uses them."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from conftest import float32_tolerance

import minilm_jax.model.kernel_math as kernel_math
from minilm_jax.model.head_kernel import head_kernel_applies, kernel_head_xent
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.target_platform import building_for
from minilm_jax.model.xent_kernel import kernel_linear_xent

EPS = 1e-5
ERFC_ABS = 3.5e-7  # Numerical Recipes' fit evaluated in float32 (its own error < 1.2e-7 relative)


def test_erfc_gelu_and_its_derivative_against_scipy_in_float64():
    z = np.linspace(-9.0, 9.0, 20001).astype(np.float32)
    want = special.erfc(z.astype(np.float64))
    got = np.asarray(kernel_math.erfc(jnp.asarray(z)), np.float64)
    assert np.max(np.abs(got - want)) <= ERFC_ABS
    tail = want > 1e-6  # relative accuracy where the value is not below float32's resolution of 1
    assert np.max(np.abs(got - want)[tail] / want[tail]) <= 2e-6
    x = z.astype(np.float64)
    cdf = 0.5 * special.erfc(-x / math.sqrt(2.0))
    gelu = np.asarray(kernel_math.gelu(jnp.asarray(z)), np.float64)
    # erfc's error times |x| / 2, plus float32 rounding of the two products
    assert np.all(np.abs(gelu - x * cdf) <= 0.5 * np.abs(x) * ERFC_ABS + 4 * 2.0**-24 * np.abs(x))
    grad = np.asarray(kernel_math.gelu_grad(jnp.asarray(z)), np.float64)
    want_grad = cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    assert np.max(np.abs(grad - want_grad)) <= 0.5 * ERFC_ABS + 8 * 2.0**-24 * 3.0


def _problem(n: int, h: int, v: int, seed: int):
    rng = np.random.default_rng(seed)

    def f32(*shape, scale=1.0, loc=0.0):
        return jnp.asarray(rng.normal(loc, scale, shape), jnp.float32)

    rows = f32(n, h)
    return (rows, f32(h, h, scale=0.3), f32(h, scale=0.1), f32(h, scale=0.2, loc=1.0),
            f32(h, scale=0.1), f32(h, v, scale=0.2), f32(v, scale=0.1),
            jnp.asarray(rng.integers(0, v, n), jnp.int32),
            jnp.asarray(rng.random(n) * (np.arange(n) % 4 != 0), jnp.float32))


def _float64_reference(rows, w, b, s, beta, wd, bd, t, wt, g=1.0):
    """``g * loss`` and its gradients for (rows, W, b, scale, bias, W_dec, b_dec, weights),
    written out in numpy float64."""
    x, w, b, s, beta, wd, bd, wt = (np.asarray(a, np.float64)
                                    for a in (rows, w, b, s, beta, wd, bd, wt))
    t = np.asarray(t)
    z = x @ w + b
    cdf = 0.5 * special.erfc(-z / math.sqrt(2.0))
    a = z * cdf
    mean = a.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(((a - mean) ** 2).mean(-1, keepdims=True) + EPS)
    a_hat = (a - mean) * inv
    y = a_hat * s + beta
    logits = y @ wd + bd
    top = logits.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    r = np.arange(len(t))
    nll = lse - logits[r, t]
    d = np.exp(logits - lse[:, None])
    d[r, t] -= 1.0
    d *= g * wt[:, None]
    dy = d @ wd.T
    gs = dy * s
    da = inv * (gs - gs.mean(-1, keepdims=True) - a_hat * (gs * a_hat).mean(-1, keepdims=True))
    dz = da * (cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))
    return g * float(nll @ wt), (dz @ w.T, x.T @ dz, dz.sum(0), (dy * a_hat).sum(0), dy.sum(0),
                                 y.T @ d, d.sum(0), g * nll)


NAMES = ("rows", "W", "b", "scale", "bias", "W_dec", "b_dec", "weights")
ARGNUMS = (0, 1, 2, 3, 4, 5, 6, 8)


def _assert_close(got, grads, want, want_grads, terms):
    # the kernel's erfc is within 3 float32 ulps of GELU's value (ERFC_ABS): three more
    # rounding paths than two float32 computations of the same sums
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=float32_tolerance(abs(want), terms, paths=5))
    for name, a, e in zip(NAMES, grads, want_grads):
        np.testing.assert_allclose(a, e, rtol=0, err_msg=name,
                                   atol=float32_tolerance(float(np.abs(e).max()), terms, paths=5))


# 300 rows (padded to whole row blocks), one hidden size per block shape (64 x 128 up to 64
# columns, 32 x 64 above), vocabularies with several splits and a ragged last block
@pytest.mark.parametrize("shape", [(300, 32, 1000), (130, 128, 700)])
def test_head_loss_and_every_gradient_against_float64(shape):
    n, h, v = shape
    problem = _problem(n, h, v, seed=3)
    fn = jax.value_and_grad(lambda *a: 0.37 * kernel_head_xent(*a, EPS), argnums=ARGNUMS)
    got, grads = jax.jit(fn)(*problem)
    want, want_grads = _float64_reference(*problem, g=0.37)
    _assert_close(got, grads, want, want_grads, n + h + v)


def _unfused(rows, w, b, s, beta, wd, bd, t, wt, dtype):
    """The head as the model computes it off the kernels: nnx.Linear's roundings in ``dtype``,
    GELU, a float32 LayerNorm, then the output layer's kernels."""
    z = jnp.dot(rows.astype(dtype), w.astype(dtype)) + b.astype(dtype)
    a = jax.nn.gelu(z, approximate=False).astype(jnp.float32)
    mean = a.mean(-1, keepdims=True)
    c = a - mean
    y = c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + EPS) * s + beta
    return kernel_linear_xent(y.astype(dtype), wd, bd, t, wt, jnp.dtype(dtype).name)


def test_bfloat16_head_is_the_unfused_heads_function():
    """bfloat16 operands: the same roundings as the unfused head up to bfloat16's half ulp
    (2^-9) on the few values where a float32 difference moves a rounding; the parameters'
    gradients keep their dtypes."""
    problem = _problem(300, 32, 1000, seed=5)
    fused = jax.value_and_grad(lambda *a: kernel_head_xent(*a, EPS, "bfloat16"), argnums=ARGNUMS)
    got, grads = jax.jit(fused)(*problem)
    want, want_grads = jax.jit(jax.value_and_grad(
        lambda *a: _unfused(*a, jnp.bfloat16), argnums=ARGNUMS))(*problem)
    np.testing.assert_allclose(got, want, rtol=2.0**-8)
    assert [g.dtype for g in grads] == [jnp.float32] * len(ARGNUMS)
    for name, a, e in zip(NAMES, grads, want_grads):
        scale = float(jnp.abs(e).max())
        # bfloat16 operands of the backward GEMMs: relative 2^-8 per operand, both sides
        assert float(jnp.abs(a - e).max()) <= 4 * 2.0**-8 * scale, name


def test_the_kernels_under_vmap_equal_each_member_alone():
    """A population vmaps the loss over members: each member's loss and gradients its own."""
    members = [_problem(200, 32, 500, seed=s) for s in (1, 2)]
    stacked = [jnp.stack(parts) for parts in zip(*members)]
    fn = jax.value_and_grad(lambda *a: kernel_head_xent(*a, EPS), argnums=ARGNUMS)
    losses, grads = jax.jit(jax.vmap(fn))(*stacked)
    for m, problem in enumerate(members):
        loss, grads_m = jax.jit(fn)(*problem)
        np.testing.assert_allclose(losses[m], loss, rtol=0,
                                   atol=float32_tolerance(abs(float(loss)), 732))
        for name, a, e in zip(NAMES, grads, grads_m):
            np.testing.assert_allclose(a[m], e, rtol=0, err_msg=name,
                                       atol=float32_tolerance(float(jnp.abs(e).max()), 732))


def test_the_model_runs_its_transform_in_the_kernels_where_they_apply():
    """``mlm_loss_impl='kernel'``: the paper's 1.25M point (hidden 32) takes the head kernels and
    its loss equals the XLA formulation's (``fused``); a hidden size they do not take (48) keeps
    the transform in XLA."""
    assert head_kernel_applies(32) and head_kernel_applies(128)
    assert not any(head_kernel_applies(h) for h in (8, 24, 48, 256))
    cfg = resolve_point("paper-1.25m", vocab_size=500)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(5, 500, (4, 32)), jnp.int32)
    positions = jnp.asarray(rng.integers(0, 32, (4, 5)), jnp.int32)
    targets = jnp.asarray(rng.integers(5, 500, (4, 5)), jnp.int32)
    weights = jnp.ones((4, 5), jnp.float32)
    losses = {}
    for impl in ("kernel", "fused"):
        model = build_mlm(cfg.replace(mlm_loss_impl=impl), seed=0)
        if impl == "kernel":
            assert model.mlm_head.transform_in_kernels()
        losses[impl] = float(model.mlm_loss(tokens, positions, targets, weights)[0])
    assert abs(losses["kernel"] - losses["fused"]) <= float32_tolerance(losses["fused"], 532,
                                                                         paths=5)
    wide = build_mlm(cfg.replace(mlm_loss_impl="kernel", hidden_dim=48, emb_dim=48,
                                 ffn_dim=96, num_heads=2), seed=0)
    assert not wide.mlm_head.transform_in_kernels()
    with building_for("gpu"):
        assert build_mlm(cfg, seed=0).mlm_head.loss_impl() == "kernel"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernel_dropout_is_layers_dropout_bit_for_bit(dtype):
    """The kernels' hash dropout (kernel_math.kept / dropped, from an element's flat index and
    the key's two seed words) keeps and scales exactly what ``layers.dropout(..., "hash")`` does:
    the divisor ``1 - rate`` rounded to the dtype as a weakly typed Python float is."""
    from minilm_jax.model.layers import dropout

    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 48)), dtype)
    key, rate = jax.random.key(3), 0.1
    want = dropout(x, rate, key, "hash")
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    index = jnp.arange(x.size, dtype=jnp.uint32).reshape(x.shape)
    keep = kernel_math.kept(seeds[0], seeds[1], index, kernel_math.dropout_threshold(rate))
    got = kernel_math.dropped(x, keep, rate)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    assert 0.05 < 1.0 - float(jnp.mean(keep)) < 0.15
