"""Audit of the fine-tuning engine (minilm_jax/finetune/: finetuner, model_selection,
programs, run, run_folder, step, task_batches, __main__) by mutation testing, 2026-11-29: 41 bugs
planted, 26 survived the owning tests (1 of them equivalent). Each test here pins what a survivor
changed, against numbers worked out by hand or with numpy/scipy: the steps the learning-rate
schedule spans and each fold run's data order; the train log's per-run loss, learning rate,
gradient norm and speed; a first evaluation's selection, a population's frozen run and its
status, the history's sample std; the history kept on resume; a population run's own members in
its summary and predictions; final vs selected predictions and parameters; the summary's steps;
a random-init run's identity and a population's tokenizers; fallback and MNLI scores, regression
members, ``<unk>`` counts; a training step's mean loss, logged learning rate and per-seed heads;
a full vocabulary; when folds are expanded and the command's line. Unit tests (one tiny training
step is compiled)."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import stats

from conftest import RecordingWriter
from test_batch_boundaries import Checked, planned, table  # noqa: F401 (a fixture)

from minilm_jax.finetune import finetuner as finetuner_module
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.finetune.model_selection import (member_metrics, split_metrics, unk_counts,
                                                 unk_warnings)
from minilm_jax.finetune.run import fold_runs
from minilm_jax.finetune.run_folder import RunFolder
from minilm_jax.storage import run_path
from minilm_jax.tasks.task_data import load_task_data
from minilm_jax.train.batches import BatchIndexer


# ----------------------------------------------------------------------------- helpers
def folder(tmp_path: Path, name: str, first: int, size: int,
           history: list[list[float]] = ()) -> RunFolder:
    """A run folder of members ``first .. first + size`` with a history of member scores (one
    evaluation per list, 10 steps an epoch)."""
    workdir = tmp_path / (name or "run")
    workdir.mkdir(parents=True, exist_ok=True)
    entries = [{"step": 10 * (e + 1), "epoch": float(e + 1), "members": [{"score": s} for s in h]}
               for e, h in enumerate(history)]
    return RunFolder(name=name, config=None, workdir=run_path(str(workdir)), pretrained=None,
                     first=first, size=size, seeds=list(range(size)), history=entries)


def bare_finetuner(folders: list[RunFolder], patience: int = 0) -> Finetuner:
    """A Finetuner holding only what the evaluation and log code reads."""
    ft = Finetuner.__new__(Finetuner)
    ft.config = ml_collections.ConfigDict({"train": {"early_stopping_patience": patience,
                                                     "batch_size": 4}})
    ft.folders, ft.folds, ft.is_population = folders, False, len(folders) > 1
    ft.seeds = list(range(folders[0].size))
    ft.steps_per_epoch, ft.task = 10, types.SimpleNamespace(spec=types.SimpleNamespace(name="t"))
    ft.writers = {f.name: RecordingWriter() for f in folders}
    ft.writer = RecordingWriter()
    return ft


# ----------------------------------------------------------------------------- the plan
def test_the_schedule_spans_every_epochs_steps_and_each_fold_run_has_its_seeds_order(
        table, tmp_path, monkeypatch):  # noqa: F811
    """The program's optimizer and schedule are built for epochs x ceil(rows / batch) steps (not
    one epoch's); each cross-validation fold run's data order is its own seed's."""
    rows = len(load_task_data(table).train)
    table.train.batch_size, table.train.epochs = 6, 3

    def stop(*args: Any, **kwargs: Any) -> None:
        raise Checked(args)

    monkeypatch.setattr(finetuner_module, "finetune_program", stop)
    with pytest.raises(Checked) as built:
        Finetuner(table, tmp_path / "ft", "random")
    config, model_cfg, labels, regression, seeds, mesh, total = built.value.args[0][:7]
    assert total == 3 * math.ceil(rows / 6) and rows % 6 != 0
    assert (labels, regression, list(seeds)) == (4, False, [0])

    table.data.cv_folds, table.train.seeds, table.train.batch_size = 3, (0, 1), 8
    runs = fold_runs(table, tmp_path / "cv")
    assert [(n, tuple(c.train.seeds), c.data.cv_seed, c.data.cv_fold) for n, c, _ in runs] == [
        (f"s{s}-fold{k}", (s,), s, k) for s in (0, 1) for k in range(3)]
    tuner = planned(monkeypatch, table, tmp_path / "cv", runs)
    assert tuner.member_seeds == [0, 0, 0, 1, 1, 1]
    for task, (_, config, _) in zip(tuner.tasks, runs):
        [indexer] = task.indexers
        n = len(load_task_data(config).train)
        expected = BatchIndexer(int(config.train.seeds[0]), n, 8)
        assert indexer.seed == config.train.seeds[0]
        assert np.array_equal(indexer.indices(1), expected.indices(1))


