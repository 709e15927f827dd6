"""The attention-prior hook (``SelfAttention.score_bias``) and the layer-instancing hook
(``TransformerEncoder.make_layers``), through a user's ALiBi and cross-layer-sharing variants
(tests/encoder_variants.py; their PyTorch twins in tests/modeling_encoder_variants.py): numbers
against independent computations on every attention path, the counts by hand, and each variant
through pre-training (SIGKILL at a checkpoint, bit-identical resume), a population of 2,
fine-tuning, zero-shot minimal pairs and a Hugging Face export that transformers saves and loads
again."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import (REPO, ZORRO_DEV_PARADIGM as PARADIGM, exact_xla_flags, float32_tolerance,
                      shared_path, slow_pretrain_script)
from test_pretrain import wait_for

from minilm_jax.model import accounting
from minilm_jax.model.accounting import VariantCounts
from minilm_jax.model.config import ConfigError
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.layers import EncoderLayer, SelfAttention, attention_mask
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point

ALIBI, SHARED = "encoder_variants:AlibiEncoder", "encoder_variants:SharedLayerEncoder"
POINT = "E16-H32-I64-L3-A4-V600"  # factorized (E->H projection), 4 heads, 3 layers
T = 12


def config(arch: str, **fields):
    return resolve_point(POINT, max_len=16, arch=arch, **fields)


def perturbed(model):
    """Every parameter moved off its initial value (zero biases and unit norms hide mistakes)."""
    rng = np.random.default_rng(0)
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = np.asarray(var.get_value())
        var.set_value(jnp.asarray((value + rng.normal(0.0, 0.2, value.shape)).astype(value.dtype)))
    return model


def padded_segments() -> np.ndarray:
    """Two rows of T: one whole, one with 8 real positions then padding (segment 0)."""
    return np.stack([np.ones(T, np.int32), (np.arange(T) < 8).astype(np.int32)])


def alibi_bias_numpy(heads: int, q_len: int, k_len: int) -> np.ndarray:
    """Press et al. (2022), float64: head h's slope 2^(-8 (h + 1) / A), bias -slope x |i - j|."""
    slopes = np.array([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
    distance = np.abs(np.arange(q_len)[:, None] - np.arange(k_len)[None, :])
    return -slopes[:, None, None] * distance[None]


def attention_numpy(attn: SelfAttention, x_bth: np.ndarray, mask_b1tt: np.ndarray,
                    bias_att: np.ndarray | None) -> np.ndarray:
    """Multi-head attention in float64 from the module's weights: scaled scores + bias, masked
    (-1e9), softmax, values, output projection."""
    heads = attn.cfg.num_heads
    b, t, h = x_bth.shape
    d = h // heads

    def linear(lin, x):
        return x @ np.asarray(lin.kernel[...], np.float64) + np.asarray(lin.bias[...], np.float64)

    q, k, v = (linear(lin, x_bth).reshape(b, t, heads, d).transpose(0, 2, 1, 3)
               for lin in (attn.query, attn.key, attn.value))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if bias_att is not None:
        scores = scores + bias_att[None]
    scores = np.where(mask_b1tt, scores, -1e9)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, h)
    return linear(attn.output, ctx)


def test_alibi_bias_is_relative_and_added_to_the_einsum_scores():
    """The ALiBi variant's bias equals Press et al.'s slopes x distance (float64 by hand),
    depends on i - j only, and is what the einsum path adds to its scaled scores: its attention
    output equals a float64 computation with that bias, and is far from one without it."""
    cfg = config(ALIBI, dtype="float32")
    attn = perturbed(build_mlm(cfg)).encoder.layers[0].attention
    heads = cfg.num_heads
    bias = np.asarray(attn.score_bias(T, T))
    assert bias.dtype == np.float32 and bias.shape == (heads, T, T)
    np.testing.assert_array_equal(  # 2^-2, 2^-4, 2^-6, 2^-8: exact in float32
        -bias[:, 0, 1], [0.25, 0.0625, 0.015625, 0.00390625])
    np.testing.assert_allclose(bias, alibi_bias_numpy(heads, T, T), rtol=1e-7, atol=0)
    for shift in (1, 3, 7):  # relative positions only: the same along every diagonal
        np.testing.assert_array_equal(bias[:, shift:, shift:], bias[:, :T - shift, :T - shift])
    np.testing.assert_array_equal(bias, np.transpose(bias, (0, 2, 1)))  # bidirectional
    np.testing.assert_allclose(np.asarray(attn.score_bias(5, 9)),
                               alibi_bias_numpy(heads, 5, 9), rtol=1e-7, atol=0)

    x = np.random.default_rng(1).normal(0.0, 1.0, (2, T, cfg.hidden_dim)).astype(np.float32)
    mask = np.asarray(attention_mask(jnp.asarray(padded_segments())))
    ours = np.asarray(attn(jnp.asarray(x), jnp.asarray(mask)))
    want = attention_numpy(attn, x.astype(np.float64), mask, alibi_bias_numpy(heads, T, T))
    without = attention_numpy(attn, x.astype(np.float64), mask, None)
    scale = float(np.max(np.abs(want)))
    tol = float32_tolerance(scale, 2 * cfg.hidden_dim + T)
    np.testing.assert_allclose(ours, want, atol=tol, rtol=0)
    assert np.max(np.abs(want - without)) > 100 * tol  # the bias moves the output


def encoder_outputs(cfg, impl: str, params=None):
    """Hidden states of ``cfg``'s encoder on a padded batch with ``attention_impl=impl`` (jitted),
    and the gradient of their sum of squares: from ``params`` (another path's) when given."""
    model = perturbed(build_mlm(cfg.replace(attention_impl=impl, dtype="float32")))
    graphdef, state, rest = nnx.split(model.encoder, nnx.Param, ...)
    state = params if params is not None else state
    tokens = np.random.default_rng(2).integers(5, cfg.vocab_size, (2, T)).astype(np.int32)
    segments = jnp.asarray(padded_segments())

    def loss(p):
        hidden = nnx.merge(graphdef, p, rest)(jnp.asarray(tokens), segments)
        return jnp.sum(hidden ** 2), hidden

    (_, hidden), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    return state, np.asarray(hidden), grads


def assert_same_outputs(a, b, cfg):
    (_, hidden_a, grads_a), (_, hidden_b, grads_b) = a, b
    terms = 2 * cfg.hidden_dim + cfg.ffn_dim + T
    scale = float(np.max(np.abs(hidden_a)))
    np.testing.assert_allclose(hidden_b, hidden_a, atol=cfg.num_layers * float32_tolerance(
        scale, terms), rtol=0)
    # gradients at the scale of the largest (the key bias's is rounding noise: softmax ignores a
    # shift shared by all keys)
    g_scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads_a))
    tol = cfg.num_layers * float32_tolerance(g_scale, terms * T)
    for (path, ga), gb in zip(jax.tree_util.tree_leaves_with_path(grads_a),
                              jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), atol=tol, rtol=0,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("impl", ["xla", "flash"])
