"""The accelerator output layer: the one-pass softmax gradient, the Pallas fused linear +
cross-entropy kernels (Pallas' interpreter on CPU), predictions packed across the batch, and the
compiled train step's buffers (no float32 ``[rows, vocab]`` array)."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance
from test_fast_paths import _problem

from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.xent import softmax_xent_sum
from minilm_jax.model.xent_kernel import (kernel_applies, kernel_linear_logprobs,
                                          kernel_linear_xent)
from minilm_jax.train.masking import (MaskingConfig, mask_tokens, pack_predictions, packed_rows,
                                      predicted)
from minilm_jax.train.checkpoint import abstract_like
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.program import pretrain_program


def _autodiff_xent(x, w, b, t, wt):
    """The reference: autodiff through log_softmax and take_along_axis, float32."""
    logp = jax.nn.log_softmax(x @ w + b, axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, t[:, None], axis=-1)[:, 0] * wt)


def _assert_loss_and_grads_close(fn, x, w, b, t, wt, terms):
    want, g_want = jax.value_and_grad(_autodiff_xent, argnums=(0, 1, 2, 4))(x, w, b, t, wt)
    got, g_got = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 4)))(x, w, b, t, wt)
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=float32_tolerance(float(jnp.abs(want)), terms))
    for name, a, e in zip(("x", "W", "b", "weights"), g_got, g_want):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        np.testing.assert_allclose(a, e, rtol=0, err_msg=name,
                                   atol=float32_tolerance(float(jnp.abs(e).max()), terms))


def test_softmax_xent_one_pass_gradient_equals_autodiff():
    x, w, b, t, wt = _problem()
    _assert_loss_and_grads_close(lambda x, w, b, t, wt: softmax_xent_sum(x @ w + b, t, wt),
                                 x, w, b, t, wt, 257 + 300 + 24)


@pytest.mark.parametrize("shape", [(300, 24, 257), (64, 32, 128), (70, 100, 1000)])
def test_kernel_matches_autodiff_values_and_gradients(shape):
    """Rows, hidden size and vocabulary padded (300 rows, 24 -> 32 hidden, 257 -> 384 columns),
    exact multiples of the blocks, and the 32 x 64 blocks of a hidden size above 64."""
    x, w, b, t, wt = _problem(*shape)
    _assert_loss_and_grads_close(kernel_linear_xent, x, w, b, t, wt, sum(shape))


def test_kernel_bf16_is_close_and_gradients_keep_parameter_dtypes():
    x, w, b, t, wt = _problem()
    want = _autodiff_xent(x, w, b, t, wt)
    got, grads = jax.jit(jax.value_and_grad(kernel_linear_xent, argnums=(0, 1, 2)),
                         static_argnums=5)(x, w, b, t, wt, "bfloat16")
    np.testing.assert_allclose(got, want, rtol=2e-2)  # bf16 operands, float32 accumulation
    assert [g.dtype for g in grads] == [jnp.float32] * 3


def test_kernel_under_vmap_equals_each_member_alone():
    """Populations vmap the loss over members: the batched kernel computes each member's own."""
    problems = [_problem(seed=s) for s in (1, 2)]
    stacked = [jnp.stack(parts) for parts in zip(*problems)]
    fn = jax.value_and_grad(kernel_linear_xent, argnums=(0, 1))
    losses, (gx, gw) = jax.jit(jax.vmap(fn))(*stacked)
    for i, problem in enumerate(problems):
        loss, (gx_i, gw_i) = jax.jit(fn)(*problem)
        tol = float32_tolerance(float(jnp.abs(loss)), 300 + 257 + 24)
        np.testing.assert_allclose(losses[i], loss, rtol=0, atol=tol)
        np.testing.assert_allclose(gw[i], gw_i, rtol=0,
                                   atol=float32_tolerance(float(jnp.abs(gw_i).max()), 600))
        np.testing.assert_allclose(gx[i], gx_i, rtol=0,
                                   atol=float32_tolerance(float(jnp.abs(gx_i).max()), 600))