# ----------------------------------------------------------------------------- the train log
def test_each_runs_log_line_takes_its_members_last_step_and_the_windows_examples(tmp_path):
    """A population's log line per run: the mean loss and gradient norm of its own members at the
    window's last step, that step's learning rate, and examples/s = steps x batch x seeds over
    the window's seconds (the population's line: every run's examples)."""
    runs = [folder(tmp_path, "a", 0, 2), folder(tmp_path, "b", 2, 2)]
    ft = bare_finetuner(runs)
    ft._window_examples = 0
    loss = np.arange(12, dtype=float).reshape(3, 4)  # [K, S]
    norm = 10.0 + loss ** 2
    host = {"loss": loss, "grad_norm": norm, "lr": np.asarray([0.1, 0.2, 0.3])}
    ft.record_metrics(0, 3, host)
    window = types.SimpleNamespace(compiled=True, elapsed=lambda: 2.0)
    shown = ft.log_line(30, host, window)
    a, b = ft.writers["a"].rows[0][2], ft.writers["b"].rows[0][2]
    assert a["loss"] == pytest.approx((8 + 9) / 2) and b["loss"] == pytest.approx((10 + 11) / 2)
    assert a["loss_per_member"] == [8.0, 9.0] and a["lr"] == pytest.approx(0.3)
    assert a["grad_norm"] == pytest.approx(10 + (64 + 81) / 2)
    assert b["grad_norm"] == pytest.approx(10 + (100 + 121) / 2)
    assert a["epoch"] == 3.0 and a["examples_per_sec"] == pytest.approx(3 * 4 * 2 / 2.0)
    assert ft.writer.rows == [(30, "train", {"examples_per_sec": 24.0, "runs": 2})]
    assert shown == {"loss": f"{(8.5 + 10.5) / 2:.3f}", "ex/s": "24"}


# ----------------------------------------------------------------------------- evaluation
def test_a_first_evaluation_selects_every_member_and_a_stopped_run_is_frozen(tmp_path):
    """Before any evaluation every score beats the best so far (-inf: a score of 0 or below
    too); a run that early stopping ends is masked out of ``active`` (the other goes on) and
    ends ``early_stopped``; the history's score_std is the sample std."""
    chosen: list[list[bool]] = []
    runs = [folder(tmp_path, "a", 0, 2, [[60.0, 61.0]]), folder(tmp_path, "b", 2, 2, [[50.0, 5.0]])]
    fresh = [folder(tmp_path, "c", 0, 2)]
    assert np.array_equal(fresh[0].best_scores(), [-np.inf, -np.inf])
    for group, scores in ((fresh, [0.0, -5.0]), (runs, [59.0, 40.0, 55.0, 1.0])):
        ft = bare_finetuner(group, patience=1)
        ft.state = {}
        ft.program = types.SimpleNamespace(
            select=lambda state, improved: (chosen.append(improved.tolist()), state)[1],
            state_sharding={"active": None})
        ft._member_metrics = lambda splits, s=scores: (None, [{"score": v} for v in s])
        ft._evaluate(20)
    assert chosen == [[True, True], [False, False, True, False]]
    assert np.asarray(ft.state["active"]).tolist() == [False, False, True, True]
    assert [ft._run_status(f, "completed") for f in runs] == ["early_stopped", "completed"]
    entry = runs[1].history[-1]
    assert entry["score_std"] == pytest.approx(float(np.std([55.0, 1.0], ddof=1)))
    assert ft.writers["b"].rows[0][2]["score_std"] == pytest.approx(entry["score_std"])
    assert json.loads((runs[0].workdir / "history.json").read_text())[-1]["members"] == [
        {"score": 59.0}, {"score": 40.0}]


