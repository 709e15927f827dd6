"""What is trained, checked against independent numpy and by-hand numbers: the MLM head, the
learning-rate schedules, global-norm clipping, the weight-decay mask, and the evaluation and
accumulated training steps. The encoder layer's float64 numpy twin is tests/test_fused_layer.py's
``numpy_layer``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minilm_jax.configs import pretrain
from minilm_jax.model import build_mlm
from minilm_jax.model.sizes import resolve_point
from minilm_jax.train.masking import MaskingConfig
from minilm_jax.train.optim import (_schedule, clip_by_global_norm, optimizer_and_schedule,
                                    schedule_values, warmup_steps)
from minilm_jax.train.step import make_eval_step, make_update

POINT = "E32-H32-I64-L1-A4-V300"
_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def layer_norm(x, scale, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def lin(x, module):
    return x @ np.asarray(module.kernel[...], np.float64) + np.asarray(module.bias[...])


def test_mlm_head_is_dense_gelu_layernorm_then_decoder_with_bias():
    """MLM head logits: Linear(H->H) -> erf GELU -> LayerNorm -> Linear(H->V) plus its bias."""
    head = build_mlm(resolve_point(POINT)).mlm_head
    head.decoder.bias[...] = jnp.asarray(np.random.default_rng(1).normal(size=300), jnp.float32)
    hidden = np.random.default_rng(2).normal(size=(2, 5, 32))
    pos = jnp.asarray([[0, 3], [4, 1]])
    graphdef, state = nnx.split(head)
    got = jax.jit(lambda s, h, p: nnx.merge(graphdef, s)(h, p))(
        state, jnp.asarray(hidden, jnp.float32), pos)
    rows = np.take_along_axis(hidden, np.asarray(pos)[:, :, None], axis=1)
    feat = layer_norm(gelu(lin(rows, head.dense)), np.asarray(head.norm.scale[...]),
                      np.asarray(head.norm.bias[...]))
    np.testing.assert_allclose(np.asarray(got), lin(feat, head.decoder), atol=3e-5, rtol=1e-5)


def _optim(**changes):
    optim = pretrain.get_config("paper-1.25m").optim
    for k, v in changes.items():
        setattr(optim, k, v)
    return optim


@pytest.mark.parametrize("kind,count,want", [
    ("inverse_sqrt", 0, 0.1), ("inverse_sqrt", 9, 1.0), ("inverse_sqrt", 39, 0.5),
    ("linear", 4, 0.5), ("linear", 54, 0.55), ("linear", 99, 0.1), ("linear", 150, 0.1),
    ("cosine", 9, 1.0), ("cosine", 54, 0.55), ("cosine", 99, 0.1)])
def test_schedule_values_worked_out_by_hand(kind, count, want):
    """Update ``count`` uses lr(count + 1): linear warm-up over 10 of 100 steps to the peak, then
    peak*sqrt(W/s), or linear / cosine decay to the floor peak * end_lr_fraction (0.1)."""
    optim = _optim(schedule=kind, warmup_steps=10, peak_lr=1e-3, end_lr_fraction=0.1)
    lr = _schedule(optim, 100, schedule_values(optim, 100))(jnp.asarray(count))
    assert float(lr) == pytest.approx(want * 1e-3, rel=1e-5)


def test_default_warmup_is_five_percent_capped_at_4000():
    """warmup_steps=-1 means min(4000, 5% of the updates)."""
    optim = _optim(warmup_steps=-1)
    assert [warmup_steps(optim, n) for n in (1000, 35475, 200000)] == [50, 1773, 4000]


def test_clipping_scales_every_leaf_by_the_global_norm():
    """Gradients of global norm 5 clipped to 1 are all divided by 5 (not leaf by leaf)."""
    grads = {"a": jnp.asarray([3.0, 0.0]), "b": jnp.asarray([[0.0], [4.0]])}
    clip = clip_by_global_norm(1.0)
    out, _ = clip.update(grads, clip.init(grads))
    for name in grads:
        np.testing.assert_allclose(out[name], np.asarray(grads[name]) / 5.0, rtol=1e-6)


def test_decay_mask_spares_biases_and_layer_norm_vectors():
    """With decay_mask, a zero-gradient step shrinks matrices and embedding tables by
    lr * weight_decay and leaves every bias and LayerNorm scale/bias unchanged."""
    optim = _optim(decay_mask=True, warmup_steps=10, peak_lr=1e-2, weight_decay=0.5)
    params = nnx.state(build_mlm(resolve_point(POINT)), nnx.Param)
    opt, _ = optimizer_and_schedule(optim, 100)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(opt.update)(zeros, opt.init(params), params)
    lr = 1e-2 * 1 / 10  # the first update's rate: lr(1) = peak * 1/W
    for (path, p), u in zip(jax.tree_util.tree_leaves_with_path(params),
                            jax.tree.leaves(updates)):
        name = jax.tree_util.keystr(path)
        want = -lr * 0.5 * np.asarray(p) if p.ndim >= 2 else np.zeros(p.shape)
        leaf = name.split("'")[-2]  # the last key: kernel, embedding, scale or bias
        assert (leaf in ("kernel", "embedding")) == (p.ndim >= 2), name
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5, atol=1e-12, err_msg=name)


def _masking():
    return MaskingConfig(mask_prob=0.3, max_predictions=8, replacement="mask", mask_id=4,
                         never_mask_ids=(0, 1, 2, 3), random_token_min_id=5, vocab_size=300)


def test_evaluation_runs_without_dropout():
    """The eval step's loss is the same for a model with dropout 0.1 as with dropout 0."""
    toks = jnp.asarray(np.random.default_rng(3).integers(5, 300, size=(2, 16)), jnp.int32)
    seg, valid = jnp.ones_like(toks), jnp.ones((2,), jnp.float32)
    losses = []
    for rate in (0.1, 0.0):
        cfg = resolve_point(POINT, hidden_dropout=rate, attention_dropout=rate)
        graphdef, params, rest = nnx.split(build_mlm(cfg), nnx.Param, ...)
        step = jax.jit(make_eval_step(graphdef, _masking(), 7))
        losses.append(step(params, rest, toks, seg, valid, 0))
    np.testing.assert_allclose(losses[0][0], losses[1][0], rtol=1e-6)
    assert float(losses[0][1]) == float(losses[1][1]) > 0


def test_accumulated_gradient_is_the_mean_over_all_predictions():
    """Two micro-batches give the same mean loss and gradient norm as one batch of both."""
    cfg = resolve_point(POINT, hidden_dropout=0.0, attention_dropout=0.0)
    graphdef, params, rest = nnx.split(build_mlm(cfg), nnx.Param, ...)
    optim = _optim(warmup_steps=10)
    opt, sched = optimizer_and_schedule(optim, 100)
    state = {"params": params, "rest": rest, "opt_state": opt.init(params),
             "step": jnp.zeros((), jnp.int32)}
    toks = np.random.default_rng(4).integers(5, 300, size=(4, 16)).astype(np.int32)
    update = make_update(graphdef)
    metrics = []
    for micro in (1, 2):
        batch = {"tokens": jnp.asarray(toks.reshape(micro, 4 // micro, 16))}
        batch["segments"] = jnp.ones_like(batch["tokens"])
        step = jax.jit(lambda s, b: update(s, b, opt, sched, _masking(), jax.random.key(0)))
        metrics.append(step(state, batch)[1])
    for key in ("loss", "grad_norm", "predictions"):
        np.testing.assert_allclose(metrics[0][key], metrics[1][key], rtol=1e-4, err_msg=key)
