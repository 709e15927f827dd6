"""Stops that must not lose or misreport work: a SIGTERM'd sweep is not "done", Ctrl-C saves and
exits 130 with one line, the best checkpoint is published atomically and never replaced by an
unevaluated step, a diverged run says what it leaves behind."""

import json
import os
import signal
import subprocess
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from minilm_jax.errors import Interrupted, UserError
from minilm_jax.sweep.worker_loop import SweepRunner, stop_error
from minilm_jax.sweep import workers
from minilm_jax.sweep.workers import run_worker
from minilm_jax.sweep.status import SweepStatus
from minilm_jax.train import seal
from minilm_jax.train.checkpoint import Checkpoints, find_checkpoint
from minilm_jax.train.dispatch import DeferredMetrics, TrainingDiverged, stop_signals
from minilm_jax.train.pretrainer import Pretrainer

from test_pretrain import REPO, cli_args, cli_env, wait_for
from test_sweep import tiny_sweep

# These tests wait on commands they stop: a stop that is never obeyed fails in 5 minutes, not 10
# (pytest.ini's limit), with every thread's stack.
pytestmark = pytest.mark.timeout(300)


def signal_after(cls, dispatches: int, signum: int, monkeypatch) -> None:
    """Raise ``signum`` in this thread right after the ``dispatches``-th dispatch of any ``cls``
    run (``raise_signal`` delivers before it returns, so the step it lands on is known)."""
    original, count = cls.dispatch, [0]

    def dispatch(self, state, batch):
        out = original(self, state, batch)
        count[0] += 1
        if count[0] == dispatches:
            signal.raise_signal(signum)
        return out

    monkeypatch.setattr(cls, "dispatch", dispatch)


