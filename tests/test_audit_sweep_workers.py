"""Sweep workers pinned on tiny hand-made roots with stand-in units (no training): the state,
step, worker, elapsed time, error and counts ``sweep status`` shows per unit; claim times and
claims of this process, an unreadable claim, a claim another host keeps unchanged; the order a
worker takes units in and how it counts them, a unit failed since the launch or finished by
another worker never taken again, the wait between looks, ``--only``, a population's diverged
member, which finished runs and snapshots are packed; the report built once per results; the
local launcher's environments and silence rule, a SLURM task's exit codes, environment and job
array (a stand-in ``submitit``), and the CPU time read from ``/proc``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import ml_collections
import pytest

from minilm_jax.configs import sweep as sweep_recipes
from minilm_jax.errors import UserError
from minilm_jax.storage import relative_location, run_path
from minilm_jax.sweep import launchers, worker_loop, workers
from minilm_jax.sweep.claims import (HEARTBEAT_VARIABLE, LAUNCHED_AT_ENV, STALE_VARIABLE,
                                     ClaimBoard)
from minilm_jax.sweep.layout import SweepLayout, finetune_jobs
from minilm_jax.sweep.spec import expand
from minilm_jax.sweep.overview import last_step, print_status, unit_rows
from minilm_jax.sweep.status import SweepStatus

HOST = socket.gethostname()


def small_sweep(tmp_path: Path, ofat: tuple[str, ...] = ("tiny:model.hidden_dim=64",
                                                         "tiny:model.num_layers=2"),
                **fields) -> ml_collections.ConfigDict:
    """The demo sweep without groups, evaluations or fine-tuning: one pre-training per run."""
    sweep = sweep_recipes.demo()
    sweep.shards, sweep.groups, sweep.ofat = str(tmp_path / "shards"), (), ofat
    sweep.finetune_tasks, sweep.report = (), False
    for key, value in fields.items():
        setattr(sweep, key, value)
    return sweep


@pytest.fixture
def claim_times(monkeypatch):
    """Every ClaimBoard built from the environment: stale after 60 s, a heartbeat every 2 s."""
    monkeypatch.setenv(STALE_VARIABLE, "60")
    monkeypatch.setenv(HEARTBEAT_VARIABLE, "2")


def write_claim(board: ClaimBoard, workdir, host: str, pid: int, age: float,
                since_ago: float = 0.0, worker: str = "") -> None:
    """A claim file on ``workdir`` as a worker writes it, last written ``age`` seconds ago."""
    path = Path(str(board.path_of(workdir)))
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path.write_text(json.dumps({
        "worker": worker or f"{host}:{pid}", "host": host, "pid": pid, "since": now - since_ago,
        "heartbeat": board.heartbeat, "stage": "pretrain",
        "unit": relative_location(workdir, board.root)}))
    os.utime(path, (now - age, now - age))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------- sweep status


def test_last_step_is_the_newest_step_of_a_short_and_a_long_metrics_file(tmp_path):
    """The step of the last record (the tail of a file over 4 KiB is read from its middle)."""
    short, long = tmp_path / "short", tmp_path / "long"
    for folder, steps in ((short, range(1, 6)), (long, range(0, 4000, 4))):
        folder.mkdir()
        lines = [json.dumps({"step": s, "split": "train", "loss": 1.5}) for s in steps]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\nnot json\n")
    assert (long / "metrics.jsonl").stat().st_size > 4096
    assert last_step(short) == 5 and last_step(long) == 3996
    assert last_step(tmp_path / "nothing") is None


def test_status_shows_each_units_state_worker_elapsed_error_and_counts(tmp_path, claim_times,
                                                                       capsys):
    """Eight units, one per state a hand-made root holds: the state of each, the worker and
    elapsed time of a held claim, the first line of an error, and the count per state."""
    sweep = small_sweep(tmp_path, ofat=("tiny:model.hidden_dim=40,48,56,64,72,80,88",))
    layout = SweepLayout(tmp_path / "sweep")
    names = [r.name for r in expand(sweep)]
    assert len(names) == 8
    board = ClaimBoard(layout.claims_dir, layout.root, 60.0, 2.0)
    status, me = SweepStatus(layout.root), os.getpid()
    pre = {name: Path(str(layout.pretrain_dir(name))) for name in names}
    done, held, young, silent, stale, killed, failed, pending = names
    pre[done].mkdir(parents=True)
    (pre[done] / "summary.json").write_text(json.dumps({"status": "completed"}))
    write_claim(board, pre[done], HOST, me, age=0.0)  # finished, its claim not yet released
    pre[held].mkdir(parents=True)
    (pre[held] / "metrics.jsonl").write_text('{"step": 4}\n{"step": 8}\n')
    status.record(held, "pretrain", "running", worker="old-worker:1")
    write_claim(board, pre[held], HOST, me, age=0.0, since_ago=100.0, worker="this-worker:7")
    write_claim(board, pre[young], "elsewhere", 11, age=3.0)  # 1.5 heartbeats: still running
    write_claim(board, pre[silent], "elsewhere", 12, age=20.0)  # > 3 heartbeats, < stale time
    status.record(stale, "pretrain", "failed", error="an earlier try")
    write_claim(board, pre[stale], HOST, me, age=120.0)  # a live pid silent past the stale time
    status.record(killed, "pretrain", "running", worker="gone:1")
    status.record(failed, "pretrain", "failed", error="ValueError: first line\nsecond line")
    write_claim(board, pre[pending], HOST, dead_pid(), age=1.0)  # its process is gone
    rows = {r["run"]: r for r in unit_rows(sweep, layout)}
    assert {n: rows[n]["state"] for n in names} == {
        done: "done", held: "running", young: "running", silent: "silent", stale: "stale",
        killed: "interrupted", failed: "failed", pending: "pending"}
    assert rows[held]["worker"] == "this-worker:7" and rows[held]["step"] == 8
    assert 99.0 <= rows[held]["elapsed"] < 130.0
    assert 19.0 <= rows[silent]["silent_for"] < 50.0 and rows[young]["silent_for"] is None
    assert rows[stale]["claim"].startswith(f"stale: pid {me} alive, silent for ")
    assert rows[pending]["claim"].startswith("gone: pid ") and rows[pending]["step"] is None
    assert rows[failed]["error"] == "ValueError: first line"
    assert rows[killed]["worker"] == "gone:1" and rows[killed]["elapsed"] is None
    capsys.readouterr()
    print_status(sweep, layout)
    out = capsys.readouterr().out
    assert "8 units: 1 done, 1 failed, 1 interrupted, 1 pending, 2 running, 1 silent, 1 stale" \
        in out.splitlines()
    assert f"--only={failed} --stage=pretrain" in out


def test_stage_records_are_read_oldest_first_and_unfinished_ones_listed(tmp_path, monkeypatch):
    import itertools

    from minilm_jax.sweep import status as status_module

    clock = itertools.count(1000.0, 1.0)  # each record one second after the last
    monkeypatch.setattr(status_module.time, "time", lambda: next(clock))
    status = SweepStatus(tmp_path)
    status.record("a", "finetune:t:random", "failed", error="x")
    status.record("a", "pretrain", "done")
    status.record("a", "evals:z", "interrupted", signal="SIGTERM")
    assert list(status.read()["a"]) == ["finetune:t:random", "pretrain", "evals:z"]
    assert status.unfinished() == ["a finetune:t:random: failed", "a evals:z: interrupted"]


# ------------------------------------------------------------------------------ claims


@pytest.mark.parametrize("stale,heartbeat,refused", [("3", "1", False), ("2.9", "1", True),
                                                     ("0", "", True), ("60", "0", True)])
def test_claim_times_from_the_environment_need_three_heartbeats_and_positive_seconds(
        tmp_path, monkeypatch, stale, heartbeat, refused):
    monkeypatch.setenv(STALE_VARIABLE, stale)
    monkeypatch.setenv(HEARTBEAT_VARIABLE, heartbeat)
    if refused:
        with pytest.raises(UserError, match="MINILM_CLAIM"):
            ClaimBoard(tmp_path / "claims", tmp_path)
    else:
        board = ClaimBoard(tmp_path / "claims", tmp_path)
        assert (board.stale_after, board.heartbeat) == (3.0, 1.0)


def test_an_unreadable_claim_is_left_while_young_and_taken_over_once_old(tmp_path):
    """A young unreadable claim may be a write in progress; one older than the stale time not."""
    board = ClaimBoard(tmp_path / "claims", tmp_path, 30.0, 10.0)
    path = Path(str(board.path_of(tmp_path / "u")))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{partial")
    assert board.try_claim([tmp_path / "u"], "pretrain") is None
    assert path.read_bytes() == b"{partial"
    old = time.time() - 31.0
    os.utime(path, (old, old))
    claim = board.try_claim([tmp_path / "u"], "pretrain")
    assert claim is not None and json.loads(path.read_text())["pid"] == os.getpid()
    claim.release()
    assert not path.exists()


def test_a_claim_another_host_keeps_unchanged_for_the_stale_time_is_stale(tmp_path,
                                                                          monkeypatch):
    """Watched on this worker's clock (scripted): live at 0 s and 9.9 s, stale at 10 s, though
    its last write looks young by the clocks (the other host's clock runs ahead)."""
    from minilm_jax.sweep import claims

    clock = [1000.0]
    monkeypatch.setattr(claims.time, "monotonic", lambda: clock[0])
    board = ClaimBoard(tmp_path / "claims", tmp_path, 10.0, 1.0)
    write_claim(board, tmp_path / "u", "elsewhere", 5, age=0.0)
    seen = []
    for at in (1000.0, 1009.9, 1010.0):
        clock[0] = at
        seen.append(board.holder(tmp_path / "u") is None)
    assert seen == [False, False, True]


# ------------------------------------------------------------------------ the worker loop


class StandIn:
    """A unit's run: writes a finished summary, or raises."""

    stopped_by, stopped_at = None, None

    def __init__(self, workdir: Path, fail: bool):
        self.workdir, self.fail = workdir, fail

    def run(self) -> dict:
        if self.fail:
            raise ValueError("stand-in failure")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "summary.json").write_text(json.dumps({"status": "completed"}))
        return {"status": "completed"}


