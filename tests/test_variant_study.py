"""Two encoder variants from a user's own module (tests/encoder_variants.py: SwiGLU through the
feed-forward hook, rotary positions through the attention hook) compared with the built-in encoder
as a sweep compares anything: one grid point x three architectures x two pre-training seeds, each
run fine-tuned and scored zero-shot (its random twin of the same architecture too), then the
report's variant-vs-baseline section. What each stage recorded is checked against the models
built: parameters equal to the tree, FLOPs to the traced forward, the architecture everywhere.
The other two hooks' variants (ALiBi through the score-bias hook, cross-layer sharing through the
layer-instancing hook) go through the same stages outside a sweep in tests/test_variant_hooks.py
(``pipeline``: pre-training killed and resumed, a population, fine-tuning, zero-shot scores,
export; the FLOPs each run recorded, the built-in encoder's; their counts in
``test_the_variants_counts_are_derived_as_by_hand``): a sweep runs every
architecture through the same code, and two more here cost ~40% of this test's time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from flax import nnx

from conftest import REPO, ZORRO_DEV_PARADIGM as PARADIGM

from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.model.count_check import encoder_matmul_flops
from minilm_jax.model.models import build_mlm
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.sweep.workers import run_worker

sys.path.insert(0, str(REPO / "configs"))
import sweep as sweep_configs  # noqa: E402

POINT = "E16-H16-I32-L1-A2"
SWIGLU, ROTARY = "encoder_variants:SwiGLUEncoder", "encoder_variants:RotaryEncoder"
ARCHS = ("roberta", SWIGLU, ROTARY)


def variant_sweep(shards: Path):
    sweep = sweep_configs.demo()
    sweep.shards, sweep.num_steps, sweep.eval_every, sweep.vocab_size = str(shards), 8, 4, 610
    sweep.pretrain_overrides = ("model.max_len=64", "eval.batch_size=48", "train.log_every=4",
                                "train.progress=False", "optim.warmup_steps=2",
                                "optim.peak_lr=3e-3", "mesh.data=1")
    sweep.bases, sweep.ofat, sweep.groups = (), (), ()
    sweep.grid, sweep.grid_fields = (POINT,), (f"model.arch={','.join(ARCHS)}",)
    sweep.pretrain_seeds = (0, 1)
    sweep.finetune_tasks, sweep.finetune_init, sweep.finetune_checkpoints = ("bbc",), "pretrained", ()
    sweep.finetune_seeds = (0,)
    sweep.finetune_overrides = ("train.epochs=1", "data.max_train_examples=64",
                                "data.max_eval_examples=64", "data.max_len=32",
                                "train.batch_size=16", "eval.batch_size=32", "mesh.data=1")
    sweep.evals = {"zorro": {"type": "minimal_pairs", "suite": "zorro", "paradigms": PARADIGM,
                             "rules": "holistic"}}
    sweep.report_bootstrap = 20
    return sweep


def test_variants_through_a_sweep_fine_tuning_and_zero_shot(zorro_shards, offline_zorro,
                                                            tmp_path):
    root = tmp_path / "sweep"
    outcome = run_worker(variant_sweep(zorro_shards), root)
    assert outcome["failures"] == {}
    rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    runs = {(arch, seed): f"{POINT}__arch={arch.replace(':', '_')}__seed={seed}"
            for arch in ARCHS for seed in (0, 1)}
    arch_of = {name: arch for (arch, _), name in runs.items()}

    # pre-training: what each run recorded is what it built
    forward = {}
    for (arch, seed), name in runs.items():
        pre = root / "runs" / name / "pretrain"
        summary = json.loads((pre / "summary.json").read_text())
        model = PretrainedRun.open(pre).model
        assert model.arch == arch
        tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(model)))
        assert summary["params"]["total"] == tree.total
        forward[arch] = (summary["flops_per_sequence"]["paper"], encoder_matmul_flops(model), model)
        validation = [r for r in rows if r["kind"] == "validation" and r["run"] == name]
        assert [r["step"] for r in validation] == [4, 8]
        assert all(r.get("arch") == arch
                   and r["params_total"] == tree.total for r in validation)
    base_recorded, base_traced, base_model = forward["roberta"]
    head = accounting.forward_flops_per_sequence(base_model) - accounting.forward_flops_per_sequence(
        base_model, num_predictions=0)  # the MLM head, the same in every variant
    for arch in (SWIGLU, ROTARY):
        recorded, traced, _ = forward[arch]
        # the recorded (paper) train FLOPs are 3 x forward; the traced encoder + the same head
        assert recorded / base_recorded == pytest.approx(
            (traced + head) / (base_traced + head), rel=0.02)
    # SwiGLU's gate: 3 (train) x L x 2 T H I more; the rotation is element-wise, no matmul
    swiglu = forward[SWIGLU][2]
    assert forward[SWIGLU][0] - base_recorded == 3 * swiglu.num_layers * 2 * swiglu.max_len * \
        swiglu.hidden_dim * swiglu.ffn_dim
    assert forward[ROTARY][0] == base_recorded

    # fine-tuning: every run, recorded under its own architecture
    downstream = [r for r in rows if r["kind"] == "downstream"]
    assert sorted(r["run"] for r in downstream) == sorted(runs.values())
    for (arch, _), name in runs.items():
        recorded = json.loads((root / "runs" / name / "finetune" / "bbc" / "config.json")
                              .read_text())
        assert recorded["model_built"]["arch"] == arch
        assert recorded["model.arch"] == ("roberta" if arch == "roberta" else arch)

    # zero-shot: every run's final checkpoint and its random twin, rows naming the variant
    pairs = [r for r in rows if r["kind"] == "minimal_pairs"]
    assert sorted((r["run"], r["init"]) for r in pairs) == sorted(
        (name, init) for name in runs.values() for init in ("pretrained", "random"))
    assert all(r.get("arch", "roberta") == arch_of[r["run"]] for r in pairs)

    # the report pairs each variant with the built-in encoder over the two seeds
    report = (root / "report" / "report.md").read_text()
    section = report[report.index("## Encoder variants against the built-in encoder"):]
    assert all(a in section for a in (SWIGLU, ROTARY)) and "paired t" in section
    assert section.count("| `bbc` |") == 2  # each variant's downstream gap on the task
    assert "no random-init twin was fine-tuned for the 6 (run, task) pairs" in report

    # a fine-tuning init of another architecture from the baseline's checkpoint: one line
    from minilm_jax.configs.finetune import get_config
    from minilm_jax.finetune.finetuner import Finetuner

    config = get_config("bbc")
    config.init.checkpoint = str(root / "runs" / runs[("roberta", 0)] / "pretrain")
    config.model.arch = ROTARY
    with pytest.raises(UserError) as refused:
        Finetuner(config, tmp_path / "hybrid", "pretrained")
    assert "\n" not in str(refused.value) and "holds architecture 'roberta'" in str(refused.value)
    assert not (tmp_path / "hybrid").exists()
