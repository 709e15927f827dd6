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
from minilm_jax.model.xent import fused_linear_xent, softmax_xent_sum
from minilm_jax.model.xent_kernel import (kernel_applies, kernel_linear_logprobs,
                                          kernel_linear_xent)
from minilm_jax.train.masking import (MaskingConfig, mask_tokens, pack_predictions, packed_rows,
                                      predicted)
from minilm_jax.train.built_programs import BuiltPrograms
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
    # the encoder layer in XLA: under the patched backend below, "auto" would pick its GPU
    # kernels, which only Triton compiles (this test reads the output layer's buffers)
    cfg = resolve_point(f"E16-H32-I64-L1-A2-V{vocab}", dtype="bfloat16", mlm_loss_impl=impl,
                        layer_impl="xla")
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
        # the same config built again from the patched function: not the program kept for it
        patch.setattr("minilm_jax.train.program._BUILT", BuiltPrograms())
        old = _top_level_buffers(_train_step_hlo("logits", vocab, batch), rows, vocab)
    assert ("bf16", "convert") in new  # the bf16 logits: the test reads the right arrays
    forbidden = ("broadcast", "scatter", "dynamic-update-slice", "exponential", "log")
    assert not [b for b in new if b[1].startswith(forbidden) or "update-slice" in b[1]], new
    assert [b for b in old if b[1] == "broadcast"], old  # the one-hot's zeros, found in the old
    assert sum(d == "f32" for d, _ in new) < sum(d == "f32" for d, _ in old), (new, old)


# ------------------------------------------------------- the incoming cotangent, row and vocab splits
def _weighted_problem(n, h, v, seed):
    """A problem whose loss weights are not 0/1 only: uniform in [0, 2), every third row 0."""
    x, w, b, t, _ = _problem(n, h, v, seed=seed)
    wt = jax.random.uniform(jax.random.key(seed + 100), (n,), minval=0.0, maxval=2.0)
    return x, w, b, t, jnp.where(jnp.arange(n) % 3 == 0, 0.0, wt)


def _float64_reference(x, w, b, t, wt, g):
    """numpy float64: ``g * sum_n wt_n CE_n`` and its gradients with respect to x, W, b and the
    weights, written out: d logits = g wt_n (softmax - onehot)."""
    x, w, b, wt = (np.asarray(a, np.float64) for a in (x, w, b, wt))
    t = np.asarray(t)
    logits = x @ w + b
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    rows = np.arange(len(t))
    nll = lse - logits[rows, t]
    d = np.exp(logits - lse[:, None])
    d[rows, t] -= 1.0
    d *= g * wt[:, None]
    return g * float(nll @ wt), (d @ w.T, x.T @ d, d.sum(axis=0), g * nll)


FORMULATIONS = {
    "logits": lambda x, w, b, t, wt: softmax_xent_sum(x @ w + b, t, wt),
    "fused": lambda x, w, b, t, wt: fused_linear_xent(x, w, b, t, wt, 64),
    "kernel": kernel_linear_xent,
}


def _assert_close_to_reference(got, grads, want, want_grads, terms):
    np.testing.assert_allclose(got, want, rtol=0, atol=float32_tolerance(abs(want), terms))
    for name, a, e in zip(("x", "W", "b", "weights"), grads, want_grads):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=0, err_msg=name,
                                   atol=float32_tolerance(float(np.abs(e).max()), terms))


@pytest.mark.parametrize("formulation", sorted(FORMULATIONS))
def test_gradients_carry_the_incoming_cotangent(formulation):
    """Every formulation's backward multiplies by the cotangent it receives: ``c * loss`` for a
    scalar c, and members stacked under vmap (a population) each with its own cotangent
    (``sum_m g_m loss_m``, g non-uniform and of both signs), against float64 gradients written
    out; weights non-uniform too (their gradient is ``g * CE_n``)."""
    fn = FORMULATIONS[formulation]
    n, h, v = 150, 24, 300  # 150 rows: 3 fused chunks of 64 (padded), 3 kernel row blocks
    problem = _weighted_problem(n, h, v, seed=5)
    c = -1.7
    got, grads = jax.jit(jax.value_and_grad(lambda *a: c * fn(*a), argnums=(0, 1, 2, 4)))(
        *problem)
    want, want_grads = _float64_reference(*problem, c)
    _assert_close_to_reference(got, grads, want, want_grads, n + h + v)
    members = [_weighted_problem(n, h, v, seed=s) for s in (11, 12, 13)]
    stacked = [jnp.stack(parts) for parts in zip(*members)]
    g = jnp.asarray([0.6, -1.9, 2.7])

    def objective(x, w, b, t, wt):
        return jnp.sum(g * jax.vmap(fn)(x, w, b, t, wt))

    got, grads = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2, 4)))(*stacked)
    want = 0.0
    for m, problem in enumerate(members):
        loss_m, grads_m = _float64_reference(*problem, float(g[m]))
        want += loss_m
        scale = max(float(np.abs(e).max()) for e in grads_m)
        for name, a, e in zip(("x", "W", "b", "weights"), grads, grads_m):
            np.testing.assert_allclose(np.asarray(a[m], np.float64), e, rtol=0,
                                       err_msg=f"member {m}: {name}",
                                       atol=float32_tolerance(scale, n + h + v))
    np.testing.assert_allclose(got, want, rtol=0, atol=float32_tolerance(abs(want), 3 * n))


@pytest.mark.parametrize("shape", [(730, 24, 1100), (333, 100, 700)])
def test_kernel_dw_db_sum_every_row_split_and_vocabulary_split(shape):
    """dW and db summed over several row splits (each a run of row blocks; the rows not a
    multiple of the block, so the last is padded) and dx over several vocabulary splits, against
    float64; the cotangent 0.37 and the weights non-uniform. Both block shapes (64 x 128 up to a
    hidden size of 64, 32 x 64 above)."""
    from minilm_jax.model.xent_kernel import layout

    n, h, v = shape
    lay = layout(n, h, v)
    assert lay.r_splits >= 2 and lay.v_splits >= 2 and n % lay.block_r != 0
    problem = _weighted_problem(n, h, v, seed=21)
    got, grads = jax.jit(jax.value_and_grad(lambda *a: 0.37 * kernel_linear_xent(*a),
                                            argnums=(0, 1, 2, 4)))(*problem)
    want, want_grads = _float64_reference(*problem, 0.37)
    _assert_close_to_reference(got, grads, want, want_grads, n + h + v)