def test_alibi_on_the_xla_and_flash_paths_equals_the_einsum_path(impl):
    """The bias reaches jax.nn.dot_product_attention (xla, on CPU) and the Pallas kernels (flash,
    interpreted on CPU) as it reaches the einsum path: the same hidden states on a padded batch
    and the same parameter gradients (the flash kernels' constant bias needs none)."""
    cfg = config(ALIBI).replace(num_layers=2)
    einsum = encoder_outputs(cfg, "einsum")
    other = encoder_outputs(cfg, impl, params=einsum[0])
    assert_same_outputs(einsum, other, cfg)
    # the same parameters without the bias (no position table either): far off
    unbiased = encoder_outputs(cfg.replace(arch="test_variant_hooks:NoPositionEncoder"), impl,
                               params=einsum[0])
    assert np.max(np.abs(unbiased[1] - other[1])) > 1e-2


class NoPositionEncoder(TransformerEncoder):
    """ALiBi's tree without its bias: no position table, no prior."""

    position_table = False


class LearnedBiasAttention(SelfAttention):
    """T5-style: a learned score per head and relative position (a parameter of the module)."""

    def __init__(self, cfg, init, rngs):
        super().__init__(cfg, init, rngs)
        t = cfg.max_len
        self.relative = nnx.Param(jax.random.normal(rngs.params(), (cfg.num_heads, 2 * t - 1)))

    def score_bias(self, q_len, k_len):
        offset = jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None] + self.cfg.max_len - 1
        return self.relative[...][:, offset]


