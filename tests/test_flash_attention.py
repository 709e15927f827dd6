"""The flash-attention kernels (Pallas' interpreter on CPU) against independent computations: a
float64 softmax attention with ``layers.dropout``'s hash mask (values, and gradients by autodiff),
the dropout mask read off element by element, and the whole encoder's einsum path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance

from minilm_jax.model.config import ConfigError, ModelConfig
import minilm_jax.model.pallas_backend as pallas_backend
from minilm_jax.model.attention_rules import NEG_INF, attention_mask, hash_bits, segment_ids_from_mask
from minilm_jax.model.flash_attention import flash_attention, kernel_applies
from minilm_jax.model.layers import dropout
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point


def _segments(b: int, t: int) -> jnp.ndarray:
    """Row 0: two packed documents then padding; row 1: one document then padding; row 2 (if any):
    one document filling the row."""
    rows = [[1] * (t // 3) + [2] * (t // 2) + [0] * (t - t // 3 - t // 2),
            [3] * (t - 5) + [0] * 5, [1] * t]
    return jnp.asarray(rows[:b], jnp.int32)


def _operands(b, t, heads, d, seed=0):
    keys = jax.random.split(jax.random.key(seed), 5)
    q, k, v = (jax.random.normal(key, (b, t, heads, d), jnp.float32) for key in keys[:3])
    bias = jax.random.normal(keys[3], (heads, t, t), jnp.float32)
    cot = jax.random.normal(keys[4], (b, t, heads, d), jnp.float32)
    return q, k, v, bias, cot


def _reference(q, k, v, seg, rate, key, bias):
    """Softmax attention in float64: scaled scores (+ bias), NEG_INF where ``attention_mask``
    forbids, softmax, ``layers.dropout(probs, rate, key, "hash")``, probabilities times values."""
    d = q.shape[-1]
    s = jnp.einsum("bqad,bkad->baqk", q, k) / np.sqrt(d)
    if bias is not None:
        s = s + bias
    probs = jax.nn.softmax(jnp.where(attention_mask(seg), s, NEG_INF), axis=-1)
    probs = dropout(probs, rate, key, "hash")
    return jnp.einsum("baqk,bkad->bqad", probs, v)


def _reference_value_and_grads(q, k, v, seg, rate, key, bias, cot):
    """(output, (dq, dk, dv)) of ``sum(out * cot)`` in float64, as float64 numpy arrays."""
    with jax.enable_x64(True):
        q, k, v, cot = (jnp.asarray(np.asarray(x), jnp.float64) for x in (q, k, v, cot))
        bias = None if bias is None else jnp.asarray(np.asarray(bias), jnp.float64)
        out = _reference(q, k, v, seg, rate, key, bias)
        grads = jax.grad(lambda q, k, v: jnp.sum(_reference(q, k, v, seg, rate, key, bias) * cot),
                         (0, 1, 2))(q, k, v)
        return np.asarray(out), tuple(np.asarray(g) for g in grads)


def _kernel_value_and_grads(q, k, v, seg, rate, key, bias, cot, blocks):
    def loss(q, k, v, bias):
        out = flash_attention(q, k, v, seg, dropout_rate=rate, dropout_key=key, score_bias=bias,
                              block_q=blocks[0], block_k=blocks[1])
        return jnp.sum(out * cot), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(q, k, v, bias)
    return out, grads


@pytest.mark.parametrize("t,d,rate,with_bias,blocks", [
    (40, 16, 0.0, False, (16, 32)),  # T padded to 64: 4 query blocks, 2 key blocks
    (40, 32, 0.3, True, (32, 16)),  # dropout and a score bias, 2 query and 4 key blocks
    (24, 24, 0.3, False, (None, None)),  # D padded 24 -> 32, T 24 -> 32 (the default block)
])
def test_kernel_matches_float64_attention(t, d, rate, with_bias, blocks):
    """Values and dq, dk, dv of a random-cotangent-weighted sum, on packed documents and padding
    (the padding rows too: their uniform softmax over every real key, as in the einsum path)."""
    b, heads = 3, 2
    q, k, v, bias, cot = _operands(b, t, heads, d)
    bias = bias if with_bias else None
    seg, key = _segments(b, t), jax.random.key(11)
    want, want_grads = _reference_value_and_grads(q, k, v, seg, rate, key, bias, cot)
    got, got_grads = _kernel_value_and_grads(q, k, v, seg, rate, key, bias, cot, blocks)
    # each output sums T probability-weighted values after a D-term score; each gradient sums
    # over T keys (or queries) of D-term products, then the D-wide contraction
    terms = 2 * (t + d)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=float32_tolerance(float(np.abs(want).max()), terms))
    for name, g, w in zip(("dq", "dk", "dv"), got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=0, err_msg=name,
                                   atol=float32_tolerance(float(np.abs(w).max()), terms))
    if with_bias:  # a constant to the kernels
        np.testing.assert_array_equal(got_grads[3], 0.0)


def test_dropout_mask_is_layers_dropout_mask():
    """With V = the identity (D = T) the output is the dropped probability matrix itself, so every
    element shows whether the kernel kept it: the kept set equals ``hash_bits(key, (B, A, T, T)) >=
    rate * 2^32`` exactly (every probability is positive: one document per row), and the kept
    values are ``layers.dropout``'s ``probs / (1 - rate)``."""
    b, heads, t, rate = 2, 2, 24, 0.5
    q, k, _, _, _ = _operands(b, t, heads, t, seed=3)
    v = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32)[None, :, None, :], (b, t, heads, t))
    seg, key = jnp.ones((b, t), jnp.int32), jax.random.key(5)
    out = flash_attention(q, k, v, seg, dropout_rate=rate, dropout_key=key, block_q=16,
                          block_k=16)
    dropped_batt = np.asarray(out).transpose(0, 2, 1, 3)
    kept = np.asarray(hash_bits(key, (b, heads, t, t))) >= np.uint32(round(rate * 2.0**32))
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(dropped_batt != 0, kept)
    s = jnp.einsum("bqad,bkad->baqk", q, k) / np.sqrt(t)
    want = np.asarray(dropout(jax.nn.softmax(s, axis=-1), rate, key, "hash"))
    np.testing.assert_allclose(dropped_batt, want, rtol=0,
                               atol=float32_tolerance(float(want.max()), 2 * t))
    # another key, another mask: the seed words reach the kernel
    other = flash_attention(q, k, v, seg, dropout_rate=rate, dropout_key=jax.random.key(6),
                            block_q=16, block_k=16)
    assert np.mean((np.asarray(other).transpose(0, 2, 1, 3) != 0) != kept) > 0.3


