"""Extending the encoder from Python: a variant's declared fields at their defaults however its
config is built, a bias shared by every layer computed once per forward
(``TransformerEncoder.shared_score_bias``; tests/t5_bias_variants.py), and what
``VariantCounts.params`` counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minilm_jax.model.accounting import count_params, derived_counts, formula_params
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point

POINT = "E16-H16-I32-L3-A2-V300"
SHARED = "t5_bias_variants:SharedT5BiasEncoder"
PER_LAYER = "t5_bias_variants:PerLayerT5BiasEncoder"
TABLE = (12, 2)  # [num_buckets, A]: no other tensor of the model has this shape


def _batch():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, 300, (2, 10)), jnp.int32)
    return tokens, jnp.asarray([[1, 4, 9], [0, 2, 7]], jnp.int32)


def test_a_config_built_in_python_has_the_declared_fields_the_command_records():
    """resolve_point, or build_mlm over a config whose arch was replaced, gives the variant the
    fields the command line records (apply_variant_fields + model_from_config), at their
    declared defaults; a field set stays as set."""
    from minilm_jax.configs import pretrain
    from minilm_jax.settings.command_line import apply_variant_fields
    from minilm_jax.settings.model_fields import model_from_config

    config = pretrain.get_config(POINT)
    config.model.arch = SHARED
    apply_variant_fields(config)
    command = model_from_config(config)
    assert dict(command.extra) == {"max_distance": 16, "num_buckets": 12}

    python = resolve_point(POINT, arch=SHARED)
    assert python.extra == command.extra
    assert [python.extra_value(k) for k in ("num_buckets", "max_distance")] == [12, 16]
    replaced = build_mlm(resolve_point(POINT).replace(arch=SHARED))  # arch set after the point
    assert replaced.cfg.extra == command.extra
    assert replaced.encoder.relative_bias.table[...].shape == TABLE
    assert resolve_point(POINT, arch=SHARED, **{"extra.num_buckets": 8}).extra_value(
        "num_buckets") == 8
    assert resolve_point(POINT).extra == ()  # a built-in encoder: no fields, nothing imported


def _logits(model, tokens, positions):
    return model(tokens, positions)


def test_a_bias_shared_by_every_layer_is_held_once_and_computed_once_per_forward():
    """The shared form's table is one [buckets, A] parameter; its forward gathers it once where
    the per-layer form gathers it at every layer (L = 3), with the same logits."""
    shared, per_layer = (build_mlm(resolve_point(POINT, arch=a), seed=0)
                         for a in (SHARED, PER_LAYER))
    builtin = build_mlm(resolve_point(POINT), seed=0)
    buckets, heads = TABLE
    for model in (shared, per_layer):  # one table, counted once
        assert count_params(model).total == count_params(builtin).total + buckets * heads
        assert count_params(model).embedding == count_params(builtin).embedding
    np.testing.assert_array_equal(shared.encoder.relative_bias.table[...],
                                  per_layer.encoder.layers[0].attention.relative_bias.table[...])

    tokens, positions = _batch()
    want, got = (np.asarray(_logits(m, tokens, positions)) for m in (per_layer, shared))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, np.asarray(_logits(builtin, tokens, positions)), atol=1e-3)

    def table_uses(model) -> int:
        graphdef, state = nnx.split(model)
        jaxpr = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(tokens, positions))(state).jaxpr
        return sum(any(getattr(getattr(v, "aval", None), "shape", None) == TABLE
                       for v in eqn.invars) for eqn in jaxpr.eqns)

    assert table_uses(shared) == 1
    assert table_uses(per_layer) == resolve_point(POINT).num_layers


def test_a_shared_bias_is_trained_and_refused_where_flash_cannot_train_it():
    """The table gets a gradient through every layer (the per-layer form's, summed); under
    attention_impl='flash' a bias that depends on a parameter is one ConfigError."""
    from minilm_jax.model.config import ConfigError

    tokens, positions = _batch()

    def table_grad(arch):
        model = build_mlm(resolve_point(POINT, arch=arch), seed=0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(tokens, positions)[..., :7]
                                           ** 2))(params)
        leaves = [g for g in jax.tree.leaves(grads) if g.shape == TABLE]
        assert len(leaves) == 1
        return np.asarray(leaves[0])

    shared, per_layer = table_grad(SHARED), table_grad(PER_LAYER)
    assert np.abs(shared).max() > 0
    np.testing.assert_allclose(shared, per_layer, rtol=1e-4, atol=1e-6)

    flash = build_mlm(resolve_point(POINT, arch=SHARED, attention_impl="flash",
                                    attention_dropout=0.0), seed=0)
    with pytest.raises(ConfigError, match="shared_score_bias depends on parameters"):
        flash(tokens, positions)
    wrong = build_mlm(resolve_point(POINT, arch=SHARED), seed=0)
    wrong.encoder.shared_score_bias = lambda t: jnp.zeros((3, t, t))  # A is 2
    with pytest.raises(ConfigError, match=r"the encoder's shared_score_bias\(10\) must be "
                                          r"\[A, Tq, Tk\] = \[2, 10, 10\], not \[3, 10, 10\]"):
        wrong(tokens, positions)


def test_variant_counts_params_are_the_non_embedding_parameters_beyond_the_built_in():
    """VariantCounts.params is the non-embedding difference from the built-in encoder's closed
    form (embedding_params the embedding one): derived for the shared table as buckets x A
    non-embedding, and the formula with it equals the built tree."""
    cfg = resolve_point(POINT, arch=SHARED)
    counts = derived_counts(cfg, 16)
    buckets, heads = TABLE
    assert (counts.params, counts.embedding_params) == (buckets * heads, 0)
    assert counts.non_embedding_params == counts.params
    tree = count_params(build_mlm(cfg))
    formula = formula_params(cfg)
    assert formula == tree
    assert formula_params(resolve_point(POINT).replace(arch=SHARED)) == tree  # fields filled too
    assert formula.non_embedding - formula_params(resolve_point(POINT)).non_embedding == counts.params
