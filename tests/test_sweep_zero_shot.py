"""Zero-shot evaluations in a sweep: every kept snapshot, the final checkpoint and a random-init
twin of each run scored on Zorro (offline, through a mirror of the shared copy), rows in
results.jsonl, the report's section, a re-run that skips them, a changed entry that re-scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, ZORRO_DEV_PARADIGM as PARADIGM
from minilm_jax.errors import UserError
from minilm_jax.sweep.worker_loop import SweepRunner
from minilm_jax.sweep.workers import run_worker

sys.path.insert(0, str(REPO / "configs"))
import sweep as sweep_configs  # noqa: E402


def zero_shot_sweep(shards: Path, rules: str = "holistic") -> object:
    sweep = sweep_configs.demo()
    sweep.shards = str(shards)
    sweep.num_steps = 8
    sweep.eval_every = 4
    sweep.vocab_size = 610
    sweep.pretrain_overrides = ("model.max_len=64", "eval.batch_size=48", "train.log_every=4",
                                "train.progress=False", "optim.warmup_steps=2",
                                "optim.peak_lr=3e-3",
                                # one of the 8 test devices: what is tested here is the scoring of
                                # the snapshots, not the mesh (~30% less CPU than all 8)
                                "mesh.data=1")
    sweep.bases = ("b=E16-H16-I32-L1-A2",)
    sweep.ofat = ()
    # b also belongs to an iso-parameter group (of b's point alone: a second architecture would
    # only compile every program again): its rows are still written once
    sweep.groups = ("iso_param:g=E16-H16-I32-L1-A2",)
    sweep.pretrain_seeds = (0, 1)
    sweep.finetune_tasks = ()
    sweep.finetune_checkpoints = (0.5, 1.0)  # snapshots at steps 4 and 8
    sweep.evals = {"zorro": {"type": "minimal_pairs", "suite": "zorro", "paradigms": PARADIGM,
                             "rules": rules},
                   "ppl": {"type": "perplexity", "split": "test"}}
    sweep.report_bootstrap = 20
    return sweep


def rows_of(root: Path) -> list[dict]:
    return [r for r in map(json.loads, (root / "results.jsonl").read_text().splitlines())
            if r["kind"] == "minimal_pairs"]


def test_a_sweep_scores_every_snapshot_and_a_random_twin(zorro_shards, offline_zorro,
        tmp_path, capsys):
    root = tmp_path / "sweep"
    outcome = run_worker(zero_shot_sweep(zorro_shards), root)
    assert outcome["failures"] == {}
    rows = rows_of(root)
    models = [(r["run"], r["init"], r["step"]) for r in rows]
    assert sorted(models) == [
        (run, init, step) for run in ("b__seed=0", "b__seed=1")
        for init, step in (("pretrained", 4), ("pretrained", 8), ("random", 0))]
    for r in rows:
        assert (r["suite"], r["paradigm"], r["rule"], r["pairs"]) == ("zorro", PARADIGM,
                                                                       "holistic", 2000)
        assert len(r["outcomes"]) == 2000 and r["scored"] == r["outcomes"].count("1") + \
            r["outcomes"].count("0")
        assert r["scored"] > 1900  # the tokenizer saw these sentences: few <unk>
        assert (r["validation_perplexity"] is None) == (r["init"] == "random")
    flops = {(r["run"], r["step"]): r["flops_paper"] for r in rows}
    assert flops[("b__seed=0", 8)] == pytest.approx(2 * flops[("b__seed=0", 4)])
    assert flops[("b__seed=0", 0)] == 0
    # the two seeds' random twins differ (the run's seed initialises its twin)
    twins = {r["run"]: r["outcomes"] for r in rows if r["init"] == "random"}
    assert twins["b__seed=0"] != twins["b__seed=1"]
    ppl = [r for r in map(json.loads, (root / "results.jsonl").read_text().splitlines())
           if r["kind"] == "perplexity"]
    assert sorted((r["run"], r["init"], r["step"]) for r in ppl) == sorted(
        (r["run"], r["init"], r["step"]) for r in rows)  # the same models as the pairs
    by_model = {(r["run"], r["step"]): r["perplexity"] for r in ppl}
    assert by_model[("b__seed=0", 0)] > by_model[("b__seed=0", 8)]  # the twin is untrained
    report = (root / "report" / "report.md").read_text()
    assert "## Evaluations: masked-LM perplexity" in report
    assert "## Zero-shot minimal pairs" in report and "zorro: zorro, rule `holistic`" in report
    assert "Over pre-training seeds" in report and "McNemar" in report
    assert report.count("- E16-H16-I32-L1-A2: ") == 0 and "- b: " in report  # by design, n = 2
    assert "n = 2, p =" in report
    assert (root / "report" / "zero_shot_0.png").is_file()

    capsys.readouterr()
    run_worker(zero_shot_sweep(zorro_shards), root)  # finished: nothing is scored again
    assert "scoring" not in capsys.readouterr().out
    assert rows_of(root) == rows

    # a changed entry (another batch size): scored again into a new folder, to the same scores
    # (one run's three models: the others would be the same check again)
    changed_sweep = zero_shot_sweep(zorro_shards)
    changed_sweep.evals.zorro.batch_rows = 96
    run_worker(changed_sweep, root, only="b__seed=0")
    assert capsys.readouterr().out.count("zorro: scoring") == 3
    mine = [r for r in rows if r["run"] == "b__seed=0"]
    assert [r for r in rows_of(root) if r["run"] == "b__seed=0"] == mine  # whatever the batch
    assert len(list((root / "runs" / "b__seed=0" / "evals").glob("zorro-*"))) == 2


def test_a_bad_entry_or_an_unreachable_suite_fails_before_training(zorro_shards, offline_zorro,
        tmp_path):
    sweep = zero_shot_sweep(zorro_shards)
    sweep.evals.zorro.rules = "holistic,nonsense"
    with pytest.raises(UserError, match="evals.zorro.rules: nonsense"):
        SweepRunner(sweep, tmp_path / "a")
    sweep = zero_shot_sweep(zorro_shards)
    sweep.evals.zorro.suite = "blimp"  # not in the mirror, and the network is out of reach
    with pytest.raises(UserError, match="blimp"):
        run_worker(sweep, tmp_path / "b")
    assert not (tmp_path / "b" / "runs").exists()
