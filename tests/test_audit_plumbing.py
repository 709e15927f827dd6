"""Sweep plumbing and run readers pinned on tiny hand-made inputs: a sweep's distinct pre-training
seeds and numeric factor values, the random-init twin and evaluation folders keyed by what they
depend on, the results rows of a run (FLOPs and sequences at each step, the test row at the best
step, nothing for an unfinished run), the failed stages a sweep reports, integer overrides, the
validation perplexity of the checkpoint read, relative locations in a bucket and a Hugging Face
folder written without ``tie_word_embeddings``."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
from flax import nnx

from minilm_jax.configs import sweep as sweep_recipes
from minilm_jax.errors import UserError
from minilm_jax.interop.hf_import import import_roberta
from minilm_jax.interop.hf_roberta import export_roberta
from minilm_jax.model import build_mlm
from minilm_jax.model.config import ConfigError
from minilm_jax.model.sizes import resolve_point
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.settings.command_line import parse_value
from minilm_jax.storage import relative_location
from minilm_jax.sweep.layout import SweepLayout, twin_key
from minilm_jax.sweep.results import run_rows
from minilm_jax.sweep.spec import Membership, Run, expand
from minilm_jax.sweep.status import SweepStatus
from test_analysis_icer import write_jsonl


# ------------------------------------------------------------------------- sweep expansion


def test_repeated_pretraining_seeds_are_refused_and_distinct_ones_each_make_a_run():
    """(0, 0) would silently train one replicate where two were declared."""
    sweep = sweep_recipes.demo()
    sweep.ofat, sweep.groups = (), ()
    sweep.pretrain_seeds = (0, 0)
    with pytest.raises(UserError, match="distinct"):
        expand(sweep)
    sweep.pretrain_seeds = (3, 1)
    runs = expand(sweep)
    assert [(r.name, r.design, r.pretrain_seed) for r in runs] == [
        ("tiny__seed=3", "tiny", 3), ("tiny__seed=1", "tiny", 1)]


def test_one_factor_values_are_numbers_where_they_read_as_numbers():
    """A factor's values are what the report fits against: 64 (int), 0.002 (float), and a path
    named by its last part (text)."""
    sweep = sweep_recipes.demo()
    sweep.groups = ()
    sweep.ofat = ("tiny:model.hidden_dim=64,128", "tiny:optim.peak_lr=0.002",
                  "tiny:data.shards=/data/subsets/n750/")
    values: dict[str, list] = {}
    for m in (m for run in expand(sweep) for m in run.memberships if m.factor):
        values.setdefault(m.factor, []).append(m.factor_value)
    assert values == {"model.hidden_dim": [64, 128], "optim.peak_lr": [0.002],
                      "data.shards": ["n750"]}
    assert [type(v) for v in values["model.hidden_dim"] + values["optim.peak_lr"]] == [
        int, int, float]


# --------------------------------------------------------------------------- sweep layout


def _run(name: str, **model) -> Run:
    config = ml_collections.ConfigDict({"seed": 0, "model": {"arch": "roberta", **model},
                                        "train": {"batch_size": 4, "num_steps": 20}})
    return Run(name, "E8-H8-I16-L1-A2", config, [Membership("base", name)])


def test_random_twins_of_one_point_with_other_model_fields_are_not_shared():
    """The twin is keyed by the whole model, not its point's name: a run of the same E-H-I-L-A
    point with another dropout is another architecture's twin; a reseeded run shares it."""
    finetune = ml_collections.ConfigDict({"task": "sst2", "train": {"seeds": (0, 1)},
                                          "init": {"checkpoint": "a", "mode": "random"}})
    base = twin_key(_run("a", hidden_dropout=0.1), finetune)
    assert twin_key(_run("b", hidden_dropout=0.0), finetune) != base
    reseeded = _run("c", hidden_dropout=0.1)
    reseeded.config.seed = 7
    assert twin_key(reseeded, finetune) == base