class LearnedBiasLayer(EncoderLayer):
    attention_class = LearnedBiasAttention


class LearnedBiasEncoder(TransformerEncoder):
    layer_class = LearnedBiasLayer


def test_a_learned_bias_is_refused_on_the_flash_path_in_one_line():
    """A bias that depends on parameters cannot train through the flash kernels (no gradient
    for it): refused in one line eagerly, under jit, vmap and grad; ALiBi's constant bias is
    taken under all four. The learned bias trains on the einsum and xla paths (the same
    gradient for its table, not zero)."""
    learned = config("test_variant_hooks:LearnedBiasEncoder").replace(num_layers=1)
    tokens = jnp.asarray(np.full((2, T), 7, np.int32))

    def forward(model):
        return model.all_logits(tokens).sum()

    def stacked(model):  # two members, as a population or fine-tuning seeds run them
        graphdef, state = nnx.split(model)
        both = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), state)
        return jax.vmap(lambda s: forward(nnx.merge(graphdef, s)))(both)

    ways = {"eager": forward, "jit": nnx.jit(forward), "vmap": stacked, "grad": nnx.grad(forward)}
    flash_model = build_mlm(learned.replace(attention_impl="flash"))
    for way, run in ways.items():
        with pytest.raises(ConfigError) as refused:
            run(flash_model)
        said = str(refused.value)
        assert "\n" not in said and said.startswith(
            "LearnedBiasAttention.score_bias depends on parameters") and "flash" in said, way
    alibi = build_mlm(config(ALIBI, attention_impl="flash").replace(num_layers=1))
    for way, run in ways.items():
        assert np.all(np.isfinite(jax.tree.leaves(run(alibi))[0])), way

    grads = {}
    for impl in ("einsum", "xla"):
        model = build_mlm(learned.replace(attention_impl=impl, dtype="float32"))
        grad = nnx.grad(forward)(model)
        grads[impl] = np.asarray(grad.encoder.layers[0].attention.relative[...])
    scale = float(np.max(np.abs(grads["einsum"])))
    assert scale > 0
    np.testing.assert_allclose(grads["xla"], grads["einsum"], rtol=0,
                               atol=float32_tolerance(scale, 2 * T * T * 64))


class OneLayerEncoder(TransformerEncoder):
    def make_layers(self, cfg, init, rngs):
        return [self.layer_class(cfg, init, rngs)]


def test_a_wrong_bias_shape_or_layer_count_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^OneLayerEncoder\.make_layers returned 1 layers for "
                                          r"model\.num_layers=3$"):
        build_mlm(config("test_variant_hooks:OneLayerEncoder"))

    class Wrong(SelfAttention):
        def score_bias(self, q_len, k_len):
            return jnp.zeros((q_len, k_len))

    from minilm_jax.model.init import make_initializers

    cfg = config("roberta").replace(num_layers=1)
    attn = Wrong(cfg, make_initializers(cfg.init), nnx.Rngs(params=0))
    x = jnp.zeros((1, T, cfg.hidden_dim))
    with pytest.raises(ConfigError, match=r"^Wrong\.score_bias\(12, 12\) must be \[A, Tq, Tk\] = "
                                          r"\[4, 12, 12\], not \[12, 12\]$"):
        attn(x, attention_mask(jnp.ones((1, T), jnp.int32)))


