"""Sweeps: expansion of the shipped configs, dry run, a changed sweep refused, and the main job
(README command 1) end to end at its smallest size (skip/resume, failure isolation, results rows:
tests/test_sweep_workers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from conftest import REPO, xla_flags

from minilm_jax.errors import UserError
from minilm_jax.sweep import expand
from minilm_jax.sweep.worker_loop import SweepRunner
from minilm_jax.sweep.status import SweepStatus
from minilm_jax.sweep.workers import run_worker

sys.path.insert(0, str(REPO / "configs"))
import sweep as sweep_configs  # noqa: E402


def test_paper_sweep_expands_to_the_study_design():
    runs = expand(sweep_configs.paper())
    assert len(runs) > 70
    assert len({r.name for r in runs}) == len(runs)
    groups = {m.group for r in runs for m in r.memberships}
    assert {"base", "grid", "ofat:model.hidden_dim", "ofat:model.num_layers",
            "iso_flop:g1", "iso_flop:g2", "iso_param:g3"} <= groups
    small = next(r for r in runs if r.name == "small")
    # The small base is also a member of iso-FLOP group 1: trained once, reported under both.
    assert {m.group for m in small.memberships} == {"base", "iso_flop:g1"}
    from minilm_jax.model import accounting
    from minilm_jax.settings.model_fields import model_from_config
    sizes = [accounting.formula_params(model_from_config(r.config)).total for r in runs]
    assert min(sizes) < 1.3e6 and 0.9e8 < max(sizes) < 1.2e8
    ofat = [r for r in runs if any(m.group == "ofat:model.hidden_dim" and m.base == "large"
                                   for m in r.memberships)]
    assert sorted(r.config.model.hidden_dim for r in ofat) == [64, 128, 512]
    assert all(r.config.model.num_layers == 8 for r in ofat)


def test_demo_sweep_has_four_tiny_points_and_two_tasks():
    runs = expand(sweep_configs.demo())
    assert len(runs) == 4
    assert len(sweep_configs.demo().finetune_tasks) >= 2


def test_childes_sweep_is_study_a_at_cpu_scale(tmp_path):
    """Three sizes, filtered SST-2 / CoLA / STS-B, both inits, 3 seeds, GLUE folder from one field."""
    from minilm_jax.sweep.layout import finetune_jobs
    sweep = sweep_configs.childes()
    sweep.finetune_data_dir = str(tmp_path / "glue")
    runs = expand(sweep)
    assert [r.name for r in runs] == [f"{size}__seed={seed}" for size in ("tiny", "ffn", "wide")
                                      for seed in sweep.pretrain_seeds]
    assert all(r.config.eval.per_decade == 4 for r in runs)
    jobs = finetune_jobs(sweep, runs[0], tmp_path)
    assert {j.task for j in jobs} == {"sst2", "cola", "stsb"}
    assert sorted({j.init for j in jobs}) == ["pretrained", "random"]
    assert len(jobs) == 3 * (2 + 1)  # two snapshots and one twin per task
    for job in jobs:
        assert job.config.data.dir == str(tmp_path / "glue")
        assert job.config.data.vocab_filter == "aochildes"
        assert tuple(job.config.train.seeds) == (0, 1, 2)


def test_downstream_fields_of_a_regression_task_have_no_majority_score(tmp_path):
    """STS-B: a constant prediction has no correlation, so its majority baseline is None (not a
    crash); a classification task's baseline is taken over the reported splits only."""
    from minilm_jax.sweep.results import downstream_fields
    from minilm_jax.train.records import FinetuneSummary
    members = [{"score": 30.0, "pearson": 31.0, "spearman": 29.0}] * 3
    final = {"members": members, "mean": members[0], "std": {"score": 0.0}, "n": 3}
    ft = {"task": "stsb", "init": "random", "final": final, "reported_splits": ["dev"],
          "majority": {"validation": {"pearson": None, "spearman": None, "score": None},
                       "dev": {"pearson": None, "spearman": None, "score": None}}}
    fixed = dict(point="E32-H32-I128-L1-A2", seeds=[0, 1, 2], examples={}, steps=10,
                 steps_per_epoch=1, status="completed")
    assert downstream_fields(FinetuneSummary(**ft, **fixed), tmp_path)["majority_score"] is None
    ft.update(task="sst2", majority={"validation": {"accuracy": 60.0, "score": 60.0},
                                     "dev": {"accuracy": 51.0, "score": 51.0}})
    assert downstream_fields(FinetuneSummary(**ft, **fixed), tmp_path)["majority_score"] == 51.0


