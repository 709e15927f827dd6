"""Fine-tuning a population on real task data: several pre-trained checkpoints x seeds in one
program equal the separate fine-tuning runs (predictions, scores, histories, early stopping), each
run is written as a separate run writes it, and a sweep packs the fine-tuning jobs of runs it
pre-trained as one population."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.errors import UserError
from minilm_jax.finetune import finetuner as finetuner_module
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.runs.finetuned import load_parameters
from minilm_jax.train.records import is_done

from conftest import (adam_drift_bound, exact_xla_flags, near_tie_share, run_in_command,
                      shared_path, trajectory_tolerance)
from test_finetune import SEQ, STEP_TERMS, ag_config, trained_logits_tolerance

CHECKPOINTS = ("step:15", "latest")  # two encoders of one shape: the run's two kept checkpoints


def configs(pre, **train):
    out = []
    for which in CHECKPOINTS:
        c = ag_config(pre, **train)
        c.init.which = which
        out.append(c)
    return out


def train_both(pre, root: Path, **train) -> tuple[dict, list[Path], list[Path]]:
    """The population (2 checkpoints x 2 seeds) and the two separate runs it should equal."""
    runs = configs(pre, **train)
    together = [root / "pop" / f"r{i}" for i in range(len(runs))]
    outcome = Finetuner(runs[0], root / "pop" / "population", "pretrained",
                        [(f"r{i}", c, d) for i, (c, d) in enumerate(zip(runs, together))]).run()
    alone = [root / "solo" / f"r{i}" for i in range(len(runs))]
    for c, d in zip(runs, alone):
        Finetuner(c, d, "pretrained").run()
    return outcome, together, alone


def summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


def assert_trained_parameters_agree(got: dict, want: dict, workdir: Path) -> None:
    """Parameters of two float32 fine-tunings that differ in their sums' order: every coordinate
    within Adam's bound (the key bias's gradient is rounding noise), the whole model's difference
    (all but the key bias) within the steps' trajectory bound (tests/conftest.py)."""
    config = json.loads((workdir / "config.json").read_text())
    steps = json.loads((workdir / "history.json").read_text())[-1]["step"]
    bound = adam_drift_bound(steps * config["optim.peak_lr"], config["optim.b1"],
                             config["optim.b2"])
    assert max(float(np.max(np.abs(got[k] - want[k]))) for k in want) <= bound
    real = [k for k in want if "/attention/key/bias" not in k]  # the key bias: no gradient
    diff = np.sqrt(sum(np.sum((got[k] - want[k]) ** 2.0) for k in real))
    norm = np.sqrt(sum(np.sum(want[k] ** 2.0) for k in real))
    assert diff <= trajectory_tolerance(norm, STEP_TERMS, steps)


def test_checkpoints_times_seeds_equal_separate_runs(pretrained, tmp_path):
    # on one device (compiled ~30% faster than over 8); the population sharded over the default
    # 8-device mesh: test_early_stopping_freezes_one_run_while_the_others_go_on
    outcome, together, alone = train_both(pretrained, tmp_path, mesh__data=1)
    assert [m["name"] for m in outcome["members"]] == ["r0", "r1"]
    assert all(m["status"] == "completed" for m in outcome["members"])
    for mine, solo in zip(together, alone):
        assert is_done(mine)
        np.testing.assert_array_equal(np.load(mine / "predictions" / "test.labels.npy"),
                                      np.load(solo / "predictions" / "test.labels.npy"))
        s, t = summary(mine), summary(solo)
        assert s["seeds"] == t["seeds"] == [0, 1]
        assert s["pretrained"]["step"] == t["pretrained"]["step"]
        for which in ("final", "selected"):
            a = np.load(mine / "predictions" / f"test.{which}.npy")
            b = np.load(solo / "predictions" / f"test.{which}.npy")
            assert a.shape == b.shape
            tol = trained_logits_tolerance(b, solo)
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)
            # accuracy counts argmaxes: only examples within the logits' tolerance of a tie flip
            np.testing.assert_allclose([m["score"] for m in s[which]["members"]],
                                       [m["score"] for m in t[which]["members"]], rtol=0,
                                       atol=float(np.max(near_tie_share(b, tol))) + 1e-9)
        # validation accuracy: its logits are not saved, so no near tie can be allowed for: the
        # same counts (a flip would need a validation example within the logits' tolerance of a tie)
        np.testing.assert_allclose([m["score"] for m in s["validation"]["members"]],
                                   [m["score"] for m in t["validation"]["members"]], atol=1e-6)
        # the same files a separate run writes, read the same way
        assert {p.name for p in mine.iterdir()} >= {"config.json", "metrics.jsonl",
                                                      "history.json", "predictions",
                                                      "summary.json"}
    # the checkpoints differ, so the runs do: the population did not train one encoder twice
    assert not np.allclose(np.load(together[0] / "predictions" / "test.final.npy"),
                           np.load(together[1] / "predictions" / "test.final.npy"))
    # finished: the population's stacked checkpoints are dropped; each run kept its own members'
    # parameters, as its separate run did
    assert not (tmp_path / "pop" / "population" / "checkpoints").exists()
    for mine, solo in zip(together, alone):
        a, b = load_parameters(mine, "selected"), load_parameters(solo, "selected")
        assert a["params"].keys() == b["params"].keys()
        for name, value in a["params"].items():
            assert value.shape[0] == 2  # its two seeds, not the population's four members
        assert_trained_parameters_agree(a["params"], b["params"], solo)


