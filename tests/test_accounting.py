"""Parameter counts and FLOPs: SPEC A3/A5 check values, the real tree, and XLA's own count."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from minilm_jax.model import accounting
from minilm_jax.model import build_classifier, build_mlm
from minilm_jax.model.sizes import resolve_point


@pytest.mark.parametrize("point,total", [
    ("E128-H32-I256-L2-A2-V19010", 3_125_122),
    ("E256-H128-I512-L1-A2-V19010", 7_601_346),
    ("E128-H256-I1024-L8-A4-V19010", 13_753_922),
    ("paper-1.25m", 1_254_882),
])
def test_param_counts_match_spec_tree_and_formula(point, total):
    cfg = resolve_point(point)
    abstract = nnx.eval_shape(lambda: build_mlm(cfg))
    tree = accounting.count_params(abstract)
    formula = accounting.formula_params(cfg)
    assert tree == formula
    assert tree.total == total
    assert tree.embedding == cfg.emb_dim * (cfg.vocab_size + 134)


@pytest.mark.parametrize("overrides", [dict(embed_projection=False, emb_dim=64), dict(norm_position="pre")])
def test_formula_follows_switches(overrides):
    cfg = resolve_point("E32-H64-I128-L2-A2-V500", **overrides)
    assert accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg))) == accounting.formula_params(cfg)


def test_paper_flops_examples():
    assert accounting.paper_train_flops_per_sequence(resolve_point("paper-1.25m")) == pytest.approx(9.47e8, rel=1e-3)
    per_epoch = accounting.paper_train_flops_per_sequence(resolve_point("paper-1.25m")) * 256 * 35475
    assert per_epoch == pytest.approx(8.6e15, rel=5e-3)
    big = resolve_point("E256-H256-I1024-L8-A8-V19010")
    assert accounting.paper_train_flops_per_sequence(big) == pytest.approx(1.22e10, rel=5e-3)
    assert accounting.paper_train_flops_per_sequence(big) * 256 * 35475 == pytest.approx(1.1e17, rel=2e-2)


def xla_forward_flops(model, batch, seq, predictions=None):
    """XLA's FLOP count of the compiled forward pass, per sequence (``model``: an abstract one
    from ``nnx.eval_shape`` will do; initialising the weights took most of these tests' time)."""
    graphdef, state = nnx.split(model)
    x = jnp.ones((batch, seq), jnp.int32)
    if predictions is None:
        fn = lambda s, x: nnx.merge(graphdef, s)(x)  # noqa: E731
        lowered = jax.jit(fn).lower(state, x)
    else:
        fn = lambda s, x, p: nnx.merge(graphdef, s)(x, p)  # noqa: E731
        lowered = jax.jit(fn).lower(state, x, jnp.zeros((batch, predictions), jnp.int32))
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch


@pytest.mark.parametrize("point", ["paper-1.25m", "E256-H256-I1024-L8-A8-V19010",
                                   "E64-H128-I256-L2-A4-V2000", "E128-H128-I512-L2-A2-V4000"])
def test_complete_count_matches_xla_cost_analysis(point):
    cfg = resolve_point(point)
    model = nnx.eval_shape(lambda: build_mlm(cfg))  # shapes only: XLA counts the same program
    xla = xla_forward_flops(model, batch=2, seq=128, predictions=20)
    ours = accounting.forward_flops_per_sequence(cfg, num_predictions=20)
    assert abs(xla / ours - 1) < 0.10, (xla, ours)


@pytest.mark.parametrize("point,tolerance", [
    ("bert1-a8", 0.10),
    # BatchNorm + exact GELU over the C-channel feature maps are elementwise work (~12% here)
    # that a matmul count leaves out.
    ("bert1-a12-conv2x32", 0.15),
])
def test_classifier_and_conv_count_matches_xla(point, tolerance):
    cfg = resolve_point(point, vocab_size=1000)
    model = nnx.eval_shape(lambda: build_classifier(cfg, 4))  # shapes only, as above
    xla = xla_forward_flops(model, batch=2, seq=128)
    ours = accounting.forward_flops_per_sequence(cfg, head="classifier", num_labels=4)
    assert abs(xla / ours - 1) < tolerance, (xla, ours)


def test_masked_head_is_cheaper_than_full_head():
    cfg = resolve_point("paper-1.25m")
    assert accounting.forward_flops_per_sequence(cfg, num_predictions=20) < 0.25 * \
        accounting.forward_flops_per_sequence(cfg)