def test_resume_keeps_the_evaluation_at_its_step_and_stops_where_it_stopped(tmp_path):
    """Resuming at step 20 keeps the history of steps 10 and 20 (not 30); a run that stopped at
    an earlier evaluation than the resumed step (a population's frozen run) is still stopped,
    and one that improved there is not."""
    run = folder(tmp_path, "", 0, 1, [[60.0], [50.0], [40.0]])
    (run.workdir / "history.json").write_text(json.dumps(run.history))
    run.load_history(20)
    assert [h["step"] for h in run.history] == [10, 20]
    assert run.stopped(1) and not run.stopped(2)
    improving = folder(tmp_path, "b", 1, 1, [[50.0], [60.0]])
    assert not improving.stopped(1)
    ft = bare_finetuner([run, improving], patience=1)
    assert ft._live() == [improving]


def test_a_population_runs_summary_and_predictions_hold_its_own_members(tmp_path):
    """A run of members 2..3 of a 4-member program reports and saves members 2 and 3 (final at
    the last epoch, selected at each one's best), with its labels and ids."""
    run = folder(tmp_path, "b", 2, 2, [[50.0, 70.0], [60.0, 65.0], [55.0, 66.0]])
    reported = {w: [{"score": float(10 * i + (w == "final"))} for i in range(4)]
                for w in ("final", "selected")}
    out = run.scores(reported)
    assert [m["score"] for m in out["final"]["members"]] == [21.0, 31.0]
    assert [m["score"] for m in out["selected"]["members"]] == [20.0, 30.0]
    assert out["final"]["epochs"] == [3.0, 3.0] and out["selected"]["epochs"] == [2.0, 1.0]
    assert out["selected"]["mean"]["score"] == 25.0
    logits = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    labels, ids = np.asarray([1, 0, 1]), ["t/test/0", "t/test/2", "t/test/1"]
    run.save_predictions({"test": logits}, {"test": labels}, "selected", {"test": ids})
    saved = run.workdir / "predictions"
    assert np.array_equal(np.load(saved / "test.selected.npy"), logits[2:4])
    assert np.array_equal(np.load(saved / "test.labels.npy"), labels)
    assert json.loads((saved / "test.ids.json").read_text()) == ids


def test_final_and_selected_parameters_are_saved_as_such(tmp_path, monkeypatch):
    """parameters.npz: the state's current parameters as final, its selection as selected, each
    run with its slice of members."""
    saved: list[tuple] = []
    monkeypatch.setattr(finetuner_module, "save_parameters", lambda *a: saved.append(a))
    ft = bare_finetuner([folder(tmp_path, "a", 0, 2), folder(tmp_path, "b", 2, 1)])
    ft.state = {"params": "P", "rest": "R", "opt_state": "O", "selected": {"params": "SP"}}
    ft._save_parameters()
    [(runs, final, selected)] = saved
    assert [m for _, m in runs] == [slice(0, 2), slice(2, 3)]
    assert final == {"params": "P", "rest": "R"} and selected == {"params": "SP"}