@pytest.fixture
def runner(tmp_path, monkeypatch, claim_times):
    """A runner of three runs whose units are stand-ins (a pre-training and one fine-tuning
    each): ``runner.attempts`` lists the units started, ``runner.fail`` those that raise."""
    monkeypatch.setenv(LAUNCHED_AT_ENV, repr(time.time() - 5.0))
    monkeypatch.setattr(worker_loop, "write_results", lambda *a, **k: tmp_path / "r.jsonl")
    r = worker_loop.SweepRunner(small_sweep(tmp_path), tmp_path / "sweep")
    r.attempts, r.fail = [], set()

    def stages(run):
        for stage in ("pretrain", "finetune:t:pretrained"):
            workdir = Path(str(r.layout.pretrain_dir(run.name))) if stage == "pretrain" \
                else Path(str(r.layout.root)) / "units" / run.name / stage.replace(":", "-")

            def make(run=run, stage=stage, workdir=workdir):
                r.attempts.append((run.name, stage))
                return StandIn(workdir, (run.name, stage) in r.fail)
            yield stage, workdir, make, [workdir]

    monkeypatch.setattr(r, "stages", stages)
    return r


def no_wait(*args, **kwargs):
    raise AssertionError("the worker waited though no other worker holds a unit")


def test_a_worker_takes_units_in_order_once_and_skips_a_failed_runs_fine_tuning(runner, capsys,
                                                                                monkeypatch):
    a, b, c = (r.name for r in runner.runs)
    runner.fail = {(b, "pretrain")}
    monkeypatch.setattr(runner.claims, "wait_for_change", no_wait)
    selected, interrupted = runner._run_stages("")
    assert interrupted is None and [r.name for r in selected] == [a, b, c]
    assert runner.attempts == [(a, "pretrain"), (a, "finetune:t:pretrained"), (b, "pretrain"),
                               (c, "pretrain"), (c, "finetune:t:pretrained")]
    out = capsys.readouterr().out
    assert re.findall(r"^== \[(\d)/(\d)\] (\S+) \(", out, re.M) == [
        ("1", "3", a), ("2", "3", b), ("3", "3", c)]
    assert runner.status.entry(b, "pretrain")["state"] == "failed"
    assert not list(Path(str(runner.layout.claims_dir)).glob("*.json"))  # every claim released
    runner.attempts.clear()
    runner._run_stages("")  # again in the same launch: nothing is left to run
    assert runner.attempts == []