def stsb_configs(pre) -> list:
    """STS-B (a Pearson score: no plateau at chance, where accuracy's ties stop every run at its
    second evaluation) for 10 epochs at patience 1: the two runs stop at different evaluations
    (measured: the step-15 run at its 4th, 19.77 against its best 19.87; the latest at its 5th,
    21.69 against 22.68), both before the end."""
    out = []
    for which in CHECKPOINTS:
        c = finetune_config("stsb")
        c.init.checkpoint, c.init.which = str(pre["pre"]), which
        c.data.dir, c.data.max_len = str(shared_path("glue")), SEQ
        c.data.max_train_examples, c.data.max_eval_examples = 400, 100
        c.optim.peak_lr, c.optim.weight_decay = 3e-3, 0.0
        c.train.epochs, c.train.early_stopping_patience, c.train.seeds = 10, 1, (0, 1)
        c.train.progress, c.eval.batch_size = False, 64
        out.append(c)
    return out


def early_stopping_story(root: Path, pre_root: Path) -> None:
    """The early-stopping population killed after its last checkpoint, before any summary
    (``_score_reported`` raises), started again (each ``run_loop`` call's start and
    ``nothing_left`` recorded in ``root/facts.json``), and the two runs alone."""
    runs = stsb_configs({"pre": pre_root / "pre"})
    together = [root / "pop" / f"r{i}" for i in range(len(runs))]

    def population() -> Finetuner:
        return Finetuner(runs[0], root / "pop" / "population", "pretrained",
                         [(f"r{i}", c, d) for i, (c, d) in enumerate(zip(runs, together))])

    def killed(self) -> None:
        raise KeyboardInterrupt  # after the loop's last checkpoint, before the summaries

    loops: list[tuple[int, bool]] = []
    real_loop = finetuner_module.run_loop

    def recorded(spec, state, start, *args, **kwargs):
        loops.append((start, kwargs["nothing_left"]))
        return real_loop(spec, state, start, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Finetuner, "_score_reported", killed)
        with pytest.raises(KeyboardInterrupt):
            population().run()
    summaries_after_kill = [(d / "summary.json").exists() for d in together]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetuner_module, "run_loop", recorded)
        population().run()
    for i, c in enumerate(runs):
        Finetuner(c, root / "solo" / f"r{i}", "pretrained").run()
    (root / "facts.json").write_text(json.dumps({"summaries_after_kill": summaries_after_kill,
                                                 "loops": loops}))