def test_an_evaluation_folder_changes_when_the_run_is_trained_again(tmp_path):
    """Rows of a re-trained run (other final parameters) are scored afresh, never mixed."""
    layout = SweepLayout(tmp_path)
    entry = {"suite": "zorro", "every": 1}

    def folder(final_sha: str):
        layout.pretrain_dir("r").mkdir(parents=True, exist_ok=True)
        (layout.pretrain_dir("r") / "summary.json").write_text(
            json.dumps({"final_params_sha256": final_sha}))
        return layout.evaluation_dir("r", "zorro", entry)

    first = folder("aa")
    assert folder("aa") == first
    assert folder("bb") != first
    assert first.parent == tmp_path / "runs" / "r" / "evals"


# ---------------------------------------------------------------------------- results rows

PER_SEQUENCE = {"paper": 100.0, "complete": 130.0}


def _pretrained_run(layout: SweepLayout, run: Run, status: str = "completed") -> None:
    """A finished pre-training of ``run``: 20 steps, validation at 10 and 20, best at 10."""
    pre = layout.pretrain_dir(run.name)
    pre.mkdir(parents=True)
    write_jsonl(pre / "metrics.jsonl", [
        {"step": 10, "split": "train", "loss": 5.0, "perplexity": 148.4},
        {"step": 10, "split": "validation", "loss": 4.0, "perplexity": 54.6},
        {"step": 20, "split": "validation", "loss": 4.5, "perplexity": 90.0},
        {"step": 10, "split": "test", "loss": 4.1, "perplexity": 60.3}])
    summary = {"status": status, "step": 20, "point": run.point, "model": {},
               "params": {"total": 1000, "non_embedding": 600},
               "flops_per_sequence": PER_SEQUENCE, "shards": {},
               "best": {"step": 10, "validation_perplexity": 54.6, "test_loss": 4.1,
                        "test_perplexity": 60.3}}
    (pre / "summary.json").write_text(json.dumps(summary))


def test_results_rows_count_flops_and_sequences_at_each_rows_step(tmp_path):
    """Batch 4: step s has seen 4 s sequences and 4 s x (100 | 130) FLOPs; the test row is the
    best checkpoint's (step 10), not the last step's."""
    layout, run = SweepLayout(tmp_path), _run("r")
    _pretrained_run(layout, run)
    rows = run_rows(run, layout, [])
    got = [(r["kind"], r["step"], r["sequences_seen"], r["flops_paper"], r["flops_complete"],
            r["perplexity"]) for r in rows]
    assert got == [("validation", 10, 40, 4000.0, 5200.0, 54.6),
                   ("validation", 20, 80, 8000.0, 10400.0, 90.0),
                   ("test", 10, 40, 4000.0, 5200.0, 60.3)]


def test_an_unfinished_pretraining_has_no_results_rows(tmp_path):
    """A preempted run's curve stops early: reported as if finished it would bias every fit."""
    layout, run = SweepLayout(tmp_path), _run("r")
    _pretrained_run(layout, run, status="preempted")
    assert run_rows(run, layout, []) == []


# ------------------------------------------------------------------------------ sweep status


def test_a_sweeps_failures_are_its_failed_stages_only(tmp_path):
    """Interrupted and running stages resume on the next run: they are not failures."""
    status = SweepStatus(tmp_path)
    status.record("a", "pretrain", "done")
    status.record("a", "finetune:sst2:random", "failed", error="ValueError: x")
    status.record("a", "finetune:sst2:pretrained", "interrupted", signal="SIGTERM")
    status.record("b", "pretrain", "running")
    status.record("c", "pretrain", "failed", error="boom")
    assert status.failures({"a", "b"}) == {"a": {"finetune:sst2:random": "ValueError: x"}}


# ------------------------------------------------------------------------ config overrides


@pytest.mark.parametrize("text", ["2.5", "1e3", "3.0"])
def test_an_integer_field_refuses_a_value_that_is_not_an_integer_literal(text):
    """train.num_steps=2.5 must not become 2, nor 1e3 silently 1000."""
    with pytest.raises(ConfigError, match="expected an integer"):
        parse_value(text, 10)
    assert parse_value(" 1_000 ", 10) == 1000


# ------------------------------------------------------------------------ run readers


