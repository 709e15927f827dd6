"""The fused encoder layer (model.layer_impl="fused": model/fused_layer.py, two Pallas kernels run
by Pallas' interpreter on the CPU) is the unfused EncoderLayer's function: the same output and the
same gradients for x and every parameter, with the same dropout masks under the same key, in
float32 (also against float64) and bfloat16, on packed segments with padding, under vmap; an
explicit "fused" that cannot apply is one ConfigError line; "auto" keeps the unfused path on a CPU
build and takes the fused one on a GPU build (their Triton compile: tests/test_gpu_compile.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from minilm_jax.model.attention_rules import attention_mask, hash_bits
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.init import make_initializers
from minilm_jax.model.layers import EncoderLayer, split_key
from minilm_jax.model.target_platform import building_for

B, T, H, I, A = 2, 32, 32, 64, 2
F32_ULP, BF16_ULP = 2.0 ** -23, 2.0 ** -8


def make_layer(**changes) -> EncoderLayer:
    """A layer with every parameter perturbed (biases and norms away from 0 and 1), the same for
    the same seed whatever ``layer_impl``."""
    cfg = ModelConfig(hidden_dim=H, ffn_dim=I, num_heads=A, max_len=T, **changes)
    layer = EncoderLayer(cfg, make_initializers("bert"), nnx.Rngs(0))
    rng = np.random.default_rng(0)
    for _, p in sorted(nnx.iter_graph(layer), key=lambda kv: str(kv[0])):
        if isinstance(p, nnx.Param):
            p.value = jnp.asarray(np.asarray(p.value) + rng.normal(0, 0.2, p.value.shape),
                                  p.value.dtype)
    return layer


def inputs(dtype, t: int = T):
    """x [B, t, H], segment ids (row 0: two packed documents and padding; row 1: one document
    and padding), the output cotangent."""
    rng = np.random.default_rng(1)
    seg = np.zeros((B, t), np.int32)
    seg[0, :18], seg[0, 18:27], seg[1, :23] = 1, 2, 1
    x = jnp.asarray(rng.normal(0, 1, (B, t, H)), dtype)
    return x, jnp.asarray(seg), jnp.asarray(rng.normal(0, 1, (B, t, H)), jnp.float32)


def value_and_grads(layer, x, seg, cot, key):
    """(output float32, {module path: gradient}, dx)."""
    graphdef, params = nnx.split(layer, nnx.Param)
    mask = attention_mask(seg)

    def loss(params, x):
        y = nnx.merge(graphdef, params)(x, mask, key).astype(jnp.float32)
        return jnp.sum(y * cot), y

    (_, y), (grads, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    flat = {jax.tree_util.keystr(path[:-1]): np.asarray(g, np.float32)
            for path, g in jax.tree_util.tree_leaves_with_path(grads)}
    return np.asarray(y), flat, np.asarray(dx, np.float32)


def scale_of(grads, name):
    """A gradient's scale: the largest magnitude among its module's parameters' gradients (the
    key bias's gradient is 0 in exact arithmetic, a softmax row shifted by a constant: its
    rounding follows the key kernel's)."""
    module = name.rsplit("[", 1)[0]
    return max(float(np.max(np.abs(g))) for n, g in grads.items() if n.rsplit("[", 1)[0] == module)


def numpy_layer(layer, x, seg, key):
    """The post-LN layer in float64 numpy, written out independently, with the dropout masks of
    ``hash_bits`` under ``split_key(key, 3)``."""
    cfg = layer.cfg
    x = np.asarray(x, np.float64)
    p = {name: np.asarray(v, np.float64) for name, v in (
        ("wq", layer.attention.query.kernel), ("bq", layer.attention.query.bias),
        ("wk", layer.attention.key.kernel), ("bk", layer.attention.key.bias),
        ("wv", layer.attention.value.kernel), ("bv", layer.attention.value.bias),
        ("wo", layer.attention.output.kernel), ("bo", layer.attention.output.bias),
        ("w1", layer.ffn.up.kernel), ("b1", layer.ffn.up.bias), ("w2", layer.ffn.down.kernel),
        ("b2", layer.ffn.down.bias), ("s1", layer.attention_norm.scale),
        ("c1", layer.attention_norm.bias), ("s2", layer.ffn_norm.scale),
        ("c2", layer.ffn_norm.bias))}

    def drop(v, rate, k):
        if k is None:
            return v
        thr = min(round(rate * 2.0 ** 32), 2 ** 32 - 1)
        return np.where(np.asarray(hash_bits(k, v.shape)) >= thr, v / (1 - rate), 0.0)

    def norm(v, s, c):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + cfg.layer_norm_eps) * s + c

    k_probs, k_attn, k_ffn = split_key(key, 3)
    d = H // A
    t = x.shape[1]
    heads = lambda v: v.reshape(B, t, A, d).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (heads(x @ p["w" + n] + p["b" + n]) for n in "qkv")
    s = np.einsum("baqd,bakd->baqk", q, k) / np.sqrt(d)
    s = np.where(np.asarray(attention_mask(seg)), s, -1e9)
    e = np.exp(s - s.max(-1, keepdims=True))
    probs = drop(e / e.sum(-1, keepdims=True), cfg.attention_dropout, k_probs)
    ctx = np.einsum("baqk,bakd->baqd", probs, v).transpose(0, 2, 1, 3).reshape(B, t, H)
    x1 = norm(x + drop(ctx @ p["wo"] + p["bo"], cfg.hidden_dropout, k_attn), p["s1"], p["c1"])
    u = x1 @ p["w1"] + p["b1"]
    ffn = (0.5 * u * (1 + erf(u / np.sqrt(2)))) @ p["w2"] + p["b2"]
    return norm(x1 + drop(ffn, cfg.hidden_dropout, k_ffn), p["s2"], p["c2"])