def test_a_unit_finished_by_another_worker_before_the_claim_is_not_run_again(runner,
                                                                             monkeypatch):
    a = runner.runs[0].name
    unit = Path(str(runner.layout.pretrain_dir(a)))
    real = runner.claims.try_claim

    def finished_meanwhile(holds, stage):
        if holds == [unit]:
            StandIn(unit, fail=False).run()  # another worker ran it since this one looked
        return real(holds, stage)

    monkeypatch.setattr(runner.claims, "try_claim", finished_meanwhile)
    monkeypatch.setattr(runner.claims, "wait_for_change", no_wait)
    runner._run_stages("")
    assert (a, "pretrain") not in runner.attempts and (a, "finetune:t:pretrained") in \
        runner.attempts and len(runner.attempts) == 5


def test_a_worker_waits_three_heartbeats_for_a_unit_another_host_holds(runner, monkeypatch):
    a = runner.runs[0].name
    board = runner.claims
    unit = Path(str(runner.layout.pretrain_dir(a)))
    write_claim(board, unit, "elsewhere", 9, age=0.0)
    waits = []

    def wait(timeout, folders=(), since=None):
        waits.append(timeout)
        Path(str(board.path_of(unit))).unlink()  # the other host released it

    monkeypatch.setattr(board, "wait_for_change", wait)
    runner._run_stages("")
    assert waits == [3 * board.heartbeat] and runner.attempts[-2:] == [
        (a, "pretrain"), (a, "finetune:t:pretrained")] and len(runner.attempts) == 6