def test_the_best_perplexity_of_the_summary_is_only_that_of_the_best_step(tmp_path):
    """A checkpoint without a logged validation record at its step has no known perplexity,
    unless it is the summary's best step; a test record at the step is not a validation one."""
    write_jsonl(tmp_path / "metrics.jsonl", [
        {"step": 5, "split": "validation", "loss": 2.3, "perplexity": 9.0},
        {"step": 5, "split": "test", "loss": 2.2, "perplexity": 8.0}])
    run = PretrainedRun(tmp_path, None, "", "", 0, tmp_path, None, which="best",
                        summary_best={"step": 20, "validation_perplexity": 7.5})
    perplexities = []
    for step in (5, 10, 20):
        run._at(step, tmp_path / f"step_{step}")
        perplexities.append(run.validation_perplexity)
    assert perplexities == [9.0, None, 7.5]


def test_a_location_in_a_bucket_is_relative_only_to_a_folder_that_holds_it():
    """``gs://b/run2/x`` is not inside ``gs://b/run`` (a name that only starts the same)."""
    assert relative_location("gs://b/run/units/a.json", "gs://b/run/") == "units/a.json"
    with pytest.raises(ValueError, match="not inside"):
        relative_location("gs://b/run2/x.json", "gs://b/run")


# ------------------------------------------------------------------------ Hugging Face import


def test_a_folder_without_tie_word_embeddings_ties_them_as_transformers_does(tmp_path):
    """RobertaConfig ties the embeddings by default, and transformers 4 leaves a default out of
    config.json and the tied decoder weight out of the weights: the import ties them too."""
    safetensors = pytest.importorskip("safetensors.numpy")  # launch/test.sh's interop install
    load_file, save_file = safetensors.load_file, safetensors.save_file
    model = build_mlm(resolve_point("E16-H16-I32-L1-A2-V50", embed_projection=False,
                                    max_len=8), seed=0)
    folder = export_roberta(model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    del config["tie_word_embeddings"]
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(folder / "model.safetensors"))
    word = tensors["roberta.embeddings.word_embeddings.weight"]
    bias = tensors["lm_head.bias"]
    del tensors["lm_head.decoder.weight"], tensors["lm_head.decoder.bias"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    params = {path: np.asarray(v.get_value()) for path, v in
              nnx.to_flat_state(nnx.state(import_roberta(folder), nnx.Param))}
    np.testing.assert_array_equal(params[("mlm_head", "decoder", "kernel")], word.T)
    np.testing.assert_array_equal(params[("mlm_head", "decoder", "bias")], bias)


# ------------------------------------------------------------------ the tokenizer's special ids

ROBERTA_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 4}  # SentencePiece, our WordPiece
BERT_IDS = {"pad": 0, "unk": 100, "bos": 101, "eos": 102, "mask": 103}  # bert-base-uncased


def test_the_masking_recipe_must_name_the_shards_special_tokens():
    """The recipe's mask 4 and never-masked (0, 1, 2, 3) fit RoBERTa's layout; a BERT vocab.txt
    would train on [unused3] as the mask and predict [CLS], [SEP] and [UNK]: refused in one line
    naming the ids to pass, and study_b_full (bert-base-uncased) passes them."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.data.shards import ShardError
    from minilm_jax.train.pretrainer import check_special_ids

    mlm = get_config().mlm
    check_special_ids(mlm, ROBERTA_IDS)
    check_special_ids(mlm, {})  # a manifest written before special ids were recorded
    with pytest.raises(ShardError, match=r"mask token at id 103, mlm\.mask_id is 4: pass "
                                         r"--config\.mlm\.mask_id=103$"):
        check_special_ids(mlm, BERT_IDS)
    mlm.mask_id = 103
    with pytest.raises(ShardError, match=r"special tokens \[100, 101, 102\] .* pass "
                                         r"--config\.mlm\.never_mask_ids=0,1,2,3,100,101,102$"):
        check_special_ids(mlm, BERT_IDS)
    mlm.never_mask_ids = (0, 100, 101, 102)
    check_special_ids(mlm, BERT_IDS)
    sweep = sweep_recipes.study_b_full()
    sweep.data_root = "/data"
    for run in expand(sweep):
        check_special_ids(run.config.mlm, BERT_IDS)