def test_early_stopping_freezes_one_run_while_the_others_go_on(pretrained, tmp_path):
    """One run stops evaluations before the other: its history, stopping step and predictions
    equal its separate run's while the other trains on (its members frozen, not trained). The
    population killed after its last checkpoint, before any summary, trains nothing when started
    again (not the frozen steps to a next evaluation) and writes what it would have written.
    Sharded over 8 devices; execution-bound (~170 steps at 4 and 2 members), so the runs train in
    a command with the exact flags' optimized code (conftest.exact_xla_flags)."""
    run_in_command(early_stopping_story, tmp_path, pretrained["root"],
                   xla_flags=exact_xla_flags(8))
    facts = json.loads((tmp_path / "facts.json").read_text())
    together = [tmp_path / "pop" / f"r{i}" for i in range(len(CHECKPOINTS))]
    alone = [tmp_path / "solo" / f"r{i}" for i in range(len(CHECKPOINTS))]
    assert facts["summaries_after_kill"] == [False] * len(CHECKPOINTS)
    stops = [json.loads((d / "history.json").read_text())[-1]["step"] for d in alone]
    per_epoch = json.loads((alone[0] / "history.json").read_text())[0]["step"]
    assert len(set(stops)) == 2 and max(stops) < 10 * per_epoch  # apart, both before the end
    # restarted at the last stop: nothing left to train
    assert tuple(facts["loops"][0]) == (max(stops), True)
    for mine, solo in zip(together, alone):
        h, g = (json.loads((d / "history.json").read_text()) for d in (mine, solo))
        assert [e["step"] for e in h] == [e["step"] for e in g]
        assert summary(mine)["status"] == summary(solo)["status"] == "early_stopped"
        want = np.load(solo / "predictions" / "dev.final.npy")
        got = np.load(mine / "predictions" / "dev.final.npy")
        tol = trained_logits_tolerance(want, solo)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        # Pearson moves by at most 2 tol / sd(predictions) under a perturbation within tol: the
        # validation scores (x 100) within that, at the spread of the saved predictions
        bound = 100 * 2 * tol / float(np.min(np.std(want.reshape(want.shape[0], -1), axis=1)))
        np.testing.assert_allclose([[m["score"] for m in e["members"]] for e in h],
                                   [[m["score"] for m in e["members"]] for e in g],
                                   rtol=0, atol=bound)


def test_a_population_refuses_runs_that_cannot_share_a_program(pretrained, tmp_path):
    a, b = configs(pretrained)
    b.train.epochs = 3
    with pytest.raises(UserError, match="differ in train.epochs"):
        Finetuner(a, tmp_path / "p", "pretrained", [("a", a, tmp_path / "a"),
                                                    ("b", b, tmp_path / "b")])
    assert not (tmp_path / "p").exists()  # refused before anything was written
    with pytest.raises(UserError, match="pre-trained checkpoint"):
        Finetuner(a, tmp_path / "p", "random", [("a", a, tmp_path / "a"),
                                                ("c", configs(pretrained)[1], tmp_path / "c")])


def test_a_sweep_packs_the_finetuning_jobs_of_its_population(word_shards, tmp_path):
    """Runs pre-trained as one population (three pre-training seeds) are fine-tuned as one: the
    first run's job takes every packed run whose pre-training finished and whose job did not; the
    shared random-init twin is never packed; ``pack=off`` packs nothing."""
    from conftest import REPO
    from minilm_jax.sweep.layout import finetune_jobs
    from minilm_jax.sweep.worker_loop import SweepRunner

    sys.path.insert(0, str(REPO / "configs"))
    import sweep as sweep_configs

    s = sweep_configs.demo()
    s.shards, s.num_steps, s.eval_every, s.vocab_size = str(word_shards), 8, 4, 500
    s.bases, s.ofat, s.groups = ("b=E16-H16-I32-L1-A2",), (), ()
    s.finetune_tasks, s.finetune_init, s.finetune_checkpoints = ("sst2",), "both", (0.5, 1.0)
    s.pretrain_seeds = (0, 1, 2)
    runner = SweepRunner(s, tmp_path)
    first, second, third = runner.runs
    for run in (first, second):  # the third run's pre-training did not finish
        pre = tmp_path / "runs" / run.name / "pretrain"
        pre.mkdir(parents=True)
        (pre / "summary.json").write_text(json.dumps({"status": "completed"}))
    jobs = finetune_jobs(s, first, tmp_path)
    by_label = {j.label: j for j in jobs}
    packed = runner._finetune_pack(first, by_label["pretrained@0.5"])
    assert [name for name, _ in packed] == [first.name, second.name]
    assert [j.workdir for _, j in packed] == [
        tmp_path / "runs" / r.name / "finetune" / "sst2" / "pretrained@0.5" for r in (first, second)]
    assert len(runner._finetune_pack(first, by_label["random"])) == 1
    done = packed[1][1].workdir  # a job that finished earlier is not trained again
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert len(runner._finetune_pack(first, by_label["pretrained@0.5"])) == 1
    assert len(runner._finetune_pack(first, by_label["pretrained@1"])) == 2
    s.pack = "off"
    assert len(SweepRunner(s, tmp_path)._finetune_pack(first, by_label["pretrained@1"])) == 1