def test_only_selects_every_run_whose_name_contains_it_and_reports_their_failures(runner):
    names = [r.name for r in runner.runs]
    runner.status.record(names[0], "pretrain", "failed", error="earlier")
    outcome = runner.run("tiny__")
    assert outcome["runs"] == 2 and outcome["failures"] == {}
    assert sorted(n for n, _ in runner.attempts) == sorted([n for n in names if "tiny__" in n] * 2)


def test_a_launch_time_in_the_future_is_now(monkeypatch):
    monkeypatch.setenv(LAUNCHED_AT_ENV, repr(time.time() + 3600.0))
    assert worker_loop._launched_at() <= time.time()


def test_a_populations_diverged_member_is_recorded_failed_not_done(runner):
    summary = {"members": [
        {"name": "m0", "status": "completed"}, {"name": "m1", "status": "diverged",
                                                "diverged_at": 7},
        {"name": "m2", "status": "early_stopped"}]}
    assert runner._settle_members("m0", "pretrain", summary)["status"] == "completed"
    entries = {m: runner.status.entry(m, "pretrain") for m in ("m1", "m2")}
    assert entries["m1"]["state"] == "failed" and "at step 7" in entries["m1"]["error"]
    assert entries["m2"]["state"] == "done" and runner.status.entry("m0", "pretrain") == {}


def test_settle_marks_done_only_stages_recorded_otherwise(tmp_path, claim_times):
    r = worker_loop.SweepRunner(small_sweep(tmp_path), tmp_path / "sweep")
    a, b, c = (run.name for run in r.runs)
    for name in (a, b):
        folder = Path(str(r.layout.pretrain_dir(name)))
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    r.status.record(a, "pretrain", "failed", error="x")
    r.status.record(c, "pretrain", "interrupted")
    r.settle(r.runs)
    assert r.status.entry(a, "pretrain")["state"] == "done"
    assert r.status.entry(b, "pretrain") == {} and r.status.entry(c, "pretrain")["state"] == \
        "interrupted"