def test_a_sigterm_stops_the_sweep_marks_the_stage_interrupted_and_the_report_incomplete(
        word_shards, tmp_path, monkeypatch):
    sweep = tiny_sweep(word_shards)
    sweep.ofat = ("b:model.hidden_dim=32", "b:model.ffn_dim=64")
    # one device: the sweep's bookkeeping is checked here, not the mesh (8 fake CPU devices
    # compile every program and checkpoint write for 8 shards)
    sweep.pretrain_overrides = (*sweep.pretrain_overrides, "mesh.data=1")
    signal_after(Pretrainer, 8 + 5, signal.SIGTERM, monkeypatch)  # run 2 of 3, at step 5
    outcome = run_worker(sweep, tmp_path)
    assert outcome["interrupted"] == {"run": "b__hidden_dim=32", "stage": "pretrain",
                                      "signal": "SIGTERM"}
    status = SweepStatus(tmp_path).read()
    assert status["b"]["pretrain"]["state"] == "done"
    assert status["b__hidden_dim=32"]["pretrain"] == {**status["b__hidden_dim=32"]["pretrain"],
                                                       "state": "interrupted", "step": 5}
    assert "b__ffn_dim=64" not in status  # the sweep stopped: the last run never started
    assert not (tmp_path / "runs" / "b__ffn_dim=64").exists()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Incomplete sweep" in report and "b__hidden_dim=32 pretrain: interrupted" in report

    monkeypatch.undo()  # re-run: resumes the interrupted run, then runs the other one
    outcome = run_worker(sweep, tmp_path)
    assert "interrupted" not in outcome and outcome["failures"] == {}
    assert SweepStatus(tmp_path).unfinished() == []
    assert "Incomplete sweep" not in (tmp_path / "report" / "report.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["run"] for r in rows if r["kind"] == "validation"} == {
        "b", "b__hidden_dim=32", "b__ffn_dim=64"}

    # SIGTERM while the finished sweep rebuilds its results and report: they are finished, and
    # the command ends with one line and exit 143 (it was killed silently mid-report before)
    build = workers.build_report_once

    def report_under_sigterm(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return build(*args)

    monkeypatch.setattr(workers, "build_report_once", report_under_sigterm)
    outcome = run_worker(sweep, tmp_path)
    assert outcome["interrupted"] == {"run": "", "stage": "", "signal": "SIGTERM"}
    assert outcome["report"] and "Incomplete sweep" not in (
        tmp_path / "report" / "report.md").read_text()
    error = stop_error(outcome)
    assert error.exit_status == 143 and str(error) == (
        "sweep stopped by SIGTERM after its last stage: every stage had finished, and the results "
        "and report were rebuilt before it stopped")


def test_a_sigterm_before_a_stage_starts_says_so_and_leaves_it_pending(word_shards, tmp_path,
                                                                       monkeypatch):
    """A worker stopped before it starts a stage (e.g. while it waits for another worker's
    claim): the line says nothing of it ran, and its status is not made "interrupted"."""
    sweep = tiny_sweep(word_shards)
    stages = SweepRunner.stages

    def stop_first(self, run):
        signal.raise_signal(signal.SIGTERM)  # the worker's handler takes it
        return stages(self, run)

    monkeypatch.setattr(SweepRunner, "stages", stop_first)
    outcome = run_worker(sweep, tmp_path)
    assert outcome["interrupted"] == {"run": "b", "stage": "pretrain", "signal": "SIGTERM",
                                      "started": False}
    assert "pretrain" not in SweepStatus(tmp_path).read().get("b", {})
    assert not (tmp_path / "runs" / "b" / "pretrain" / "checkpoints").exists()
    error = stop_error(outcome)
    assert error.exit_status == 143 and str(error) == (
        "sweep stopped by SIGTERM before starting b pretrain (nothing of it ran; every stage "
        "before it is saved); results and report are incomplete: run the same command again to "
        "go on")


class PreemptedRun:
    """A stage's run that SIGTERM stopped after saving step 7 (its summary has no step field, as
    a fine-tuning summary has none)."""

    stopped_by, stopped_at = "SIGTERM", 7

    def run(self):
        return {"status": "preempted", "task": "sst2"}


def test_a_preempted_finetuning_stage_is_recorded_interrupted_not_done(word_shards, tmp_path):
    runner = SweepRunner(tiny_sweep(word_shards), tmp_path)
    with stop_signals() as runner._stop:
        state = runner._attempt("b", "finetune:sst2:pretrained", PreemptedRun)
    assert state == "interrupted" and runner._stop.signal == "SIGTERM"
    entry = SweepStatus(tmp_path).read()["b"]["finetune:sst2:pretrained"]
    assert (entry["state"], entry["signal"], entry["step"]) == ("interrupted", "SIGTERM", 7)
    assert SweepStatus(tmp_path).unfinished() == ["b finetune:sst2:pretrained: interrupted"]
    # the same stage finished by a later attempt (or another run sharing the workdir): done
    workdir = tmp_path / "runs" / "b" / "pretrain"
    workdir.mkdir(parents=True)
    (workdir / "summary.json").write_text(json.dumps({"status": "completed"}))
    runner.status.record("b", "pretrain", "failed", error="x")
    runner.settle([r for r in runner.runs if r.name == "b"])
    assert SweepStatus(tmp_path).read()["b"]["pretrain"]["state"] == "done"


def test_ctrl_c_in_process_names_the_saved_step(word_shards, tmp_path, monkeypatch):
    from test_pretrain import small_config

    signal_after(Pretrainer, 3, signal.SIGINT, monkeypatch)
    with pytest.raises(Interrupted, match=r"interrupted \(Ctrl-C\) at step 3 of .*run the same"):
        Pretrainer(small_config(word_shards), tmp_path / "run").run()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 3


def test_a_stopped_sweep_command_exits_non_zero_naming_what_to_rerun():
    stopped = {"runs": 2, "failures": {}, "results": "r", "report": None,
               "interrupted": {"run": "b", "stage": "finetune:sst2:pretrained", "signal": "SIGTERM"}}
    error = stop_error(stopped)
    assert isinstance(error, Interrupted) and error.exit_status == 143
    assert str(error) == ("sweep stopped by SIGTERM at b finetune:sst2:pretrained (its step is "
                          "saved); results and report are incomplete: run the same command again "
                          "to resume")
    stopped["interrupted"]["signal"] = "SIGINT"
    assert stop_error(stopped).exit_status == 130
    assert stop_error({**stopped, "interrupted": None}) is None


def test_ctrl_c_saves_the_step_and_exits_130_with_one_line(word_shards, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(cli_args(word_shards, workdir, steps=5000), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(workdir / "checkpoints" / "5", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (Ctrl-C) at step"), err[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "preempted"
    assert f"at step {summary['step']} " in lines[0]
    assert seal.verify(workdir / "checkpoints" / str(summary["step"])).ok  # saved at the interrupt


def small_state(value: float) -> dict:
    return {"w": jnp.full((4,), value, jnp.float32)}


def test_best_is_published_before_the_old_one_goes(tmp_path, monkeypatch):
    ckpts = Checkpoints(tmp_path, keep=2, every_steps=10, every_minutes=60, keep_best=True)
    ckpts.save_best(10, small_state(1.0), {"loss": 2.0})
    real_seal = seal.write_seal

    def killed_while_sealing(step_dir, identity):
        raise KeyboardInterrupt  # the process dies between Orbax's rename and the seal

    monkeypatch.setattr(seal, "write_seal", killed_while_sealing)
    with pytest.raises(KeyboardInterrupt):
        ckpts.save_best(20, small_state(2.0), {"loss": 1.0})
    monkeypatch.setattr(seal, "write_seal", real_seal)
    assert seal.verify(tmp_path / "best" / "10").ok  # the old best is still there, whole
    assert find_checkpoint(tmp_path, "best")[0] == 10  # the unsealed newcomer is not read
    reopened = Checkpoints(tmp_path, keep=2, every_steps=10, every_minutes=60, keep_best=True)
    assert reopened.best_metrics()["loss"] == 2.0
    reopened.save_best(30, small_state(3.0), {"loss": 0.5})
    assert sorted(p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()) == ["30"]
    assert find_checkpoint(tmp_path, "best")[0] == 30


def test_a_held_best_is_published_before_the_next_checkpoint(tmp_path):
    """An improving evaluation costs no write: the best is held and published before the next
    regular checkpoint, so ``best/`` never lags behind the step a resumption starts from; reading
    the best or closing publishes it too."""
    ckpts = Checkpoints(tmp_path, keep=2, every_steps=10, every_minutes=60, keep_best=True)
    ckpts.hold_best(4, small_state(1.0), {"loss": 2.0})
    ckpts.hold_best(8, small_state(2.0), {"loss": 1.5})
    assert not [p for p in (tmp_path / "best").iterdir() if p.name.isdigit()]
    ckpts.save(10, small_state(3.0))
    assert find_checkpoint(tmp_path, "best")[0] == 8 and ckpts.best_metrics()["loss"] == 1.5
    ckpts.hold_best(12, small_state(4.0), {"loss": 1.0})
    assert ckpts.best_metrics()["loss"] == 1.0  # read: published first
    assert sorted(p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()) == ["12"]
    step, restored, _ = ckpts.restore_best({"w": jnp.zeros((4,), jnp.float32)})
    assert step == 12 and float(restored["w"][0]) == 4.0
    ckpts.hold_best(14, small_state(5.0), {"loss": 0.5})
    ckpts.close()  # closing publishes what is held
    assert find_checkpoint(tmp_path, "best")[0] == 14


def test_which_best_never_falls_back_to_an_unevaluated_step(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=2, every_steps=10, every_minutes=60, keep_best=True)
    ckpts.save(390, small_state(1.0))
    (tmp_path / "config.json").write_text(json.dumps({"checkpoint.keep_best": True,
                                                      "data.eval_split": "validation"}))
    with pytest.raises(UserError, match="no evaluated best checkpoint.*which=latest"):
        find_checkpoint(tmp_path, "best")
    assert find_checkpoint(tmp_path, "latest")[0] == 390
    (tmp_path / "summary.json").write_text(json.dumps({"status": "preempted"}))
    with pytest.raises(UserError, match="no evaluated best checkpoint"):  # it will evaluate later
        find_checkpoint(tmp_path, "best")
    # finished without ever evaluating (eval.every_steps > num_steps): it never will; the newest
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert find_checkpoint(tmp_path, "best")[0] == 390
    (tmp_path / "summary.json").unlink()
    # a run that keeps no best (no validation split): its newest checkpoint, as documented
    (tmp_path / "config.json").write_text(json.dumps({"checkpoint.keep_best": True,
                                                      "data.eval_split": ""}))
    assert find_checkpoint(tmp_path, "best")[0] == 390


def test_a_diverged_population_names_its_members_and_what_is_kept():
    deferred = DeferredMetrics(lambda: "no checkpoint was saved before it")
    losses = np.array([[1.0, np.nan, 2.0, np.inf]], np.float32)
    deferred.push(40, 1, {"loss": losses})
    with pytest.raises(TrainingDiverged) as err:
        deferred.pop()
    message = str(err.value)
    assert message == ("non-finite training loss at step 41 (2 of 4 members: member 1: nan, "
                       "member 3: inf); no checkpoint was saved before it")
    assert "[" not in message  # no raw array


def test_nested_stop_signals_share_the_outer_request():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_signals() as outer:
        signal.raise_signal(signal.SIGTERM)  # between two runs of a sweep
        with stop_signals() as inner:  # the next run's loop sees it at once
            assert inner is outer and inner.signal == "SIGTERM"
        with stop_signals(enabled=False) as other:  # several processes: never shared
            assert other is not outer and other.signal is None
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # Ctrl-C, once pressed, decides how it ends
        assert outer.signal == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