@pytest.mark.parametrize("field,value,match", [
    ("ofat", ("nobase:model.hidden_dim=8",), "unknown base"),
    ("groups", ("pairs=E32-H32-I128-L1-A2",), "iso_flop:<name> or iso_param"),
    ("ofat", ("small:model.hiden_dim=8",), "unknown config field 'model.hiden_dim'"),
    ("ofat", ("small:model.num_heads=3",), "sweep run small__num_heads=3"),
    ("bases", ("small=E32-H32-I128-L1-A2", "small=E64-H64-I256-L1-A2"), r"\['small'\] are declared"),
    ("num_steps", -5, "num_steps=-5 must be positive"),
    ("batch_size", -1, "batch_size=-1 must be positive"),
])
def test_bad_sweep_entries_are_clear_errors(field, value, match):
    sweep = sweep_configs.paper()
    sweep[field] = value
    with pytest.raises(UserError, match=match):
        expand(sweep)


def test_dry_run_lists_runs_with_flops_and_time():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags()}
    proc = subprocess.run([sys.executable, "-m", "minilm_jax.sweep", "--config=configs/sweep.py:paper",
                           "--dry_run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("71 runs; estimated pre-training time")
    assert any(line.startswith("E512-H768-I3072-L12-A12") for line in lines)


def tiny_sweep(shards: Path) -> ml_collections.ConfigDict:
    sweep = sweep_configs.demo()
    sweep.shards = str(shards)
    sweep.num_steps = 8
    sweep.eval_every = 4
    sweep.vocab_size = 500
    sweep.pretrain_overrides = ("model.max_len=64", "eval.batch_size=48", "train.log_every=4",
                                "train.progress=False", "optim.warmup_steps=2")
    sweep.bases = ("b=E16-H16-I32-L1-A2",)
    # eval.batch_size=44 is not divisible by the 8 test devices: that run fails at start-up.
    sweep.ofat = ("b:model.hidden_dim=32", "b:eval.batch_size=44")
    sweep.groups = ()
    sweep.finetune_tasks = ()
    sweep.report_bootstrap = 20
    return sweep


# Failure isolation, results rows, downstream rows of both layouts and a re-run that skips the
# finished run and resumes the interrupted one: tests/test_sweep_workers.py::
# test_runner_isolates_failures_skips_finished_and_resumes, on the one-worker sweep that file runs
# anyway (this file ran the same tiny sweep in-process a second time).


def test_a_changed_sweep_is_refused_and_only_judges_its_runs(word_shards, tmp_path):
    """A re-run whose effective config differs from what a workdir was trained with is refused
    before anything runs, naming the fields; ``--only`` reports only the runs it selected."""
    sweep = tiny_sweep(word_shards)
    sweep.num_steps = 4
    # b trains on one of the 8 test devices (what is tested is the refusal, not the mesh: ~30%
    # less CPU); its twin on all 8 fails at start-up (eval batch 44 is not divisible by 8)
    sweep.pretrain_overrides = tuple(sweep.pretrain_overrides) + ("eval.batch_size=44",
                                                                  "mesh.data=1")
    sweep.ofat = ("b:mesh.data=8",)
    outcome = run_worker(sweep, tmp_path)
    assert list(outcome["failures"]) == ["b__data=8"]
    assert "divisible" in outcome["failures"]["b__data=8"]["pretrain"]
    assert run_worker(sweep, tmp_path, only="b__")["failures"] == {"b__data=8": {
        "pretrain": outcome["failures"]["b__data=8"]["pretrain"]}}
    sweep.ofat = ()
    assert run_worker(sweep, tmp_path)["failures"] == {}  # b only: its own outcome
    status_before = SweepStatus(tmp_path).read()
    for field, value, named in (("num_steps", 6, "train.num_steps: 4 -> 6"),
                                ("pretrain_overrides", sweep.pretrain_overrides + ("seed=3",),
                                 "seed: 0 -> 3")):
        changed = ml_collections.ConfigDict(sweep.to_dict())
        changed[field] = value
        with pytest.raises(UserError, match=rf"runs/b/pretrain \({named}.*use a new --root"):
            run_worker(changed, tmp_path)
    assert SweepStatus(tmp_path).read() == status_before  # nothing ran
    # a fine-tuning workdir trained with other fine-tuning overrides
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.sweep.layout import finetune_jobs
    sweep.finetune_tasks, sweep.finetune_init = ("sst2",), "pretrained"
    runner = SweepRunner(sweep, tmp_path)
    job = finetune_jobs(sweep, runner.runs[0], tmp_path)[0]
    job.workdir.mkdir(parents=True)
    (job.workdir / "config.json").write_text(json.dumps(flatten(job.config)))
    runner._refuse_changed(runner.runs)  # the same config: accepted
    sweep.finetune_overrides = tuple(sweep.finetune_overrides) + ("train.epochs=3",)
    with pytest.raises(UserError, match=r"finetune/sst2 \(train.epochs: \d+ -> 3\)"):
        run_worker(sweep, tmp_path)


def test_a_shared_random_twin_built_by_one_seeds_run_is_accepted_for_the_others(word_shards,
                                                                                 tmp_path):
    """A design's pre-training seeds share one random-init fine-tuning twin, whose config.json names
    the checkpoint of whichever run built it: a re-run of the sweep (a resumed study) accepts it
    for every seed. Another fine-tuning recipe is another twin (its own folder)."""
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.sweep.layout import finetune_jobs

    sweep = tiny_sweep(word_shards)
    sweep.ofat, sweep.pretrain_seeds = (), (1, 2)
    sweep.finetune_tasks, sweep.finetune_init, sweep.finetune_checkpoints = ("sst2",), "both", (1.0,)
    runner = SweepRunner(sweep, tmp_path)
    twins = [job for run in runner.runs for job in finetune_jobs(sweep, run, tmp_path)
             if job.init == "random"]
    assert len(runner.runs) == len(twins) == 2 and twins[0].workdir == twins[1].workdir
    assert twins[0].config.init.checkpoint != twins[1].config.init.checkpoint
    twins[1].workdir.mkdir(parents=True)  # the second seed's run fine-tuned the twin
    recorded = {**flatten(twins[1].config), "model_built": {"hidden_dim": 16, "num_layers": 1}}
    (twins[1].workdir / "config.json").write_text(json.dumps(recorded))
    runner._refuse_changed(runner.runs)  # accepted for both seeds
    # its recorded architecture edited: refused, though the finished twin is never rebuilt
    recorded["model_built"]["hidden_dim"] = 64
    (twins[1].workdir / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(UserError, match=r"/sst2 \(model_built.hidden_dim: 64 -> 16\); use"):
        runner._refuse_changed(runner.runs)
    recorded["model_built"]["hidden_dim"] = 16
    (twins[1].workdir / "config.json").write_text(json.dumps(recorded))
    sweep.finetune_overrides = tuple(sweep.finetune_overrides) + ("train.epochs=3",)
    assert {job.workdir for job in finetune_jobs(sweep, runner.runs[0], tmp_path)
            if job.init == "random"} != {twins[0].workdir}  # another recipe: another twin


def test_main_job_end_to_end_smallest_size(tmp_path):
    """README command 1 at the `smoke` size: held-out article split -> corpus -> tokenizer -> shards
    (+ baselines) -> 2 pre-trainings with snapshots at 50% and 100% -> every snapshot and one random
    twin per architecture fine-tuned on 2 tasks with 2 and 3 seeds -> report. Never reads ../shared/data.
    Pre-training runs 20 of the smoke size's 40 steps (a command-line override, as the README's
    extra arguments): the same code paths, snapshots at steps 10 and 20; the time is compiling."""
    env = {**os.environ, "MAIN_OUT": str(tmp_path / "main"), "MAIN_SWEEP": "smoke", "XLA_FLAGS": xla_flags(),
           "MINILM_SHARED_DATA": str(tmp_path / "no-shared-data")}
    proc = subprocess.run(["bash", "launch/main.sh", "--config.num_steps=20"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    study = tmp_path / "main" / "study"
    rows = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    downstream = [r for r in rows if r["kind"] == "downstream"]
    pretrained = {(r["run"], r["task"], r["checkpoint_step"]) for r in downstream
                  if r["init"] == "pretrained"}
    assert pretrained == {(run, t, s) for run in ("narrow", "tiny") for t in ("bbc_topic", "bbc_order")
                          for s in (10, 20)}
    # Seeds per task, as in the main job: bbc_order has its own (more) seeds, twins included.
    seeds = {"bbc_topic": [0, 1], "bbc_order": [0, 1, 2]}
    assert all(r["seeds"] == seeds[r["task"]] and len(r["member_scores"]) == len(seeds[r["task"]])
               for r in downstream)
    twins = {r["finetune_workdir"] for r in downstream if r["init"] == "random"}
    assert len(twins) == 4 and all("/random/" in t for t in twins)  # 2 architectures x 2 tasks
    assert {(r["name"], r["split"]) for r in rows if r["kind"] == "baseline"} >= {
        ("unigram", "validation"), ("bigram", "validation")}
    assert (tmp_path / "main" / "pretraining.txt").is_file()
    report = (study / "report" / "report.md").read_text()
    assert "Validation loss vs training compute" in report
    assert "pre-trained vs random" in report.lower() and "paired t" in report
    assert "unigram perplexity" in report
    assert "Fisher-z" in report or "undefined" in report  # constant scores at this size: undefined
    for png in ("loss_vs_flops_paper.png", "downstream.png"):
        assert (study / "report" / png).stat().st_size > 0
    # At this size the scores may be constant (all at chance): then the correlation says so.
    assert ((study / "report" / "perplexity_vs_downstream.png").is_file()
            or "undefined" in report)

def test_placeholders_name_prepared_data_and_an_empty_one_is_refused():
    from minilm_jax.errors import UserError
    from minilm_jax.sweep.spec import expand, finetune_run_config

    sweep = sweep_configs.study_b_smoke()
    with pytest.raises(UserError, match=r"uses \{data_root\} .* --config.data_root is empty"):
        expand(sweep)
    sweep.data_root, sweep.finetune_data_dir = "/prepared/", "/shared"
    runs = {run.name: run for run in expand(sweep)}
    assert runs["l1__seed=0"].config.data.shards == "/prepared/subsets/n300"
    assert runs["l1__shards=n100__seed=0"].config.data.shards == "/prepared/subsets/n100"
    config = finetune_run_config(sweep, "fewrel", runs["l1__seed=0"].config.data.shards)
    assert config.data.dir == "/shared/fewrel/val_nyt.json"


def test_random_twin_identity_is_the_recipe_not_how_it_runs():
    """One twin per architecture and fine-tuning recipe: seeds change it; the multi-host fields and
    how the members are executed (vmap / map) do not."""
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.sweep.layout import twin_key
    from minilm_jax.sweep.spec import Run

    run = Run("tiny", "E32-H32-I128-L1-A2-V2010", pretrain_config("E32-H32-I128-L1-A2-V2010"), [])
    base = finetune_config("bbc_topic")
    key = twin_key(run, base)
    for field, value in (("train.members", "vmap"), ("distributed.initialize", True),
                         ("init.checkpoint", "runs/x")):
        changed = finetune_config("bbc_topic")
        section, name = field.split(".")
        changed[section][name] = value
        assert twin_key(run, changed) == key, field
    reseeded = finetune_config("bbc_topic")
    reseeded.train.seeds = (11, 12)
    assert twin_key(run, reseeded) != key