def test_final_predictions_use_the_current_parameters_selected_ones_the_selection(tmp_path):
    """predict_split: ``final`` (also every validation) scores the state's parameters,
    ``selected`` the members' selection; every row once (5 rows in batches of 2)."""
    from minilm_jax.train.mesh import batch_sharding, make_mesh

    ft = bare_finetuner([folder(tmp_path, "", 0, 2)])
    ft.config.eval = {"batch_size": 2}
    row = batch_sharding(make_mesh(1), batch_axis=0, ndim=2)
    ft.program = types.SimpleNamespace(
        eval_input_sharding=row,
        predict=lambda p, r, tokens, seg, typ: p[:, None, None] + tokens[None, :, :1] * 0.0)
    arrays = {"tokens": np.ones((5, 4), np.int32), "segments": np.ones((5, 4), np.int32),
              "token_types": np.zeros((5, 4), np.int32), "labels": np.zeros(5, np.int32)}
    ft.task = types.SimpleNamespace(eval_arrays={"test": arrays}, buckets=0)
    ft.state = {"params": jnp.asarray([1.0, 2.0]), "rest": None,
                "selected": {"params": jnp.asarray([7.0, 8.0]), "rest": None}}
    final, selected = ft.predict_split("test"), ft.predict_split("test", "selected")
    assert final.shape == selected.shape == (2, 5, 1)
    assert final[:, :, 0].tolist() == [[1.0] * 5, [2.0] * 5]
    assert selected[:, :, 0].tolist() == [[7.0] * 5, [8.0] * 5]


def test_the_summary_records_the_runs_steps_and_status(tmp_path):
    """Each run's summary holds the program's total steps (epochs x steps an epoch) and the run's
    own status."""
    runs = [folder(tmp_path, "a", 0, 1)]
    ft = bare_finetuner(runs)
    ft.tasks, ft.init_mode, ft.partial, ft.total_steps = [None], "random", False, 30
    ft.model_cfg = types.SimpleNamespace(point="p", to_dict=lambda: {})
    ft.program = types.SimpleNamespace(param_counts=types.SimpleNamespace(total=5))
    ft.tokenizer = types.SimpleNamespace(path="tok", sha256="x")
    ft.config.data = {"vocab_filter": ""}
    written: list[dict[str, Any]] = []
    runs[0].write_summary = lambda task, reported, common: written.append(common) or common
    ft._summary(runs[0], "completed", None, 1.0)
    assert written[0]["steps"] == 3 * 10 and written[0]["steps_per_epoch"] == 10
    assert (written[0]["status"], written[0]["params_total"]) == ("completed", 5)


def test_a_random_init_run_records_no_checkpoint_and_a_population_needs_one_tokenizer(
        tmp_path):
    """A random-init run's identity holds no ``inputs.init`` (its checkpoint's bytes), a
    pre-trained one's does; runs whose checkpoints used different tokenizers are refused."""
    from minilm_jax.configs.finetune import get_config
    from minilm_jax.errors import UserError
    from minilm_jax.finetune.run_folder import check_population
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.settings.model_fields import model_from_config

    config = get_config("sst2")
    model = model_from_config(pretrain_config("E16-H16-I32-L1-A2-V500"))
    digest = {"sha256": "abc"}

    def pre(sha: str) -> Any:
        return types.SimpleNamespace(model=types.SimpleNamespace(to_dict=lambda: {"w": 1}),
                                     tokenizer_sha256=sha, workdir=tmp_path, digest=lambda: digest)

    run = RunFolder("a", config, run_path(str(tmp_path / "a")), pre("t"))
    assert "inputs.init" not in run.identity("random", "t", model, {"rows": 1})
    assert run.identity("pretrained", "t", model, {"rows": 1})["inputs.init"] == digest
    other = RunFolder("b", config, run_path(str(tmp_path / "b")), pre("u"))
    check_population([run, RunFolder("c", config, run.workdir, pre("t"))], "pretrained", False)
    with pytest.raises(UserError, match="different tokenizers"):
        check_population([run, other], "pretrained", False)


