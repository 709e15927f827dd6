"""The LayerNorm a GPU program runs (model.layers.LayerNorm: two-pass statistics, its gradient written
out as a custom VJP) is nnx.LayerNorm's function: values and gradients equal to nnx's and autodiff's
within float32 rounding, checked here on the CPU against a float64 reference; which form a model
runs is ``model.norm_impl`` (auto: the GPU's in a program built for a GPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minilm_jax.model.config import ConfigError
from minilm_jax.model.layers import LayerNorm
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.target_platform import building_for

ULP = 2.0 ** -23


def module(dim: int, impl: str = "auto") -> LayerNorm:
    ln = LayerNorm(dim, epsilon=1e-12, dtype=jnp.float32, rngs=nnx.Rngs(0), impl=impl)
    rng = np.random.default_rng(1)
    ln.scale.value = jnp.asarray(rng.normal(1.0, 0.3, dim), jnp.float32)
    ln.bias.value = jnp.asarray(rng.normal(0.0, 0.3, dim), jnp.float32)
    return ln


def loss_and_grads(ln: LayerNorm, x: jax.Array, cotangent: jax.Array):
    graphdef, params = nnx.split(ln, nnx.Param)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x) * cotangent)

    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)


def reference(x, scale, bias, cotangent, eps=1e-12):
    """float64 LayerNorm and its gradients, written out independently."""
    x, scale, bias, g = (np.asarray(a, np.float64) for a in (x, scale, bias, cotangent))
    mean = x.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    x_hat = (x - mean) * inv
    gs = g * scale
    dx = inv * (gs - gs.mean(-1, keepdims=True) - x_hat * (gs * x_hat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return x_hat * scale + bias, dx, (g * x_hat).sum(rows), g.sum(rows)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_gpu_layer_norm_is_nnx_layer_norm(dtype):
    dim = 32
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0.5, 2.0, (4, 16, dim)), dtype)
    cotangent = jnp.asarray(rng.normal(size=(4, 16, dim)), jnp.float32)
    ln = module(dim)
    want_y = ln(x)
    (loss, (grads, dx)) = loss_and_grads(ln, x, cotangent)
    with building_for("gpu"):
        got_y = ln(x)
        (got_loss, (got_grads, got_dx)) = loss_and_grads(ln, x, cotangent)
    # the forward: nnx.LayerNorm's values within the rounding of its statistics
    np.testing.assert_allclose(got_y, want_y, rtol=0, atol=4 * ULP * float(jnp.max(jnp.abs(want_y))))
    # gradients: against float64, within float32 rounding of a sum over the rows (n terms: the
    # error of a float32 sum grows at most ~n ulp of the sum of magnitudes); and as autodiff's
    y64, dx64, dscale64, dbias64 = reference(x.astype(jnp.float32), ln.scale.value, ln.bias.value,
                                             cotangent)
    rows = x.shape[0] * x.shape[1]
    for got, want, mag in ((got_grads["scale"].value, dscale64, rows),
                           (got_grads["bias"].value, dbias64, rows)):
        bound = mag * ULP * float(np.max(np.abs(cotangent))) * 8 * 4
        np.testing.assert_allclose(got, want, rtol=0, atol=bound)
    np.testing.assert_allclose(np.asarray(got_dx, np.float64), dx64, rtol=0,
                               atol=64 * ULP * float(np.max(np.abs(dx64))) if dtype == jnp.float32
                               else 2.0 ** -7 * float(np.max(np.abs(dx64))) * 2)
    for name in ("scale", "bias"):
        np.testing.assert_allclose(got_grads[name].value, grads[name].value, rtol=0,
                                   atol=rows * 8 * 4 * ULP * float(np.max(np.abs(cotangent))))
    assert abs(float(got_loss) - float(loss)) <= 1e-4 * abs(float(loss)) + 1e-5


def custom_vjps(fn, *args) -> int:
    """The custom-VJP calls in the jaxpr of ``fn(*args)`` (the GPU form is one per norm)."""
    return str(jax.make_jaxpr(fn)(*args)).count("custom_vjp_call")


@pytest.mark.parametrize("impl, target, gpu_form", [
    ("auto", "cpu", False), ("auto", "gpu", True), ("xla", "gpu", False), ("gpu", "cpu", True)])
def test_norm_impl_picks_the_form(impl, target, gpu_form):
    """``impl`` (model.norm_impl) decides the form whatever the target: "xla" is nnx.LayerNorm's
    own jaxpr on a GPU build too; "gpu" the custom VJP on a CPU build too."""
    ln, x = module(8, impl), jnp.ones((2, 8), jnp.float32)
    with building_for(target):
        assert ln.gpu_form() is gpu_form
        assert custom_vjps(lambda v: ln(v), x) == int(gpu_form)
        if not gpu_form:  # exactly nnx.LayerNorm's function
            plain = nnx.LayerNorm(8, epsilon=1e-12, dtype=jnp.float32, rngs=nnx.Rngs(0))
            plain.scale.value, plain.bias.value = ln.scale.value, ln.bias.value
            np.testing.assert_array_equal(ln(x * 3.0 + jnp.arange(8.0)),
                                          plain(x * 3.0 + jnp.arange(8.0)))


def test_a_model_passes_norm_impl_to_every_norm():
    """Each of an encoder's norms (embeddings, layers, head) takes the model's ``norm_impl``;
    an unknown value is one ConfigError naming the field."""
    from minilm_jax.model.models import build_mlm

    for impl in ("xla", "gpu"):
        model = build_mlm(resolve_point("E16-H16-I32-L2-A2-V300", norm_impl=impl))
        norms = [m for _, m in model.iter_modules() if isinstance(m, nnx.LayerNorm)]
        assert len(norms) >= 2 + 2 * 2 and all(n.impl == impl for n in norms)
    with pytest.raises(ConfigError, match="model.norm_impl"):
        resolve_point("E16-H16-I32-L2-A2-V300", norm_impl="fast")
