"""The CPU fast paths: hash-based dropout masks and the fused output layer + cross-entropy.

Each is checked against the plain computation it replaces (values and gradients), on awkward
shapes (rows not a multiple of the chunk, zero weights), and across meshes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from conftest import float32_tolerance

from minilm_jax.model.config import ConfigError
from minilm_jax.model.layers import dropout, hash_bits
from minilm_jax.model.models import build_mlm
from minilm_jax.model.xent import fused_linear_xent, resolve_loss_impl, softmax_xent_sum
from minilm_jax.model.sizes import resolve_point

SMALL = "E16-H16-I32-L1-A2-V97"


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_hash_dropout_rate_and_scale(rate):
    x = jnp.ones((64, 128, 128))
    y = np.asarray(dropout(x, rate, jax.random.key(3)))
    kept = y != 0
    n = kept.size
    assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    # inverted dropout: 1 - rate, the quotient (or a reciprocal and a product) each round once
    # in float32, eps / 2 apiece: at most 1.5 eps
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=2 * np.finfo(np.float32).eps)


def test_hash_bits_are_uniform_and_independent():
    a = np.asarray(hash_bits(jax.random.key(0), (1024, 1024)), np.float64).ravel() / 2.0**32
    b = np.asarray(hash_bits(jax.random.key(1), (1024, 1024)), np.float64).ravel() / 2.0**32
    hist, _ = np.histogram(a, bins=16, range=(0, 1))
    expected = a.size / 16
    assert ((hist - expected) ** 2 / expected).sum() < 60  # chi-square, 15 dof: p ~ 1e-7
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.005  # two keys
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.005  # neighbouring elements
    assert abs(np.corrcoef(a[:-1024], a[1024:])[0, 1]) < 0.005  # neighbouring rows
    np.testing.assert_array_equal(a, np.asarray(hash_bits(jax.random.key(0), (1024, 1024)),
                                                np.float64).ravel() / 2.0**32)


def test_hash_dropout_same_on_any_mesh():
    """Counter-based: the mask of an element depends on (key, index) only, not on sharding."""
    x = jnp.arange(8 * 16 * 32, dtype=jnp.float32).reshape(8, 16, 32)
    key = jax.random.key(7)
    ref = np.asarray(jax.jit(dropout, static_argnums=1)(x, 0.3, key))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    sharded = jax.device_put(x, NamedSharding(mesh, P("data", None, "model")))
    out = jax.jit(dropout, static_argnums=1)(sharded, 0.3, key)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_threefry_dropout_still_available():
    x = jnp.ones((256, 256))
    a = dropout(x, 0.2, jax.random.key(0), "threefry")
    b = jnp.where(jax.random.bernoulli(jax.random.key(0), 0.8, x.shape), x / 0.8, 0.0)
    np.testing.assert_array_equal(a, b)


def _problem(n=300, h=24, v=257, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(k[0], (n, h))
    w = jax.random.normal(k[1], (h, v)) * 0.2
    b = jax.random.normal(k[2], (v,)) * 0.1
    t = jax.random.randint(k[3], (n,), 0, v)
    wt = (jnp.arange(n) % 3 != 0).astype(jnp.float32)  # a third of the rows weigh nothing
    return x, w, b, t, wt


# 300 rows: one per chunk (no padding), padded (the default chunk: 3 chunks, 84 rows of padding),
# one chunk (the scan over the rest is empty). 64 (padded too, 5 chunks) is the same path as 128.
@pytest.mark.parametrize("chunk", [1, 128, 1000])
def test_fused_xent_matches_plain_values_and_gradients(chunk):
    x, w, b, t, wt = _problem()

    def plain(x, w, b, wt):
        return softmax_xent_sum(x @ w + b, t, wt)

    def fused(x, w, b, wt):
        return fused_linear_xent(x, w, b, t, wt, chunk)

    want = plain(x, w, b, wt)
    # the 257-way logsumexp, the 300-row sum and the 24-wide matmul, each in another order
    tol = float32_tolerance(float(jnp.abs(want)), 257 + 300 + 24)
    np.testing.assert_allclose(fused(x, w, b, wt), want, rtol=0, atol=tol)
    np.testing.assert_allclose(jax.jit(fused)(x, w, b, wt), want, rtol=0, atol=tol)
    g_plain = jax.grad(plain, argnums=(0, 1, 2, 3))(x, w, b, wt)
    g_fused = jax.jit(jax.grad(fused, argnums=(0, 1, 2, 3)))(x, w, b, wt)
    for got, want in zip(g_fused, g_plain):  # the same reductions, at each gradient's scale
        gtol = float32_tolerance(float(jnp.abs(want).max()), 257 + 300 + 24)
        np.testing.assert_allclose(got, want, rtol=0, atol=gtol)
    # A scaled cotangent (the 1/count of the mean loss) scales every gradient.
    # (jitted: op by op, the custom VJP's forward took 4x the CPU time)
    g_half = jax.jit(jax.grad(lambda *a: 0.5 * fused(*a), argnums=1))(x, w, b, wt)
    want = 0.5 * g_fused[1]  # another program: the same reductions, perhaps in other orders
    np.testing.assert_allclose(g_half, want, rtol=0,
                               atol=float32_tolerance(float(jnp.abs(want).max()), 257 + 300 + 24))


def test_fused_xent_bf16_compute_is_close():
    x, w, b, t, wt = _problem()
    ref = softmax_xent_sum(x @ w + b, t, wt)
    got = fused_linear_xent(x, w, b, t, wt, 128, "bfloat16")
    np.testing.assert_allclose(got, ref, rtol=2e-2)
    gw = jax.jit(jax.grad(fused_linear_xent, argnums=1), static_argnums=(5, 6))(
        x, w, b, t, wt, 128, "bfloat16")  # jitted: op by op took 3x the CPU time
    assert gw.dtype == jnp.float32  # gradients come back in the parameters' dtype


def _model_loss_and_grads(impl):
    cfg = resolve_point(SMALL, mlm_loss_impl=impl, mlm_loss_chunk=7, hidden_dropout=0.0,
                        attention_dropout=0.0)
    model = build_mlm(cfg, seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(5, 97, (4, 128)), jnp.int32)
    positions = jnp.asarray(rng.integers(0, 128, (4, 9)), jnp.int32)
    targets = jnp.asarray(rng.integers(5, 97, (4, 9)), jnp.int32)
    weights = jnp.asarray(rng.random((4, 9)) < 0.7, jnp.float32)

    def loss(params):
        m = nnx.merge(graphdef, params, rest)
        total, count = m.mlm_loss(tokens, positions, targets, weights)
        return total / count

    # jitted, as a training step runs it: the eager op-by-op gradient took ~10x the CPU time
    return jax.jit(jax.value_and_grad(loss))(params)


def test_model_loss_fused_equals_logits_path():
    loss_f, grads_f = _model_loss_and_grads("fused")
    loss_l, grads_l = _model_loss_and_grads("logits")
    # the 97-way logsumexp, the layer's widest reduction (32) and the mean over 4 x 9 targets
    np.testing.assert_allclose(loss_f, loss_l, rtol=0,
                               atol=float32_tolerance(float(jnp.abs(loss_l)), 97 + 32 + 36))
    # gradients: those reductions, and a weight's gradient sums over 4 x 128 token positions; at
    # the largest gradient's scale, as a gradient that cancels to ~0 in exact arithmetic (the
    # attention key bias: softmax ignores a shift shared by all keys) still sums terms that large
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_l))
    gtol = float32_tolerance(scale, 97 + 32 + 36 + 4 * 128)
    for got, want in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_l)):
        np.testing.assert_allclose(got, want, rtol=0, atol=gtol)


_target_logprobs = jax.jit(lambda m, *a: m.target_logprobs(*a))
_all_logits = jax.jit(lambda m, tokens: m.all_logits(tokens))


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_target_logprobs_fused_equals_the_full_log_softmax(chunk):
    """Scoring's per-position log-probabilities: the chunked path, the logits path and the
    log-softmax of every position's logits agree (rows not a multiple of the chunk)."""
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(5, 97, (3, 16)), jnp.int32)
    positions = jnp.asarray(rng.integers(0, 16, (3, 5)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, 97, (3, 5)), jnp.int32)
    got = {}
    for impl in ("fused", "logits", "kernel"):
        # the logits path has no chunks: one model, and one compiled program, for every case
        fields = dict(mlm_loss_chunk=chunk) if impl == "fused" else {}
        model = build_mlm(resolve_point(SMALL, mlm_loss_impl=impl, **fields), seed=0)
        got[impl] = _target_logprobs(model, tokens, positions, targets)
    all_logits = _all_logits(model, tokens)  # compiled once, as op by op took 5x the CPU time
    logp_btv = jax.nn.log_softmax(all_logits.astype(jnp.float32))
    want = jnp.take_along_axis(jnp.take_along_axis(logp_btv, positions[..., None], 1),
                               targets[..., None], -1)[..., 0]
    assert got["fused"].shape == (3, 5) and got["fused"].dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(all_logits)))
    tol = float32_tolerance(scale, 97 + 1 * (16 + 32))  # the vocabulary's logsumexp, the layer's
    np.testing.assert_allclose(got["fused"], want, rtol=0, atol=tol)
    np.testing.assert_allclose(got["logits"], want, rtol=0, atol=tol)
    np.testing.assert_allclose(got["kernel"], want, rtol=0, atol=tol)


def test_auto_loss_impl_is_fused_on_cpu_and_fields_are_validated():
    assert resolve_loss_impl("auto") == {"cpu": "fused", "gpu": "kernel"}.get(
        jax.default_backend(), "logits")
    assert resolve_loss_impl("logits") == "logits"
    with pytest.raises(ConfigError, match="model.mlm_loss_impl"):
        resolve_point(SMALL, mlm_loss_impl="chunky")
    with pytest.raises(ConfigError, match="model.mlm_loss_chunk"):
        resolve_point(SMALL, mlm_loss_chunk=0)
    with pytest.raises(ConfigError, match="model.dropout_rng"):
        resolve_point(SMALL, dropout_rng="philox")
