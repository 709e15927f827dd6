"""The encoder's embedding block as Pallas kernels (model.embed_kernel; ``layer_impl="fused"``,
Pallas' interpreter on the CPU) is the modules' function: its output and the gradient of every
table and parameter equal the unfused embeddings' (``layer_impl="xla"``) on the same model, key
and tokens (with and without dropout and the projection, padding, two token types, a sequence
length the kernels pad), against a float64 reference too; where it applies and the one-line error
where an explicit "fused" cannot."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance

from minilm_jax.model.config import ConfigError
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.target_platform import building_for


def _encoder(impl: str, projection: bool, dropout: float = 0.1, dtype: str = "float32",
             emb: int = 16, t: int = 48) -> TransformerEncoder:
    cfg = resolve_point("paper-1.25m", vocab_size=300, emb_dim=emb if projection else 32,
                        hidden_dim=32,
                        embed_projection=projection, hidden_dropout=dropout, layer_impl=impl,
                        dtype=dtype, max_len=max(t, 128))
    encoder = TransformerEncoder(cfg, rngs=nnx.Rngs(params=3))
    rng = np.random.default_rng(0)  # non-trivial norms: a wrong scale or bias gradient shows
    for norm in [encoder.embedding_norm] + ([encoder.projection_norm] if projection else []):
        norm.scale.value = jnp.asarray(rng.normal(1.0, 0.3, norm.scale.shape), jnp.float32)
        norm.bias.value = jnp.asarray(rng.normal(0.0, 0.3, norm.bias.shape), jnp.float32)
    return encoder


def _inputs(t: int = 48):
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 300, (3, t)), jnp.int32)
    types = jnp.asarray(rng.integers(0, 2, (3, t)), jnp.int32)
    cotangent = jnp.asarray(rng.normal(size=(3, t, 32)), jnp.float32)
    return tokens, types, cotangent


def _value_and_grads(encoder: TransformerEncoder, tokens, types, cotangent, key):
    graphdef, params = nnx.split(encoder, nnx.Param)

    def loss(params):
        model = nnx.merge(graphdef, params)
        x = model.embed(tokens, types, None, key, True)
        return jnp.sum(x.astype(jnp.float32) * cotangent[..., :x.shape[-1]]), x

    (value, x), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, x, {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(grads)}


@pytest.mark.parametrize("projection", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_embeddings_are_the_modules_function(projection, dropout):
    """float32: the output within the rounding of two LayerNorms' statistics, every gradient
    within float32 sums over the batch's rows (the word table's scatter too)."""
    tokens, types, cotangent = _inputs()
    key = jax.random.key(7)
    want = _value_and_grads(_encoder("xla", projection, dropout), tokens, types, cotangent, key)
    got = _value_and_grads(_encoder("fused", projection, dropout), tokens, types, cotangent, key)
    terms = tokens.size + 64  # a gradient sums over every row; a row over its width
    np.testing.assert_allclose(got[1], want[1], rtol=0,
                               atol=float32_tolerance(float(jnp.abs(want[1]).max()), 64, paths=4))
    assert set(got[2]) == set(want[2])
    for name, g in want[2].items():
        np.testing.assert_allclose(got[2][name], g, rtol=0, err_msg=name,
                                   atol=float32_tolerance(float(jnp.abs(g).max()), terms, paths=4))
    if dropout:  # the mask is drawn: some outputs zeroed before the LayerNorm's scale...
        assert not np.allclose(got[1], _value_and_grads(
            _encoder("fused", projection, 0.0), tokens, types, cotangent, key)[1], atol=1e-3)


def test_against_float64_embedding_norm_only():
    """Without projection and dropout the block is LayerNorm(word + position + type): its output
    and the scale/bias gradients against numpy float64."""
    tokens, types, cotangent = _inputs()
    encoder = _encoder("fused", projection=False, dropout=0.0)
    value, x, grads = _value_and_grads(encoder, tokens, types, cotangent, None)
    word = np.asarray(encoder.word_embeddings.embedding[...], np.float64)
    pos = np.asarray(encoder.position_rows(48), np.float64)
    typ = np.asarray(encoder.token_type_embeddings.embedding[...], np.float64)
    s = np.asarray(encoder.embedding_norm.scale[...], np.float64)
    b = np.asarray(encoder.embedding_norm.bias[...], np.float64)
    e = word[np.asarray(tokens)] + pos[None] + typ[np.asarray(types)]
    mean = e.mean(-1, keepdims=True)
    x_hat = (e - mean) / np.sqrt(((e - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    g = np.asarray(cotangent, np.float64)
    np.testing.assert_allclose(x, x_hat * s + b, rtol=0, atol=float32_tolerance(8.0, 64))
    np.testing.assert_allclose(grads["embedding_norm/scale"], (g * x_hat).sum((0, 1)), rtol=0,
                               atol=float32_tolerance(float(np.abs(g * x_hat).sum((0, 1)).max()),
                                                      200))


def test_bfloat16_fused_embeddings_round_as_the_modules():
    """bfloat16 compute: the projection's roundings are nnx.Linear's; outputs within one bf16
    ulp of the largest (2^-8 relative), gradients within bf16 operands' rounding."""
    tokens, types, cotangent = _inputs()
    key = jax.random.key(2)
    want = _value_and_grads(_encoder("xla", True, 0.1, "bfloat16"), tokens, types, cotangent, key)
    got = _value_and_grads(_encoder("fused", True, 0.1, "bfloat16"), tokens, types, cotangent, key)
    assert got[1].dtype == jnp.bfloat16
    scale = float(jnp.abs(want[1].astype(jnp.float32)).max())
    assert float(jnp.abs(got[1].astype(jnp.float32) - want[1].astype(jnp.float32)).max()) \
        <= 2.0**-7 * scale
    for name, g in want[2].items():
        assert float(jnp.abs(got[2][name] - g).max()) <= 4 * 2.0**-8 * float(jnp.abs(g).max()), \
            name