def layer_params(cfg) -> int:
    """One post-LN layer by hand: Q, K, V, O (H x H + H each), the FFN (H x I + I, I x H + H) and
    two LayerNorms (2 H each)."""
    h, i = cfg.hidden_dim, cfg.ffn_dim
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h


def test_shared_layers_hold_one_layer_and_apply_it_at_every_depth():
    """make_layers returning one layer L times: the tree holds layer 0 only (one layer's
    parameters by hand), the hidden states equal the built-in encoder's whose L layers all hold
    that layer's values, and the shared layer's gradient is the sum of the built-in layers'."""
    cfg = config(SHARED, dtype="float32")
    model = perturbed(build_mlm(cfg))
    encoder = model.encoder
    assert all(layer is encoder.layers[0] for layer in encoder.layers) and len(encoder.layers) == 3
    flat_params = nnx.to_flat_state(nnx.state(encoder, nnx.Param))
    assert {p[1] for p, _ in flat_params if p[0] == "layers"} == {0}
    layer_count = sum(int(np.prod(v.get_value().shape)) for p, v in flat_params if p[0] == "layers")
    assert layer_count == layer_params(cfg) == 8544

    builtin = build_mlm(cfg.replace(arch="roberta")).encoder
    flat = dict(nnx.to_flat_state(nnx.state(encoder, nnx.Param)))
    for path, var in nnx.to_flat_state(nnx.state(builtin, nnx.Param)):
        source = ("layers", 0, *path[2:]) if path[0] == "layers" else path
        var.set_value(flat[source].get_value())
    tokens = jnp.asarray(np.random.default_rng(3).integers(5, cfg.vocab_size, (2, T)), jnp.int32)
    segments = jnp.asarray(padded_segments())

    def run(module):
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)

        def loss(p):
            hidden = nnx.merge(graphdef, p, rest)(tokens, segments)
            return jnp.sum(hidden ** 2), hidden

        (_, hidden), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return np.asarray(hidden), dict(nnx.to_flat_state(grads))

    (ours, our_grads), (want, their_grads) = run(encoder), run(builtin)
    terms = 2 * cfg.hidden_dim + cfg.ffn_dim + T
    np.testing.assert_allclose(ours, want, atol=3 * float32_tolerance(
        float(np.max(np.abs(want))), terms), rtol=0)
    # at the scale of the largest gradient (the key bias's is rounding noise: softmax ignores a
    # shift shared by all keys); three layers' sums in the shared one
    scale = max(float(np.max(np.abs(g.get_value()))) for g in their_grads.values())
    for path, grad in our_grads.items():
        if path[0] == "layers":
            summed = sum(np.asarray(their_grads[("layers", k, *path[2:])].get_value(), np.float64)
                         for k in range(3))
        else:
            summed = np.asarray(their_grads[path].get_value())
        np.testing.assert_allclose(np.asarray(grad.get_value()), summed, rtol=0,
                                   atol=3 * float32_tolerance(scale, terms * T), err_msg=str(path))


def test_the_variants_counts_are_derived_as_by_hand():
    """Neither variant declares its counts; derived from the tree and the traced matmuls: sharing
    is L - 1 layers' parameters less and the FLOPs of L layers; ALiBi the position table's T x E
    parameters less and no matmul (the bias is added). The closed forms and the trace agree."""
    from minilm_jax.model.count_check import encoder_matmul_flops, same_as_builtin

    shared = config(SHARED)
    t, e, h, i, l = T, shared.emb_dim, shared.hidden_dim, shared.ffn_dim, shared.num_layers
    assert accounting.counts_source(shared) == "derived"
    assert accounting.derived_counts(shared, t) == VariantCounts(
        params=-(l - 1) * layer_params(shared), embedding_params=0, forward_flops=0.0)
    tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(shared)))
    assert accounting.formula_params(shared) == tree
    assert tree.total == accounting.formula_params(shared.replace(arch="roberta")).total - 2 * 8544
    # the encoder's matmuls by hand: the E->H projection, then L x (Q, K, V, O; scores and
    # probabilities x values; the FFN)
    by_hand = 2 * t * e * h + l * (4 * 2 * t * h * h + 2 * 2 * t * t * h + 2 * 2 * t * h * i)
    assert encoder_matmul_flops(shared, t) == by_hand
    assert accounting.paper_train_flops_per_sequence(shared) == \
        accounting.paper_train_flops_per_sequence(shared.replace(arch="roberta"))
    assert not same_as_builtin(shared.replace(num_layers=2))
    assert same_as_builtin(shared.replace(num_layers=1))  # one layer shared is the built-in one

    alibi = config(ALIBI)
    assert accounting.derived_counts(alibi, t) == VariantCounts(
        params=0, embedding_params=-alibi.num_positions * e, forward_flops=0.0)
    assert encoder_matmul_flops(alibi, t) == by_hand
    assert accounting.count_params(nnx.eval_shape(lambda: build_mlm(alibi))) == \
        accounting.formula_params(alibi)