@pytest.mark.parametrize("name,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stopped_sweep_exits_130_for_ctrl_c_and_143_for_sigterm(name, status):
    error = worker_loop.stop_error({"interrupted": {"run": "r", "stage": "pretrain",
                                                    "signal": name}})
    assert error.exit_status == status


# ------------------------------------------------------------------------------- packing


def packed_runner(tmp_path, **fields):
    """A runner whose three runs are declared one population (pre-training of the second done)."""
    r = worker_loop.SweepRunner(small_sweep(tmp_path, **fields), tmp_path / "sweep")
    r.packs = {run.name: list(r.runs) for run in r.runs}
    folder = Path(str(r.layout.pretrain_dir(r.runs[1].name)))
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    return r


def test_a_population_holds_only_its_unfinished_runs(tmp_path, claim_times):
    r = packed_runner(tmp_path)
    stage, _, _, holds = next(iter(r.stages(r.runs[0])))
    assert stage == "pretrain"
    assert holds == [r.layout.pretrain_dir(r.runs[0].name), r.layout.pretrain_dir(r.runs[2].name)]


def test_fine_tuning_packs_the_same_snapshot_of_runs_whose_pre_training_finished(tmp_path,
                                                                                 claim_times):
    r = packed_runner(tmp_path, finetune_tasks=("bbc",), finetune_checkpoints=(0.5, 1.0))
    a, b, _ = r.runs
    job = next(j for j in finetune_jobs(r.sweep, a, r.layout) if j.label == "pretrained@0.5")
    theirs = next(j for j in finetune_jobs(r.sweep, b, r.layout) if j.label == "pretrained@0.5")
    assert [(n, j.workdir) for n, j in r._finetune_pack(a, job)] == [
        (a.name, job.workdir), (b.name, theirs.workdir)]


# --------------------------------------------------------------------- results and report


def test_the_report_is_built_once_per_results_and_never_of_baselines_alone(tmp_path,
                                                                           monkeypatch):
    import minilm_jax.report as report

    built = []

    def build(results, folder, options):
        built.append(Path(results).read_text())
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "report.md").write_text("# report\n")

    monkeypatch.setattr(report, "build_report", build)
    layout = SweepLayout(tmp_path)
    sweep = ml_collections.ConfigDict({"report_bootstrap": 10})
    layout.results_path.write_text('{"kind": "baseline"}\n')
    assert workers.build_report_once(layout, sweep) is None and built == []
    layout.results_path.write_text('{"kind": "baseline"}\n{"kind": "pretrain"}\n')
    assert workers.build_report_once(layout, sweep) == str(layout.report_dir)
    assert workers.build_report_once(layout, sweep) == str(layout.report_dir)
    assert len(built) == 1
    layout.results_path.write_text('{"kind": "pretrain", "step": 2}\n')
    workers.build_report_once(layout, sweep)
    assert len(built) == 2


def test_finish_reports_the_failed_stages_of_every_run(tmp_path, monkeypatch, claim_times):
    monkeypatch.setattr(workers, "write_results", lambda *a, **k: tmp_path / "r.jsonl")
    sweep = small_sweep(tmp_path)
    root = tmp_path / "sweep"
    names = [r.name for r in expand(sweep)]
    SweepStatus(root).record(names[2], "pretrain", "failed", error="boom")
    assert workers.finish(sweep, root)["failures"] == {names[2]: {"pretrain": "boom"}}


# ----------------------------------------------------------------------------- launchers


def test_each_local_worker_keeps_its_own_gpu_and_the_launch_time(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(launchers.subprocess, "Popen",
                        lambda argv, env, **kw: started.append(env))
    monkeypatch.setattr(launchers, "wait_for_workers", lambda procs, rule: [0] * len(procs))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    monkeypatch.setenv(LAUNCHED_AT_ENV, "1.0")  # an earlier launch's, inherited
    before = time.time()
    envs = launchers.gpu_envs(0)
    assert launchers.run_local_workers(["sweep"], envs, tmp_path) == [0, 0]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in started] == ["3", "4"]
    assert all(e["JAX_PLATFORMS"] == "cuda" for e in started)
    assert all(before <= float(e[LAUNCHED_AT_ENV]) <= time.time() for e in started)


def test_a_slurm_task_keeps_its_launch_environment_and_accepts_a_lost_unit(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("EXIT", "3")
    code = [sys.executable, "-c", "import os; raise SystemExit(int(os.environ['EXIT']))"]
    assert launchers.SweepWorkerJob(code, str(tmp_path), {"EXIT": "75"})() == 75
    assert launchers.SweepWorkerJob(code, str(tmp_path), {"EXIT": "1"})() == 1
    with pytest.raises(RuntimeError, match="status 3"):
        launchers.SweepWorkerJob(code, str(tmp_path), {})()


def test_slurm_submits_one_task_per_worker_with_the_requested_resources(tmp_path, monkeypatch):
    """Through a stand-in submitit that records what the launcher asks of it."""
    asked = {}

    class Executor:
        def __init__(self, folder, cluster=None):
            asked["folder"], asked["jobs"] = folder, []

        def update_parameters(self, **params):
            asked["params"] = params

        def batch(self):
            import contextlib
            return contextlib.nullcontext()

        def submit(self, job):
            asked["jobs"].append(job)
            return len(asked["jobs"])

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(
        AutoExecutor=Executor, LocalExecutor=Executor))
    options = launchers.SlurmOptions(partition="gpu", gpus=2, cpus=6, mem_gb=40, parallel=3)
    root = run_path(str(tmp_path / "sweep"))
    jobs = launchers.submit_slurm(["sweep", "--root=R", "--workers=4"], root, 4, options)
    assert jobs == [1, 2, 3, 4]
    params = asked["params"]
    assert (params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"],
            params["slurm_array_parallelism"], params["slurm_partition"]) == (2, 6, 40, 3, "gpu")
    job = asked["jobs"][0]
    assert job.command[-2:] == ["--launcher=local", "--workers=1"] and "--workers=4" not in \
        job.command and LAUNCHED_AT_ENV in job.env
    with pytest.raises(UserError, match="--workers=N"):
        launchers.submit_slurm(["sweep"], root, 0, options)