def test_where_the_kernels_run_and_the_one_line_error():
    t = 48
    assert _encoder("fused", True)._embeds_in_kernels(t, None)
    # "auto" runs the modules, on a GPU build too (there the kernels' step was the slower)
    assert not _encoder("auto", True)._embeds_in_kernels(t, None)
    with building_for("gpu"):
        assert not _encoder("auto", True)._embeds_in_kernels(t, None)
        assert _encoder("fused", True)._embeds_in_kernels(t, None)
    with pytest.raises(ConfigError, match="layer_impl='fused' cannot run the embeddings: .*16"):
        _encoder("fused", True)._embeds_in_kernels(40, None)  # not a multiple of 16
    with pytest.raises(ConfigError, match="layer_impl='fused' cannot run the embeddings: emb_dim"):
        _encoder("fused", True, emb=24)._embeds_in_kernels(t, None)


def test_under_vmap_each_member_is_its_own():
    """A population vmaps the model over members: the batched kernels give each member its own
    output and gradients (a member's own parameters and dropout key)."""
    tokens, types, cotangent = _inputs()
    encoders = [_encoder("fused", True, 0.1) for _ in range(2)]
    encoders[1].embedding_norm.scale.value = encoders[1].embedding_norm.scale[...] * 1.5
    graphdef, _ = nnx.split(encoders[0], nnx.Param)
    params = [nnx.split(e, nnx.Param)[1] for e in encoders]
    keys = jax.random.split(jax.random.key(4), 2)

    def loss(p, key):
        x = nnx.merge(graphdef, p).embed(tokens, types, None, key, True)
        return jnp.sum(x.astype(jnp.float32) * cotangent)

    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(stacked, keys)
    for m in range(2):
        value, grad = jax.jit(jax.value_and_grad(loss))(params[m], keys[m])
        np.testing.assert_allclose(values[m], value, rtol=0,
                                   atol=float32_tolerance(abs(float(value)), 200))
        for (path, g), (_, g_all) in zip(nnx.to_flat_state(grad), nnx.to_flat_state(grads)):
            np.testing.assert_allclose(g_all[m], g, rtol=0, err_msg=str(path),
                                       atol=float32_tolerance(float(jnp.abs(g).max()), 200))