def test_segment_ids_from_mask_give_the_mask_back():
    seg = jnp.asarray([[1, 1, 2, 2, 2, 0], [5, 5, 5, 7, 0, 0], [0, 0, 0, 0, 0, 0]], jnp.int32)
    canon = segment_ids_from_mask(attention_mask(seg))
    np.testing.assert_array_equal(canon, [[1, 1, 3, 3, 3, 0], [1, 1, 1, 4, 0, 0], [0] * 6])
    np.testing.assert_array_equal(attention_mask(canon), attention_mask(seg))


def test_encoder_flash_matches_einsum_in_train_mode():
    """The whole encoder (2 layers, 2 heads of 16, packed documents and padding, every dropout on
    with one key), forward and parameter gradients, attention_impl "flash" against "einsum" on the
    same parameters: the same function, the same dropout masks."""
    point = "E32-H32-I64-L2-A2-V300"
    einsum_model = build_mlm(resolve_point(point, attention_dropout=0.2))
    flash_model = build_mlm(resolve_point(point, attention_dropout=0.2, attention_impl="flash"))
    nnx.update(flash_model, nnx.state(einsum_model))
    b, t = 3, 24
    toks = jnp.asarray(np.random.default_rng(0).integers(5, 300, (b, t)), jnp.int32)
    seg, key = _segments(b, t), jax.random.key(2)
    cot = jax.random.normal(jax.random.key(9), (b, t, 32))

    def value_and_grads(model):
        graphdef, params, rest = nnx.split(model.encoder, nnx.Param, ...)

        def loss(params):
            hidden = nnx.merge(graphdef, params, rest)(toks, seg, dropout_key=key, train=True)
            return jnp.sum(hidden * cot), hidden

        (_, hidden), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return hidden, grads

    want, want_grads = value_and_grads(einsum_model)
    got, got_grads = value_and_grads(flash_model)
    # per layer: the widest reductions (FFN 64, hidden 32), attention over T; the gradients
    # also sum over the B*T positions
    terms = 2 * (64 + 32 + t) + b * t
    np.testing.assert_allclose(got, want, rtol=0, atol=float32_tolerance(
        float(jnp.abs(want).max()), terms))
    # a leaf's scale is its module's largest gradient: the key bias's gradient is zero in exact
    # arithmetic (a softmax ignores a shift of a row's scores), rounding noise of the same dk
    # terms that form the key kernel's gradient
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want_grads))
    module_scale = {}
    for path, w in flat_want.items():
        module_scale[path[:-2]] = max(module_scale.get(path[:-2], 0.0), float(jnp.abs(w).max()))
    for path, g in jax.tree_util.tree_leaves_with_path(got_grads):
        np.testing.assert_allclose(g, flat_want[path], rtol=0, err_msg=jax.tree_util.keystr(path),
                                   atol=float32_tolerance(module_scale[path[:-2]], terms))