class Proc:
    """A worker process as the launcher looks at it."""

    def __init__(self, pid: int, returncode=None):
        self.pid, self.returncode, self.signals = pid, returncode, []

    def send_signal(self, signum):
        self.signals.append(signum)


def look_after_silence(monkeypatch, sibling_code: int, cpu: int | None, state: str = "S"):
    """One launcher look, 100 s after the last sign of a worker whose sibling ended with
    ``sibling_code``: the signals the silent worker was sent."""
    monkeypatch.setattr(launchers, "process_cpu", lambda pid: (cpu, state))
    monkeypatch.setattr(launchers, "_say", lambda line: None)
    monkeypatch.setattr(launchers.time, "monotonic", lambda: 1100.0)
    rule = launchers.SilenceRule(stale_after=30.0, heartbeat=10.0, grace=5.0)
    sibling = launchers.LocalWorker("w0", Proc(1, sibling_code), 1000.0)
    silent = launchers.LocalWorker("w1", Proc(2), 1000.0, cpu=cpu)
    launchers._look([sibling, silent], rule)
    return silent.proc.signals


def test_a_silent_worker_is_ended_once_a_sibling_finished_with_a_failed_unit(monkeypatch):
    """Exit 1 (a unit failed, recorded) settles the sweep as exit 0 does."""
    assert look_after_silence(monkeypatch, 1, cpu=50) == [signal.SIGTERM]
    assert look_after_silence(monkeypatch, 0, cpu=50, state="t") == [signal.SIGKILL]
    assert look_after_silence(monkeypatch, 0, cpu=50, state="T") == [signal.SIGKILL]
    assert look_after_silence(monkeypatch, 2, cpu=50) == []  # an error: the sweep not settled
    assert look_after_silence(monkeypatch, 0, cpu=None) == []  # its CPU time is not known


def test_the_launcher_looks_often_enough_and_within_the_grace(monkeypatch):
    assert launchers.SilenceRule(9.0, 5.0).every == 3.0
    assert launchers.SilenceRule(300.0, 20.0).every == 20.0
    rule = launchers.SilenceRule(300.0, 20.0, grace=4.0)
    worker = launchers.LocalWorker("w0", Proc(1), 0.0, terminated_by=signal.SIGTERM)
    assert launchers._next_look([worker], rule) == 4.0
    assert launchers._next_look([launchers.LocalWorker("w1", Proc(2), 0.0)], rule) == 20.0


def test_a_workers_exit_code_is_minus_the_signal_only_when_this_launcher_sent_it():
    user_stop = launchers.LocalWorker("w0", Proc(1, 143), 0.0)
    ours = launchers.LocalWorker("w1", Proc(2, 143), 0.0, terminated_by=signal.SIGTERM)
    assert (user_stop.exit_code, ours.exit_code) == (143, -signal.SIGTERM)


def test_the_cpu_time_read_from_proc_is_this_processs_own(monkeypatch):
    """User plus system time of every thread, in clock ticks (os.times(), not its children's)."""
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    cpu, state = launchers.process_cpu(os.getpid())
    assert state == "R" and abs(cpu - (own.user + own.system) * ticks) <= 3
    assert own.children_user * ticks > 10  # the children's time differs from the own


def test_runs_differing_only_in_population_fields_are_packed_in_declaration_order(tmp_path):
    """Seeds and a peak-LR variant of one point pack together, other points not; ``off``: alone."""
    from minilm_jax.sweep.population_packing import packs

    sweep = small_sweep(tmp_path, ofat=("tiny:model.hidden_dim=64", "tiny:optim.peak_lr=0.002"),
                        pretrain_seeds=(0, 1))
    runs = expand(sweep)
    assert len(runs) == 6 and len({r.point for r in runs}) == 2
    by_run = packs(runs, "auto")
    assert {name: [r.name for r in pack] for name, pack in by_run.items()} == {
        run.name: [r.name for r in runs if r.point == run.point] for run in runs}
    assert all([r.name for r in pack] == [run.name] for run, pack in
               zip(runs, packs(runs, "off").values()))