# ----------------------------------------------------------------------------- scoring
def test_split_metrics_fallback_mnli_splits_and_regression_members():
    """A score without a GLUE definition is the mean of the first split's metrics; MNLI with a
    split that is not matched/mismatched scores accuracy per split; regression members are
    scored on their one output column (scipy's pearson/spearman)."""
    y = np.asarray([0, 1, 2, 1])
    got = split_metrics("mnli", {"dev_matched": np.asarray([0, 1, 0, 0]),
                                 "validation": np.asarray([0, 1, 2, 1])},
                        {"dev_matched": y, "validation": y})
    assert got == {"accuracy": 50.0, "validation/accuracy": 100.0, "score": 50.0}
    labels = np.asarray([0.5, 1.0, 3.0, 4.5])
    out = np.asarray([[0.4, 1.5, 2.0, 4.0], [3.0, 1.0, 0.0, 2.0]])[:, :, None]
    members = member_metrics("stsb", {"dev": out}, {"dev": {"labels": labels}}, True)
    for s in range(2):
        pearson = 100 * stats.pearsonr(out[s, :, 0], labels)[0]
        spearman = 100 * stats.spearmanr(out[s, :, 0], labels)[0]
        assert members[s]["pearson"] == pytest.approx(pearson)
        assert members[s]["score"] == pytest.approx((pearson + spearman) / 2)


def test_unk_counts_leave_out_every_special_and_warn_only_above_the_rate():
    """``<mask>`` is special (not counted); a rate equal to the threshold is no warning."""
    tok = types.SimpleNamespace(pad_id=0, bos_id=1, eos_id=2, mask_id=3, unk_id=4)
    arrays = {"tokens": np.asarray([[1, 3, 4, 5, 2, 0], [1, 4, 3, 3, 2, 0]]),
              "segments": np.asarray([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])}
    assert unk_counts(arrays, tok) == {"tokens": 3, "unk": 2, "rate": 2 / 3}
    at = {"dev": {"tokens": 100, "unk": 1, "rate": 0.01}}
    assert unk_warnings(at, 0.01) == [] and len(unk_warnings(at, 0.0099)) == 1