def test_kernel_logprobs_equal_the_full_log_softmax():
    x, w, b, t, _ = _problem(n=77)
    want = jnp.take_along_axis(jax.nn.log_softmax(x @ w + b), t[:, None], -1)[:, 0]
    got = jax.jit(kernel_linear_logprobs)(x, w, b, t)
    assert got.shape == (77,) and got.dtype == jnp.float32
    scale = float(jnp.abs(x @ w + b).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=float32_tolerance(scale, 257 + 24))


def test_kernel_applies_up_to_its_block_size():
    assert kernel_applies(32) and kernel_applies(256) and kernel_applies(200)
    assert not kernel_applies(257) and not kernel_applies(768)
    head = build_mlm(resolve_point("E64-H768-I128-L1-A12-V97", mlm_loss_impl="kernel")).mlm_head
    assert head.loss_impl() == "logits"  # a hidden size no block holds: the XLA formulation


def _mlm_section(mask_prob=0.15):
    return ml_collections.ConfigDict(dict(mask_prob=mask_prob, max_predictions=32,
                                          replacement="mask", mask_id=4,
                                          never_mask_ids=(0, 1, 2, 3), random_token_min_id=5))


def test_packed_rows_bound_and_cap():
    masking = MaskingConfig.from_config(_mlm_section(), 19010)
    # the paper's batch: 256 x 128 tokens, 15%: 4,915 expected, sd 64.6 -> 5,376 rows, not 8,192
    assert packed_rows(256 * 128, 256, masking) == 5376
    assert packed_rows(8 * 128, 8, masking) == 8 * 32  # a small batch: the cap, no packing
    assert packed_rows(256 * 128, 256, MaskingConfig.from_config(_mlm_section(0.5), 19010)) == 8192


@pytest.mark.parametrize("impl", ["fused", "logits", "kernel"])
def test_packed_predictions_same_positions_and_loss_as_per_sequence(impl):
    """The same masked positions and targets; the loss and every gradient equal the per-sequence
    [B, P] layout's within float32 rounding (the sums run in another order)."""
    cfg = resolve_point("E16-H32-I64-L1-A2-V500", mlm_loss_impl=impl, hidden_dropout=0.0,
                        attention_dropout=0.0)
    masking = MaskingConfig.from_config(_mlm_section(), cfg.vocab_size)
    b, t = 64, 128
    tokens = jax.random.randint(jax.random.key(1), (b, t), 5, cfg.vocab_size)
    segments = jnp.ones((b, t), jnp.int32).at[:3, 100:].set(0)  # some padding
    mb = mask_tokens(jax.random.key(2), tokens, segments, masking)
    packed = pack_predictions(mb, masking)
    assert packed.rows_n.shape == (1536,) and 1536 < b * 32
    # the same (position, target) pairs, in batch order
    sel = np.asarray(mb.weights_bp) > 0
    flat = (np.arange(b)[:, None] * t + np.asarray(mb.positions_bp))[sel]
    n_sel = int(sel.sum())
    np.testing.assert_array_equal(np.asarray(packed.rows_n)[:n_sel], flat)
    np.testing.assert_array_equal(np.asarray(packed.targets_n)[:n_sel],
                                  np.asarray(mb.targets_bp)[sel])
    np.testing.assert_array_equal(np.asarray(packed.weights_n), np.arange(1536) < n_sel)
    graphdef, params, rest = nnx.split(build_mlm(cfg), nnx.Param, ...)

    def loss(params, positions, targets, weights):
        model = nnx.merge(graphdef, params, rest)
        return model.mlm_loss(mb.inputs_bt, positions, targets, weights, segments)

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (want, count_want), g_want = fn(params, mb.positions_bp, mb.targets_bp, mb.weights_bp)
    (got, count), g_got = fn(params, *predicted(mb, masking))
    assert float(count) == float(count_want) == n_sel
    terms = cfg.vocab_size + n_sel + b * t
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=float32_tolerance(float(jnp.abs(want)), terms))
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_want))
    for a, e in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, e, rtol=0, atol=float32_tolerance(scale, terms))


