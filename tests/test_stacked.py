"""Stacked (vmapped) members agree with the members run one by one."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance
from minilm_jax.model.models import build_classifier
from minilm_jax.model.stacked import (init_stacked, member_model, num_members, stack_models,
                                      stack_states, stacked_apply, unstack_state, vmap_members)
from minilm_jax.model.sizes import resolve_point

TINY = "E32-H32-I128-L1-A2-V500"
SEEDS = (0, 1, 2)
TERMS = 32 + 128 + 16  # the layer's hidden and ffn widths, attention over up to 16 positions


def atol(want) -> float:
    """vmapped versus one-by-one float32 forward passes: sums in other orders."""
    return float32_tolerance(float(np.max(np.abs(np.asarray(want)))), TERMS)


def _tokens(batch: int, seq_len: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).integers(5, 500, (batch, seq_len)), jnp.int32)


@pytest.fixture(scope="module", params=["plain", "conv"])
def cfg(request):
    if request.param == "plain":
        return resolve_point(TINY)
    # BatchNorm statistics make the non-Param ``rest`` state non-empty.
    return resolve_point(TINY, arch="bert_conv", conv_layers=2, conv_channels=4, pad_id=0)


@pytest.fixture(scope="module")
def stacked(cfg):
    return init_stacked(lambda key: build_classifier(cfg, 3, seed=key), SEEDS)


def test_members_equal_separately_built_models(cfg, stacked):
    graphdef, params_k, rest_k = stacked
    assert num_members(params_k) == len(SEEDS)
    for k, seed in enumerate(SEEDS):
        _, params, rest = nnx.split(build_classifier(cfg, 3, seed=seed), nnx.Param, ...)
        for got, want in zip(jax.tree.leaves(unstack_state(params_k, k)), jax.tree.leaves(params)):
            # vmapped against one model's initialisers: the same elementwise float32 maths
            # (normal sampling's ~16 operations), each rounding at the parameters' scale
            tol = float32_tolerance(float(np.max(np.abs(want))), 16)
            np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        assert jax.tree.structure(unstack_state(rest_k, k)) == jax.tree.structure(rest)


def test_shared_inputs_match_members_run_separately(stacked):
    graphdef, params_k, rest_k = stacked
    tokens_bt = _tokens(2, 16)  # the members' shapes below: their operations compile once
    logits_kbc = jax.jit(stacked_apply(graphdef))(params_k, rest_k, tokens_bt)
    assert logits_kbc.shape == (len(SEEDS), 2, 3)
    for k in range(len(SEEDS)):
        want_bc = member_model(graphdef, params_k, rest_k, k)(tokens_bt)
        np.testing.assert_allclose(logits_kbc[k], want_bc, rtol=0, atol=atol(want_bc))


def test_per_member_inputs_match_members_run_separately(stacked):
    graphdef, params_k, rest_k = stacked
    tokens_kbt = jnp.stack([_tokens(2, 16, seed=k) for k in range(len(SEEDS))])
    logits_kbc = jax.jit(stacked_apply(graphdef, input_axes=0))(params_k, rest_k, tokens_kbt)
    for k in range(len(SEEDS)):
        want_bc = member_model(graphdef, params_k, rest_k, k)(tokens_kbt[k])
        np.testing.assert_allclose(logits_kbc[k], want_bc, rtol=0, atol=atol(want_bc))


def test_mixed_input_axes(stacked):
    graphdef, params_k, rest_k = stacked
    tokens_bt = _tokens(2, 16)

    def scaled(params, rest, tokens, scale):
        return nnx.merge(graphdef, params, rest)(tokens) * scale

    scale_k = jnp.arange(1.0, len(SEEDS) + 1)
    # jitted, as at a call site: op by op, vmapped operations took 2x the CPU time
    out_kbc = jax.jit(vmap_members(scaled, input_axes=(None, 0)))(params_k, rest_k, tokens_bt,
                                                                   scale_k)
    plain_kbc = jax.jit(stacked_apply(graphdef))(params_k, rest_k, tokens_bt)
    want_kbc = plain_kbc * scale_k[:, None, None]  # another program: the forward's sums
    np.testing.assert_allclose(out_kbc, want_kbc, rtol=0, atol=atol(want_kbc))
    with pytest.raises(ValueError, match="input axes"):
        vmap_members(scaled, input_axes=(0,))(params_k, rest_k, tokens_bt, scale_k)


def test_unstack_stack_round_trip(stacked):
    _, params_k, rest_k = stacked
    for tree in (params_k, rest_k):
        again = stack_states([unstack_state(tree, k) for k in range(len(SEEDS))])
        chex.assert_trees_all_equal(again, tree)  # structure, shapes, dtypes and values
    with pytest.raises(IndexError):
        unstack_state(params_k, len(SEEDS))


def test_stack_models_and_architecture_mismatch():
    cfg = resolve_point(TINY)
    models = [build_classifier(cfg, 2, seed=s) for s in (3, 4)]
    graphdef, params_k, rest_k = stack_models(models)
    tokens_bt = _tokens(2, 16)  # the shapes above: the members' operations are compiled
    logits_kbc = jax.jit(stacked_apply(graphdef))(params_k, rest_k, tokens_bt)
    for k, model in enumerate(models):
        want_bc = model(tokens_bt)
        np.testing.assert_allclose(logits_kbc[k], want_bc, rtol=0, atol=atol(want_bc))
    # the refusals look at architecture and structure only: abstract models, no weights to draw
    wider = nnx.eval_shape(lambda: build_classifier(resolve_point("E32-H64-I128-L1-A2-V500"), 2))
    with pytest.raises(ValueError):
        stack_models([models[0], wider])
    deeper = nnx.eval_shape(lambda: build_classifier(resolve_point("E32-H32-I128-L2-A2-V500"), 2))
    with pytest.raises(ValueError, match="different state structure"):
        stack_states([nnx.state(models[0], nnx.Param), nnx.state(deeper, nnx.Param)])