def test_flash_under_vmap_matches_each_member():
    """A population's members (vmap over parameters and keys, as in its step): each member's
    output is its own float64 attention with its own dropout mask."""
    b, heads, t, d, rate = 2, 2, 20, 16, 0.25
    members = [_operands(b, t, heads, d, seed=s) for s in (0, 1)]
    seg = _segments(b, t)
    keys = jax.random.split(jax.random.key(4), 2)
    stacked = [jnp.stack([m[i] for m in members]) for i in range(3)]
    out = jax.jit(jax.vmap(lambda q, k, v, key: flash_attention(
        q, k, v, seg, dropout_rate=rate, dropout_key=key)))(*stacked, keys)
    for n, (q, k, v, _, cot) in enumerate(members):
        want, _ = _reference_value_and_grads(q, k, v, seg, rate, keys[n], None, cot)
        np.testing.assert_allclose(out[n], want, rtol=0, err_msg=f"member {n}",
                                   atol=float32_tolerance(float(np.abs(want).max()), 2 * (t + d)))


def test_flash_configs_and_shapes():
    assert kernel_applies(16) and kernel_applies(128) and not kernel_applies(129)
    ModelConfig(attention_impl="flash")
    ModelConfig(attention_impl="flash", dropout_rng="threefry", attention_dropout=0.0)
    with pytest.raises(ConfigError, match="model.dropout_rng: must be 'hash'"):
        ModelConfig(attention_impl="flash", dropout_rng="threefry")
    q = jnp.zeros((1, 8, 1, 256))
    with pytest.raises(ValueError, match="head sizes up to 128"):
        flash_attention(q, q, q, jnp.ones((1, 8), jnp.int32))


def test_kernels_lower_to_triton(monkeypatch):
    """Every operation of the three kernels has a Triton lowering (bf16, padding, dropout, bias):
    the step lowered for CUDA on this CPU machine, where only the interpreter runs."""
    from jax import export

    monkeypatch.setattr(pallas_backend, "interpret", lambda: False)
    b, t, heads, d = 2, 40, 2, 24
    x = jax.ShapeDtypeStruct((b, t, heads, d), jnp.bfloat16)

    def loss(q, k, v, seg, bias):
        out = flash_attention(q, k, v, seg, dropout_rate=0.1, dropout_key=jax.random.key(0),
                              score_bias=bias)
        return jnp.sum(out.astype(jnp.float32))

    exported = export.export(
        jax.jit(jax.grad(loss, (0, 1, 2))), platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(
        x, x, x, jax.ShapeDtypeStruct((b, t), jnp.int32),
        jax.ShapeDtypeStruct((heads, t, t), jnp.float32))
    text = exported.mlir_module()
    assert sorted(set(re.findall(r'name = "(flash_attention_\w+)"', text))) == [
        "flash_attention_dkv", "flash_attention_dq", "flash_attention_forward"]
    assert text.count("__gpu$xla.gpu.triton") == 3