def _train_step_hlo(impl: str, vocab: int, batch: int) -> str:
    config = pretrain_recipe.get_config("paper-1.25m")
    cfg = resolve_point(f"E16-H32-I64-L1-A2-V{vocab}", dtype="bfloat16", mlm_loss_impl=impl)
    config.train.num_steps, config.train.batch_size, config.eval.batch_size = 10, batch, batch
    program = pretrain_program(config, make_mesh(1, 1, jax.devices()[:1]), model=cfg)
    state = abstract_like(program.state.abstract)
    return program.train_step.lower(state, program.abstract_batch()).compile().as_text()


def _top_level_buffers(hlo: str, rows: int, vocab: int) -> list[tuple[str, str]]:
    """(dtype, defining op) of every ``[rows, vocab]`` array the optimized program holds: the
    results of instructions outside fused computations (inside a fusion nothing reaches memory)."""
    fused = set(re.findall(r"calls=(%[\w.\-]+)", hlo))
    found, computation = [], None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?(%[\w.\-]+) .*\{$", line)
        if header:
            computation = header.group(1)
        elif computation not in fused:
            result = re.search(rf"= (\w+)\[{rows},{vocab}\]\S* ([\w\-]+)\(", line)
            if result:
                found.append((result.group(1), result.group(2)))
    return found


def _autodiff_logits_xent(logits_nv, targets_n, weights_n):
    """The formulation before the one-pass gradient: autodiff of log_softmax + take_along_axis."""
    logp_nv = jax.nn.log_softmax(logits_nv.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp_nv, targets_n[:, None], axis=-1)[:, 0] * weights_n)


def test_train_step_holds_no_float32_rows_by_vocabulary_buffer(monkeypatch):
    """The compiled train step (CPU, bf16) with the output layer's accelerator formulations:

    - ``kernel`` (GPUs; interpreted here): no ``[rows, vocab]`` array of any dtype;
    - ``logits`` (one GEMM, the one-pass gradient; the head's accelerator branch forced): none of
      the float32 arrays autodiff of log_softmax writes (a zero-filled one-hot, its scatter or
      update-slice, the log-probabilities), so fewer float32 ``[rows, vocab]`` arrays than that
      formulation compiled here; the float32 arrays left are XLA:CPU's own way with bf16 GEMMs
      (it multiplies in float32: the GEMM's result, the bias added to it, the gradient's operand),
      which a GPU's bf16 GEMMs do not have.
    """
    vocab, batch = 2003, 64
    rows = packed_rows(batch * 128, batch, MaskingConfig.from_config(_mlm_section(), vocab))
    assert rows < batch * 32  # packed: the rows below are the packed ones
    assert _top_level_buffers(_train_step_hlo("kernel", vocab, batch), rows, vocab) == []
    with monkeypatch.context() as patch:  # the head's accelerator branch (no CPU bias folding)
        patch.setattr(jax, "default_backend", lambda: "gpu")
        new = _top_level_buffers(_train_step_hlo("logits", vocab, batch), rows, vocab)
        patch.setattr("minilm_jax.model.heads.softmax_xent_sum", _autodiff_logits_xent)
        old = _top_level_buffers(_train_step_hlo("logits", vocab, batch), rows, vocab)
    assert ("bf16", "convert") in new  # the bf16 logits: the test reads the right arrays
    forbidden = ("broadcast", "scatter", "dynamic-update-slice", "exponential", "log")
    assert not [b for b in new if b[1].startswith(forbidden) or "update-slice" in b[1]], new
    assert [b for b in old if b[1] == "broadcast"], old  # the one-hot's zeros, found in the old
    assert sum(d == "f32" for d, _ in new) < sum(d == "f32" for d, _ in old), (new, old)