# ------------------------------------------------------------------------------ the whole path
PIPE_POINT = "E16-H16-I32-L2-A2"
VARIANTS = {"alibi": ALIBI, "shared": SHARED}
CLASSES = ("alpha", "beta", "gamma")


def pretrain_args(shards: Path, workdir: Path, arch: str, *extra: str) -> list[str]:
    """The pre-training command: 8 steps, evaluated and saved every 4 (one step per dispatch)."""
    fields = {"data.shards": shards, "model.vocab_size": 610, "model.arch": arch,
              "model.max_len": 64, "train.num_steps": 8, "train.batch_size": 16,
              "train.log_every": 1, "eval.every_steps": 4, "eval.batch_size": 50,
              "checkpoint.every_steps": 4, "mesh.data": 1, "train.progress": False}
    return ["-m", "minilm_jax.pretrain", f"--config=configs/pretrain.py:{PIPE_POINT}",
            f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in fields.items()), *extra]


def pretrain_env() -> dict[str, str]:
    """The exact code generation (conftest.exact_xla_flags: a lax.map population equals its
    separate runs bit for bit there; tests/test_population.py) with 8 fake devices, and this
    folder importable."""
    import os

    return {**os.environ, "XLA_FLAGS": exact_xla_flags(8), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO / "tests")}


# The solo command, slowed after its step-4 checkpoint (a SIGKILL then lands mid-run).
SLOW_AFTER_CHECKPOINT_4 = slow_pretrain_script("minilm_jax.train.pretrainer:Pretrainer")