@pytest.mark.parametrize("dropout, t", [(False, T), (True, T), (True, 48)])
def test_float32_fused_layer_is_the_unfused_layer(dropout, t):
    """T = 48: padded to 64 rows in the kernels (padding keys excluded, rows sliced off)."""
    x, seg, cot = inputs(jnp.float32, t)
    key = jax.random.key(7) if dropout else None
    y_ref, g_ref, dx_ref = value_and_grads(make_layer(layer_impl="xla"), x, seg, cot, key)
    fused = make_layer(layer_impl="fused")
    y, g, dx = value_and_grads(fused, x, seg, cot, key)
    # float32 through sums of at most I = 64 terms: n u = 2^6 x 2^-24 of the result's scale
    # (2^-16 below: the order of the sums differs and erf is a rational approximation ~1e-7)
    tol = 2.0 ** -16
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=tol * np.max(np.abs(y_ref)))
    np.testing.assert_allclose(y, numpy_layer(fused, x, seg, key), rtol=0,
                               atol=tol * np.max(np.abs(y_ref)))
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=tol * np.max(np.abs(dx_ref)))
    assert sorted(g) == sorted(g_ref) and len(g) == 16
    for name in g_ref:
        np.testing.assert_allclose(g[name], g_ref[name], rtol=0,
                                   atol=tol * scale_of(g_ref, name), err_msg=name)


def bf16_rounded(layer: EncoderLayer) -> EncoderLayer:
    for _, p in nnx.iter_graph(layer):
        if isinstance(p, nnx.Param):
            p.value = p.value.astype(jnp.bfloat16).astype(jnp.float32)
    return layer


@pytest.mark.parametrize("dropout", [False, True])
def test_bfloat16_fused_layer_is_as_close_to_the_exact_function_as_the_unfused(dropout):
    """Both bfloat16 layers measured against the float32 layer on the same bf16-rounded
    parameters and input (the function they round): the fused one within the unfused one's own
    error plus one bfloat16 rounding of the result's scale, for the output, dx and every
    parameter's gradient."""
    x, seg, cot = inputs(jnp.bfloat16)
    key = jax.random.key(7) if dropout else None
    y_r, g_r, dx_r = value_and_grads(bf16_rounded(make_layer(layer_impl="xla")),
                                     x.astype(jnp.float32), seg, cot, key)
    y_u, g_u, dx_u = value_and_grads(make_layer(layer_impl="xla", dtype="bfloat16"), x, seg, cot,
                                     key)
    y_f, g_f, dx_f = value_and_grads(make_layer(layer_impl="fused", dtype="bfloat16"), x, seg,
                                     cot, key)

    def check(got, unfused, ref, scale, what):
        err, own = np.max(np.abs(got - ref)), np.max(np.abs(unfused - ref))
        assert err <= own + BF16_ULP * scale, (what, err, own, scale)

    check(y_f, y_u, y_r, np.max(np.abs(y_r)), "y")
    check(dx_f, dx_u, dx_r, np.max(np.abs(dx_r)), "dx")
    assert sorted(g_f) == sorted(g_r)
    for name in g_r:
        check(g_f[name], g_u[name], g_r[name], scale_of(g_r, name), name)