# ----------------------------------------------------------------------------- the step
def test_a_training_step_logs_the_mean_loss_and_the_rate_it_used():
    """One step of two members (seeds 3 and 4): heads differ by seed; each member's loss is the
    mean softmax cross-entropy (numpy) of the logits its initial parameters give (no dropout);
    the learning rate logged is the schedule at the step's own count; regression's example loss
    is the squared error."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.finetune.step import (example_losses, make_finetune_step,
                                          make_predict_step, members_state)
    from minilm_jax.settings.model_fields import model_from_config, with_overrides
    from minilm_jax.train.mesh import make_mesh

    cfg = with_overrides(model_from_config(get_config("E16-H16-I32-L1-A2-V500")),
                         ("hidden_dropout=0.0", "attention_dropout=0.0"))
    schedule = lambda count: 0.01 * (count + 1)  # noqa: E731
    optimizer = optax.sgd(schedule)
    built = members_state(cfg, 3, optimizer, 2, make_mesh(1))
    state = built.init(None, np.asarray([3, 4], np.int32))
    heads = [np.asarray(x) for x in jax.tree.leaves(state["params"]["head"])]
    assert any(not np.allclose(h[0], h[1]) for h in heads)  # kernels (biases start at 0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 400, (1, 2, 4, 8)).astype(np.int32)
    batch = {"tokens": tokens, "segments": np.ones_like(tokens),
             "token_types": np.zeros_like(tokens),
             "labels": rng.integers(0, 3, (1, 2, 4)).astype(np.int32)}
    logits = np.stack([np.asarray(make_predict_step(built.graphdef)(
        state["params"], state["rest"], *[batch[k][0, s] for k in ("tokens", "segments",
                                                                    "token_types")]))[s]
        for s in range(2)])  # [S, B, C]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, batch["labels"][0][..., None], -1)[..., 0].mean(-1)
    step = jax.jit(make_finetune_step(built.graphdef, optimizer, schedule, False))
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
    np.testing.assert_allclose(np.asarray(metrics["loss"])[0], want, rtol=1e-5)
    assert float(np.asarray(metrics["lr"])[0]) == pytest.approx(0.01)
    losses = example_losses(jnp.asarray([[1.0], [-2.0]]), jnp.asarray([0.5, 1.0]), True)
    np.testing.assert_allclose(np.asarray(losses), [0.25, 9.0])


# ----------------------------------------------------------------------------- task data
def test_steps_per_epoch_count_a_partial_batch_and_a_full_vocabulary_fits(tmp_path, monkeypatch):
    """ceil(rows / batch) steps an epoch; a tokenizer exactly as large as the model's vocabulary
    fits (random init)."""
    from minilm_jax.finetune import task_batches

    task = types.SimpleNamespace(data=types.SimpleNamespace(train=[0] * 10))
    assert task_batches.TaskBatches.steps_per_epoch(task, 4) == 3
    assert task_batches.TaskBatches.steps_per_epoch(task, 10) == 1
    path = tmp_path / "tok.model"
    path.write_text("")
    tok = types.SimpleNamespace(vocab_size=100, pad_id=1)
    monkeypatch.setattr(task_batches, "load_tokenizer", lambda p: tok)
    config = ml_collections.ConfigDict({"data": {"tokenizer": str(path), "max_len": 16}})
    model = types.SimpleNamespace(vocab_size=100, pad_id=1, max_len=16)
    assert task_batches.task_tokenizer(config, None, model) is tok


def test_pooled_rows_point_at_each_ids_first_copy():
    """Splits of several runs that share rows (by id) are pooled once; each run's rows point at
    the pooled copy of its ids."""
    from minilm_jax.finetune.task_batches import pooled_split

    def task(uids: list[str]) -> Any:
        labels = np.asarray([int(u[1:]) for u in uids])
        return types.SimpleNamespace(uids=lambda split: uids,
                                     eval_arrays={"test": {"labels": labels}})

    pool, where = pooled_split([task(["r1", "r2", "r3"]), task(["r3", "r4", "r1"])], "test")
    assert pool["labels"].tolist() == [1, 2, 3, 4]
    assert [w.tolist() for w in where] == [[0, 1, 2], [2, 3, 0]]


# ----------------------------------------------------------------------------- the command
def test_the_command_runs_folds_only_when_no_fold_is_named_and_prints_mean_and_std(
        table, tmp_path, monkeypatch):  # noqa: F811
    """``data.cv_fold=-1`` expands a labelled file into seeds x folds runs; a named fold (0
    included) is one run; the command's line is ``mean ± sample std (n)``."""
    from minilm_jax.finetune import run as run_module

    made: list[int] = []

    class Fake:
        def __init__(self, config: Any, workdir: Any, init: str, runs: Any = ()) -> None:
            made.append(len(runs))

        def run(self) -> dict[str, Any]:
            return {"status": "completed",
                    "final": {"mean": {"score": 70.0}, "std": {"score": 2.5}, "n": 3}}

    monkeypatch.setattr(run_module, "Finetuner", Fake)
    table.data.cv_folds, table.train.seeds = 3, (0, 1)
    for fold in (-1, 0):
        table.data.cv_fold = fold
        summaries = run_module.run_finetune(table, str(tmp_path / "cv"))
    assert made == [6, 0]
    assert run_module.summary_line("random", summaries["random"], "s.json") == (
        "random init: completed; final score 70.0 ± 2.5 (n = 3) (summary: s.json)")