def write_table(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(text, CLASSES[i % 3]) for i, text in enumerate(texts)]
    for split, part in (("train", rows[:64]), ("test", rows[64:])):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(part)
    return folder


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pipeline(request, zorro_shards, tmp_path_factory) -> dict:
    """One variant through the engine: a population of 2 (seeds 0 and 1, lax.map) and, beside
    it, the seed-0 run killed with SIGKILL after its step-4 checkpoint, then resumed; a
    3-class table task fine-tuned (2 seeds, vmap) from the resumed run."""
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.finetune.finetuner import Finetuner

    name, arch = request.param, VARIANTS[request.param]
    root = tmp_path_factory.mktemp(f"pipeline_{name}")
    env = pretrain_env()
    population = subprocess.Popen(
        [sys.executable, *pretrain_args(zorro_shards, root / "pop", arch,
                                        "--config.population.seeds=0,1",
                                        "--config.population.members=map")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = root / "solo"
    try:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_AFTER_CHECKPOINT_4,
                                 *pretrain_args(zorro_shards, killed, arch)[2:]], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        wait_for(killed / "checkpoints" / "4", proc, timeout=300)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_early = not (killed / "summary.json").exists()
        resumed = subprocess.run([sys.executable, *pretrain_args(zorro_shards, killed, arch)],
                                 cwd=REPO, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        out, _ = population.communicate(timeout=600)
        assert population.returncode == 0, out
    finally:
        if population.poll() is None:
            population.kill()
            population.wait()

    c = finetune_config("table")
    lines = [line.strip() for line in shared_path("wikitext2", "tokenized", "wiki.valid.tokens")
             .read_text(encoding="utf-8").splitlines() if len(line.split()) >= 12]
    c.data.dir = str(write_table(root / "table", [" ".join(x.split()[:3 + i % 14])
                                                       for i, x in enumerate(lines[900:996])]))
    c.data.max_len = 32
    c.init.checkpoint = str(killed)
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.seeds = (0, 1)
    c.train.members = "vmap"
    c.train.progress = False
    c.eval.batch_size = 32
    c.mesh.data = 1
    finetuned = root / "table_run"
    assert Finetuner(c, finetuned, c.init.mode).run()["status"] == "completed"
    return {"name": name, "arch": arch, "root": root, "solo": killed, "pop": root / "pop",
            "killed_early": killed_early, "resumed_out": resumed.stdout, "finetuned": finetuned,
            "tokenizer": zorro_shards.parent / "tok.model"}


def summary_of(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


def train_losses(workdir: Path) -> dict[int, float]:
    from minilm_jax.train.run_log import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl")
            if r["split"] == "train"}


def test_pretraining_resumes_bit_identically_and_a_population_trains_the_variant(pipeline):
    """The run killed after its step-4 checkpoint resumes from it and ends bit-identical to the
    population's seed-0 member (a lax.map member equals its separate run under the exact code
    generation), losses included; the members differ; every run holds the variant's tree and
    records its counts (parameters = the tree, derived; FLOPs = the built-in encoder's)."""
    from minilm_jax.runs.pretrained import PretrainedRun

    assert pipeline["killed_early"] and "resumed from checkpoint at step 4" in pipeline[
        "resumed_out"]
    solo, members = pipeline["solo"], pipeline["pop"] / "members"
    assert sorted(p.name for p in members.iterdir()) == ["s0", "s1"]
    assert summary_of(solo)["final_params_sha256"] == summary_of(members / "s0")[
        "final_params_sha256"]
    assert train_losses(solo) == train_losses(members / "s0")
    assert train_losses(members / "s1")[8] != train_losses(members / "s0")[8]
    for run in (solo, members / "s0", members / "s1"):
        opened = PretrainedRun.open(run, "latest")
        assert opened.model.arch == pipeline["arch"] and opened.step == 8
        state = opened.model_state()
        paths = {p for p, _ in nnx.to_flat_state(state)}
        layers = {p[2] for p in paths if p[:2] == ("encoder", "layers")}
        assert layers == ({0} if pipeline["name"] == "shared" else {0, 1})
        assert any("position_embeddings" in p for p in paths) == (pipeline["name"] == "shared")
        tree = accounting.count_params(nnx.eval_shape(lambda m=opened.model: build_mlm(m)))
        assert sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(state)) == \
            tree.total == summary_of(run)["params"]["total"]
        # no matmul added: the recorded (paper) FLOPs are the built-in encoder's of that shape
        assert summary_of(run)["flops_per_sequence"]["paper"] == \
            accounting.paper_train_flops_per_sequence(opened.model.replace(arch="roberta"))


def test_zero_shot_minimal_pairs_score_the_variant(pipeline, offline_zorro):
    """Holistic scores of a Zorro paradigm's pairs from the resumed run: each pair's margin equals
    one computed from the model's own logits by hand (float64 log-softmax, mean over the
    sentence's tokens), so the scorer ran the variant as trained."""
    from minilm_jax.evals.minimal_pairs import score_paradigms
    from minilm_jax.evals.scoring_models import scoring_model
    from minilm_jax.evals.suites import open_suite
    from minilm_jax.runs.pretrained import PretrainedRun
    from scipy.special import log_softmax

    scorer = scoring_model(pipeline["solo"], "latest")
    paradigms = open_suite("zorro", paradigms=[PARADIGM])
    (result,) = score_paradigms(paradigms, scorer.tokenizer, scorer.logprobs, "holistic")
    assert result.scored == result.pairs > 0
    run = PretrainedRun.open(pipeline["solo"], "latest")
    model = nnx.eval_shape(lambda: build_mlm(run.model))
    nnx.update(model, run.model_state())
    logits_fn = nnx.jit(lambda m, t: m.all_logits(t))
    tok = scorer.tokenizer

    def score(text: str) -> float:
        ids = tok.encode_words(text)[0]
        row = np.asarray([[tok.bos_id, *ids, tok.eos_id]], np.int32)
        logp = log_softmax(np.asarray(logits_fn(model, row), np.float64)[0], axis=-1)
        return float(np.mean([logp[k + 1, t] for k, t in enumerate(ids)]))

    pairs = paradigms[0].pairs[:6]
    want = np.array([score(p.good) - score(p.bad) for p in pairs])
    np.testing.assert_allclose(result.margins[:6], want, rtol=0, atol=float32_tolerance(
        10.0, 64 + 610))


def test_fine_tuned_and_pretrained_variants_export_and_round_trip(pipeline, tmp_path):
    """The fine-tuned classifier and the pre-training run export through the command with the
    variant's PyTorch twin; transformers loads each with every tensor, saves it to a new folder
    (save_pretrained) and loads that again: the classifier gives the logits its run saved for
    its test split, the masked LM our logits on a padded batch; no key missing or unexpected."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minilm_jax.interop.__main__ import main
    from minilm_jax.runs.pretrained import PretrainedRun

    name = pipeline["name"]
    # transformers keeps a folder's remote code under the folder's name: one name per export
    clf, mlm = tmp_path / f"hooks_{name}_clf", tmp_path / f"hooks_{name}_mlm"
    assert main(["export", "--workdir", str(pipeline["finetuned"]), "--out", str(clf)]) == 0
    assert main(["export", "--workdir", str(pipeline["solo"]), "--out", str(mlm),
                 "--which", "latest"]) == 0

    def round_trip(auto, folder: Path):
        first, info = auto.from_pretrained(str(folder), trust_remote_code=True,
                                           output_loading_info=True)
        assert not any(info.values()), info
        again = folder.with_name(folder.name + "_saved")
        first.save_pretrained(str(again))
        hf, info = auto.from_pretrained(str(again), trust_remote_code=True,
                                        output_loading_info=True)
        assert not any(info.values()), info
        assert type(hf).__name__.startswith(pipeline["arch"].split(":")[1])
        layers = hf.minilm.layers
        assert (layers[0] is layers[1]) == (name == "shared")
        return hf.eval()

    hf = round_trip(transformers.AutoModelForSequenceClassification, clf)
    summary = json.loads((pipeline["finetuned"] / "summary.json").read_text())
    member = int(np.argmax([m["score"] for m in summary["validation"]["members"]]))
    saved = np.load(pipeline["finetuned"] / "predictions" / "test.selected.npy")[member]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(clf), trust_remote_code=False)
    with open(pipeline["root"] / "table" / "test.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    batch = hf_tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt",
                   split_special_tokens=True)
    with torch.no_grad():
        theirs = hf(**batch).logits.numpy()
    assert (batch["attention_mask"] == 0).any()
    terms = 2 * (16 + 32) + 32 + 16 + 16
    np.testing.assert_allclose(theirs, saved, rtol=0, atol=float32_tolerance(
        float(np.max(np.abs(saved))), terms))

    hf = round_trip(transformers.AutoModelForMaskedLM, mlm)
    run = PretrainedRun.open(pipeline["solo"], "latest")
    ours = nnx.eval_shape(lambda: build_mlm(run.model))
    nnx.update(ours, run.model_state())
    tokens = np.full((3, 20), 1, np.int32)
    rng = np.random.default_rng(4)
    for row, n in enumerate((20, 11, 4)):
        tokens[row, :n] = rng.integers(5, 600, n)
        tokens[row, 0], tokens[row, n - 1] = 0, 2
    mine = np.asarray(nnx.jit(lambda m, t: m.all_logits(t))(ours, jnp.asarray(tokens)))
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(theirs, mine, rtol=0, atol=float32_tolerance(
        float(np.max(np.abs(mine))), terms + 610))