def test_auto_is_the_unfused_path_on_cpu_and_on_a_gpu_build():
    x, seg, _ = inputs(jnp.float32)
    mask, key = attention_mask(seg), jax.random.key(3)
    auto, xla = make_layer(), make_layer(layer_impl="xla")
    assert auto.cfg.layer_impl == "auto"
    np.testing.assert_array_equal(np.asarray(auto(x, mask, key)), np.asarray(xla(x, mask, key)))

    def fused(layer):
        return "fused_layer_forward" in str(jax.make_jaxpr(lambda v: layer(v, mask, key))(x))

    assert not fused(auto)
    with building_for("gpu"):  # on an H200 the kernels' step was the slower (docs/performance.md)
        assert not fused(auto) and not fused(xla) and fused(make_layer(layer_impl="fused"))


@pytest.mark.parametrize("changes, t, needle", [
    ({"norm_position": "pre"}, T, "norm_position='pre'"),
    ({"dropout_rng": "threefry"}, T, "dropout_rng='threefry'"),
    ({"attention_impl": "xla", "attention_dropout": 0.0}, T, "attention_impl='xla'"),
    ({}, 24, "multiple of 16"),
])
def test_an_explicit_fused_that_cannot_apply_is_one_config_error_line(changes, t, needle):
    layer = make_layer(layer_impl="fused", **changes)
    x = jnp.zeros((1, t, H), jnp.float32)
    seg = jnp.ones((1, t), jnp.int32)
    with pytest.raises(ConfigError) as err:
        layer(x, attention_mask(seg), jax.random.key(0))
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.layer_impl='fused' cannot run")
    assert needle in message


def test_layer_impl_is_validated():
    with pytest.raises(ConfigError, match=r"^model\.layer_impl: must be one of"):
        ModelConfig(layer_impl="triton")
    assert ModelConfig.from_mapping({"layer_impl": "fused"}).layer_impl == "fused"


# The Triton compile of these kernels (forward and backward, in a whole paper-1.25m step for
# sm_80, sm_89 and sm_90; T = 128's 8-warp configuration on sm_90) and the step's encoder in its
# two kernels (58 launches unfused) are tests/test_gpu_compile.py's
# (test_a_whole_step_runs_the_kernels_and_its_parts_add_up): one process compiles them all.


def test_under_vmap_each_member_is_its_own_layer():
    """A population vmaps the step over members (parameters, inputs and keys): each member's
    output and gradients, dropout masks included, are those of the member alone."""
    from minilm_jax.model.fused_layer import apply

    x, seg, cot = inputs(jnp.float32)
    mask = attention_mask(seg)
    layer = make_layer(layer_impl="fused")
    graphdef, params = nnx.split(layer, nnx.Param)
    members = [jax.tree.map(lambda p, m=m: p * (1.0 + 0.1 * m), params) for m in range(2)]
    xs, keys = jnp.stack([x, x[::-1]]), jax.random.split(jax.random.key(5), 2)

    def loss(params, x, key):
        return jnp.sum(apply(nnx.merge(graphdef, params), x, mask, key).astype(jnp.float32) * cot)

    fn = jax.value_and_grad(loss, argnums=(0, 1))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    losses, (grads, dxs) = jax.vmap(fn)(stacked, xs, keys)
    for m in range(2):
        want, (want_grads, want_dx) = fn(members[m], xs[m], keys[m])
        # the loss: a float32 sum of B T H = 2^11 products, summed in another order under vmap
        np.testing.assert_allclose(losses[m], want, rtol=2.0 ** 11 * 2.0 ** -24)
        np.testing.assert_allclose(dxs[m], want_dx, rtol=0, atol=2.0 ** -20 * float(
            jnp.max(jnp.abs(want_dx))))
        for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
            np.testing.assert_allclose(got[m], ref, rtol=0,
                                       atol=2.0 ** -20 * float(jnp.max(jnp.abs(ref))))


def test_a_gpu_build_counts_the_same_matmul_flops():
    """The traced matmul count (parameter/FLOP accounting, declared-count checks) of a model
    with the encoder's kernels is the modules' count, on a CPU and on a GPU build: it traces the
    modules, where the kernels would hide their matmuls."""
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.model.traced_flops import encoder_matmul_flops

    modules = encoder_matmul_flops(resolve_point("paper-1.25m", vocab_size=500, layer_impl="xla"))
    cfg = resolve_point("paper-1.25m", vocab_size=500, layer_impl="fused")
    encoder_matmul_flops.cache_clear()
    assert encoder_matmul_flops(cfg) == modules > 0
    encoder_matmul_flops.cache_clear()
    with building_for("gpu"):
        assert encoder_matmul_flops(cfg) == modules
    encoder_matmul_flops.cache_clear()
