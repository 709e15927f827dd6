"""Several workers run one sweep root: each unit exactly once, results equal to one worker's, a
killed worker's unit resumed by another bit-identically (same host, and a worker under another host
name), a stopped worker's unit taken over and the stopped worker ended by its launcher, a root in a
``gs://`` bucket, the SLURM launcher through submitit (its local executor here; a real SLURM where
``sbatch`` exists), ``status`` and a retry of one unit (``launch/tpu.sh sweep``:
tests/test_launch.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, xla_flags
from gcs_stand_in import gcs  # noqa: F401  (the session fixture)
from test_pretrain import wait_for

# Each test waits on sweep workers it starts (and kills or stops): a worker or launcher that never
# ends fails its test in 5 minutes, not 10 (pytest.ini's limit), with every thread's stack.
pytestmark = pytest.mark.timeout(300)
TESTS = Path(__file__).resolve().parent
# Every sweep command here runs on 2 fake CPU devices (sweep_env): enough for the run that fails
# at start-up (eval batch 45 is not divisible by 2; on one device it fits: the retry test), and
# far cheaper than 8 (replicated state is copied and checkpointed once per device).
DEVICES = 2
FAILING = "b__batch_size=45"
OFAT = ("b:model.hidden_dim=32", "b:eval.batch_size=45")
# Checkpoints at the last step only, where no test kills a worker: a run-control field (results do
# not depend on it; the bucket test's are many requests to the stand-in each).
AT_END = ("checkpoint.every_steps=16",)


def sweep_file(tmp_path: Path, shards: Path, run_control: tuple[str, ...] = (), **fields) -> Path:
    """A sweep config file: tests/test_sweep.py's tiny sweep (three runs, one of which, FAILING,
    fails at start-up on the 2 devices), 16 steps with checkpoints every 4, ``fields`` changed,
    ``run_control`` overrides (fields that do not change a run's results) added."""
    fields = {"ofat": OFAT, **fields}
    path = tmp_path / "tiny_sweep.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from test_sweep import tiny_sweep\n\n\n"
        "def get_config():\n"
        f"    sweep = tiny_sweep(Path({str(shards)!r}))\n"
        "    sweep.num_steps = 16\n"
        + "".join(f"    sweep.{k} = {v!r}\n" for k, v in fields.items())
        + f"    sweep.pretrain_overrides = tuple(sweep.pretrain_overrides) + {tuple(run_control)!r}\n"
        + "    return sweep\n")
    return path


def sweep_cmd(config: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "minilm_jax.sweep", f"--config={config}", f"--root={root}", *extra]


def sweep_env() -> dict[str, str]:
    """The environment of a sweep command: unbuffered output, DEVICES fake CPU devices."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": xla_flags(DEVICES)}


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=sweep_env(), capture_output=True, text=True,
                          timeout=timeout)


def results(root: Path | str) -> list[dict]:
    """The rows of ``root``'s results table (a folder or a ``gs://`` location), paths from the
    root on."""
    from minilm_jax.storage import run_path

    text = (run_path(str(root)) / "results.jsonl").read_text().replace(str(root), "ROOT")
    return [json.loads(line) for line in text.splitlines()]


def status_of(root: Path | str, capsys) -> str:
    """What ``python -m minilm_jax.sweep status --root=ROOT`` prints, in this process (the command
    line itself: test_concurrent_workers_run_each_unit_once_and_equal_one_worker)."""
    from minilm_jax.sweep.layout import SweepLayout
    from minilm_jax.sweep.overview import print_status
    from minilm_jax.sweep.workers import load_config

    layout = SweepLayout(root)
    capsys.readouterr()
    print_status(load_config(layout), layout)
    return capsys.readouterr().out


def units_started(output: str) -> list[str]:
    """The runs whose pre-training a worker started, one entry per start, from the output."""
    return re.findall(r"^(?:\[w\d+\] )?== \[\d+/\d+\] (\S+) \(", output, re.M)


def load_sweep(config: Path):
    """The sweep config of a config file (what the command's --config reads)."""
    spec = importlib.util.spec_from_file_location("tiny_sweep_config", config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def sequential(word_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("sequential")
    config = sweep_file(root, word_shards, run_control=AT_END)
    proc = run(sweep_cmd(config, root / "sweep"))
    assert proc.returncode == 1, proc.stderr[-2000:]  # one run fails, on purpose
    return config, root / "sweep", proc.stdout


# 3 workers for 3 units (one failing at once); two local workers: the SIGKILL test below (its results
# equal one worker's) and the SLURM test (each unit started once, through submitit's local executor),
# and the bucket test runs two workers' claims on a gs:// root
@pytest.mark.parametrize("workers", [3])
def test_concurrent_workers_run_each_unit_once_and_equal_one_worker(sequential, tmp_path,
                                                                      workers):
    config, seq_root, seq_out = sequential
    root = tmp_path / "sweep"
    proc = run(sweep_cmd(config, root, f"--workers={workers}"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    started = units_started(proc.stdout)
    assert sorted(started) == sorted(units_started(seq_out)) == sorted(
        ["b", "b__hidden_dim=32", FAILING]), proc.stdout[-3000:]
    assert results(root) == results(seq_root)
    outcome = json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1:])
    assert list(outcome["failures"]) == [FAILING] and outcome["workers"] == [1] * workers
    assert (root / "report" / "report.md").is_file()
    assert not [p for p in (root / "claims").glob("*.json")]  # every claim released

    status = run(sweep_cmd(config, root)[:3] + ["status", f"--root={root}"])
    assert status.returncode == 0, status.stderr[-2000:]
    lines = status.stdout.splitlines()
    assert re.search(r"^b\s+pretrain\s+done\s+16\s", status.stdout, re.M), status.stdout
    assert re.search(rf"^{FAILING}\s+pretrain\s+failed\s", status.stdout, re.M)
    assert any("error: " in line and "divisible" in line for line in lines), status.stdout
    assert "3 units: 2 done, 1 failed" in status.stdout
    assert f"--only={FAILING} --stage=pretrain" in status.stdout


def test_two_workers_run_one_sweep_root_in_a_bucket(sequential, word_shards, gcs,  # noqa: F811
                                                     tmp_path, capsys):
    """The sweep root is a ``gs://`` location (the Cloud Storage stand-in): two workers claim
    units by generation preconditions, each unit runs once, and results, report and ``status``
    equal what one worker made on a local disk."""
    from minilm_jax.storage import run_path

    _, seq_root, seq_out = sequential
    config = sweep_file(tmp_path, word_shards, run_control=AT_END)
    root = gcs.uri("sweeps", "two-workers")
    proc = run(sweep_cmd(config, root, "--workers=2"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sorted(units_started(proc.stdout)) == sorted(units_started(seq_out)), proc.stdout[-3000:]
    assert results(root) == results(seq_root)
    bucket = run_path(root)
    assert (bucket / "report" / "report.md").read_text().startswith("# Scaling study report")
    assert sorted(p.name for p in (bucket / "report").iterdir()) == sorted(
        p.name for p in (seq_root / "report").iterdir())
    assert not [p for p in (bucket / "claims").iterdir() if p.name.endswith(".json")]
    from minilm_jax.errors import UserError
    from minilm_jax.report import build_report

    with pytest.raises(UserError, match="refusing to replace"):  # a report over the sweep itself
        build_report(bucket / "results.jsonl", root)
    assert (bucket / "sweep.json").is_file()
    shown = status_of(root, capsys)
    assert re.search(r"^b\s+pretrain\s+done\s+16\s", shown, re.M), shown
    assert "3 units: 2 done, 1 failed" in shown


def can_rename_host() -> bool:
    """Whether a process can run here under another host name (``unshare --uts``: root, or a
    user namespace)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--uts", "hostname", "probe"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(can_rename_host(), reason="the worker under another host name covers a killed "
                    "worker's unit end to end (the same-host rule: tests/test_claims.py)")
def test_a_killed_workers_unit_is_resumed_by_another_bit_identically(sequential, word_shards,
                                                                      tmp_path):
    """Run ``b`` alone (the same config as in the sequential sweep), its worker killed with SIGKILL
    after the checkpoint at step 4: the next worker takes the unit over and ends where one
    uninterrupted worker ended."""
    _, seq_root, _ = sequential
    config = sweep_file(tmp_path, word_shards, ofat=(), report=False)  # b alone; no report
    root = tmp_path / "killed"
    env = sweep_env()
    first = subprocess.Popen(sweep_cmd(config, root), cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(root / "runs" / "b" / "pretrain" / "checkpoints" / "4", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert list((root / "claims").glob("*.json"))  # the dead worker's claim is left behind
    assert not (root / "runs" / "b" / "pretrain" / "summary.json").exists()
    second = run(sweep_cmd(config, root))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert "taking over pretrain of runs/b/pretrain" in second.stdout
    assert "resumed from checkpoint at step" in second.stdout
    digest = [json.loads((r / "runs" / "b" / "pretrain" / "summary.json").read_text())
              ["final_params_sha256"] for r in (seq_root, root)]
    assert digest[0] == digest[1]
    assert [r for r in results(root) if r.get("run") == "b"] == [
        r for r in results(seq_root) if r.get("run") == "b"]


@pytest.mark.skipif(not can_rename_host(), reason="needs unshare --uts to rename a worker's host")
def test_a_unit_of_a_worker_on_another_host_is_resumed_once_its_claim_goes_stale(
        sequential, word_shards, tmp_path, monkeypatch):
    """The first worker runs under the host name ``node-elsewhere`` (a SLURM node or TPU host of
    its own) and is killed after checkpoint 4; the next worker, here, cannot see that process:
    it waits until the claim has not changed for ``MINILM_CLAIM_STALE_SECONDS``, takes over the
    claim and the workdir lock, and ends bit-identical to the uninterrupted run."""
    _, seq_root, _ = sequential
    config = sweep_file(tmp_path, word_shards, ofat=(), report=False)  # b alone; no report
    root = tmp_path / "elsewhere"
    monkeypatch.setenv("MINILM_CLAIM_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("MINILM_CLAIM_STALE_SECONDS", "4")
    env = sweep_env()
    first = subprocess.Popen(["unshare", "--uts", "sh", "-c", 'hostname node-elsewhere && exec "$@"',
                              "sh", *sweep_cmd(config, root)],
                             cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    wait_for(root / "runs" / "b" / "pretrain" / "checkpoints" / "4", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    lock = json.loads((root / "runs" / "b" / "pretrain" / ".lock").read_text())
    assert lock["host"] == "node-elsewhere" and lock["pid"] == first.pid
    second = run(sweep_cmd(config, root))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert (f"taking over pretrain of runs/b/pretrain from worker node-elsewhere:{first.pid}"
            in second.stdout), second.stdout[-3000:]
    assert f"stale lock of process {first.pid} on node-elsewhere" in second.stdout
    assert "resumed from checkpoint at step" in second.stdout
    digest = [json.loads((r / "runs" / "b" / "pretrain" / "summary.json").read_text())
              ["final_params_sha256"] for r in (seq_root, root)]
    assert digest[0] == digest[1]


def test_a_sigkilled_worker_of_a_two_worker_sweep_is_taken_over_and_the_sweep_ends(sequential,
                                                                                  word_shards,
                                                                                  tmp_path):
    """``--workers=2``; the worker holding ``b``'s pre-training is killed with SIGKILL (as the
    out-of-memory killer does) after its checkpoint at step 4: the launcher reaps it at once, the
    other worker sees it gone, takes the unit over and resumes it, and the sweep ends by itself
    with the results one worker made; ``status`` never shows the dead worker running."""
    from minilm_jax.storage import process_alive
    from minilm_jax.sweep.claims import ClaimBoard
    from minilm_jax.sweep.layout import SweepLayout
    from minilm_jax.sweep.overview import unit_rows
    from minilm_jax.sweep.workers import load_config

    _, seq_root, _ = sequential
    config = sweep_file(tmp_path, word_shards, report=False)  # the same runs; no report
    root = tmp_path / "sweep"
    env = sweep_env()
    launcher = subprocess.Popen(sweep_cmd(config, root, "--workers=2"), cwd=REPO, env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(root / "runs" / "b" / "pretrain" / "checkpoints" / "4", launcher)
    board = ClaimBoard(root / "claims", root)
    victim = board.holder(root / "runs" / "b" / "pretrain")["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while process_alive(victim):  # the kill takes effect (a zombie counts as ended)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    layout = SweepLayout(root)
    rows = unit_rows(load_config(layout), layout)  # the dead worker holds nothing
    b = next(r for r in rows if (r["run"], r["stage"]) == ("b", "pretrain"))
    assert not (b["state"] == "running" and b["worker"].endswith(f":{victim}")), b
    out, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 1, out[-3000:]  # the run that fails on purpose
    assert re.search(rf"warning: sweep worker w\d \(pid {victim}\) was killed by SIGKILL", out), out
    assert f"taking over pretrain of runs/b/pretrain from worker" in out, out[-3000:]
    assert "resumed from checkpoint at step" in out
    assert results(root) == results(seq_root)
    outcome = json.loads(out[out.rindex("\n{") + 1:])
    assert sorted(outcome["workers"]) == [-signal.SIGKILL, 1]
    assert not list((root / "claims").glob("*.json"))


def test_runner_isolates_failures_skips_finished_and_resumes(sequential, word_shards, tmp_path):
    """One worker (the sequential sweep): the run that fails is recorded and the others go on;
    results rows (reference baselines, validation rows with FLOPs) and the report; downstream rows
    from both fine-tuning layouts; a re-run skips the finished run and resumes the interrupted one
    from its checkpoint."""
    import ml_collections

    from minilm_jax.sweep.layout import SweepLayout
    from minilm_jax.sweep.results import write_results
    from minilm_jax.sweep.status import SweepStatus
    from minilm_jax.sweep.worker_loop import SweepRunner

    config, seq_root, seq_out = sequential
    outcome = json.loads(seq_out[seq_out.rindex("\n{") + 1:])
    assert list(outcome["failures"]) == [FAILING]
    assert "divisible" in outcome["failures"][FAILING]["pretrain"]
    root = tmp_path / "sweep"
    shutil.copytree(seq_root, root)
    status = SweepStatus(root).read()
    assert status["b"]["pretrain"]["state"] == "done"
    rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    baselines = [r for r in rows if r["kind"] == "baseline"]  # the shard set's reference perplexities
    assert {(r["name"], r["split"]) for r in baselines} >= {("unigram", "validation"),
                                                           ("bigram", "validation")}
    rows = [r for r in rows if r["kind"] != "baseline"]
    assert {r["run"] for r in rows} == {"b", "b__hidden_dim=32"}
    validation = [r for r in rows if r["run"] == "b" and r["kind"] == "validation"]
    assert [r["step"] for r in validation] == [4, 8, 12, 16]
    assert validation[1]["flops_paper"] == pytest.approx(2 * validation[0]["flops_paper"])
    assert (root / "report" / "report.md").is_file()

    # Downstream rows come from both layouts: one init (finetune/<task>/summary.json) and both
    # inits (finetune/<task>/<init>/summary.json), found where the layout puts them.
    sweep = load_sweep(config)
    members = [{"accuracy": 59.0, "score": 59.0}, {"accuracy": 61.0, "score": 61.0}]
    scored = {"mean": {"accuracy": 60.0, "score": 60.0}, "std": {"accuracy": 1.4, "score": 1.4},
              "n": 2, "members": members}
    downstream = []
    for rel, task, init, mode in (("sst2", "sst2", "pretrained", "pretrained"),
                                  ("rte/random", "rte", "random", "both")):
        path = root / "runs" / "b" / "finetune" / rel / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"status": "completed", "task": task, "init": init,
                                    "seeds": [3, 4], "final": scored,
                                    "selected": scored,
                                    "majority": {"test": {"accuracy": 50.0, "score": 50.0}}}))
        with_task = ml_collections.ConfigDict(sweep.to_dict())
        with_task.finetune_tasks, with_task.finetune_init = (task,), mode
        rows = [json.loads(line) for line in write_results(
            SweepRunner(with_task, root).runs, SweepLayout(root), with_task)
            .read_text().splitlines()]
        downstream += [r for r in rows if r["kind"] == "downstream"]
    assert [(r["task"], r["init"]) for r in downstream] == [("sst2", "pretrained"), ("rte", "random")]
    assert all(r["seeds"] == [3, 4] and r["member_scores"] == [59.0, 61.0]
               and r["majority_score"] == 50.0 for r in downstream)
    shutil.rmtree(root / "runs" / "b" / "finetune")

    # Interrupt one run (its summary gone, checkpoints kept), then run the same sweep again:
    # the finished run is skipped, the interrupted one resumes from its checkpoint.
    (root / "runs" / "b__hidden_dim=32" / "pretrain" / "summary.json").unlink()
    first_summary = (root / "runs" / "b" / "pretrain" / "summary.json").stat().st_mtime_ns
    config = sweep_file(tmp_path, word_shards, AT_END, report=False)  # the same runs; no report
    proc = run(sweep_cmd(config, root))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]  # FAILING again
    assert "pre-training finished earlier: skipped" in proc.stdout, proc.stdout[-3000:]
    assert "resumed from checkpoint at step 16" in proc.stdout, proc.stdout[-3000:]
    assert (root / "runs" / "b" / "pretrain" / "summary.json").stat().st_mtime_ns == first_summary


def test_a_refused_sweep_command_changes_nothing_under_the_root(sequential, tmp_path, capsys):
    """Another config on a finished root is refused (one worker and two) and leaves its config,
    stage records and claims as they were: ``status`` shows no phantom units."""
    config, seq_root, _ = sequential
    root = tmp_path / "sweep"
    shutil.copytree(seq_root, root)

    def contents() -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.parts[len(root.parts)] in ("sweep.json", "status", "claims")}

    before = contents()
    for extra in ([], ["--workers=2"]):
        proc = run(sweep_cmd(config, root, "--config.num_steps=50",
                             "--config.ofat=('b:model.hidden_dim=32',)", *extra))
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("error: sweep root "), proc.stderr
        assert "trained with a different config" in proc.stderr
        assert contents() == before
    status = status_of(root, capsys)
    assert "3 units: 2 done, 1 failed" in status, status


def test_bad_claim_times_are_refused_before_anything_is_written(sequential, tmp_path,
                                                                monkeypatch):
    from minilm_jax.errors import UserError
    from minilm_jax.sweep.workers import run_worker

    config, _, _ = sequential
    sweep = load_sweep(config)
    monkeypatch.setenv("MINILM_CLAIM_STALE_SECONDS", "-1")
    with pytest.raises(UserError, match=r"^MINILM_CLAIM_STALE_SECONDS='-1': must be a positive "
                                        r"number of seconds$"):
        run_worker(sweep, tmp_path / "s")
    monkeypatch.setenv("MINILM_CLAIM_STALE_SECONDS", "5")  # below three 20 s heartbeats
    with pytest.raises(UserError, match=r"^MINILM_CLAIM_STALE_SECONDS=5 with "
                                        r"MINILM_CLAIM_HEARTBEAT_SECONDS=20: .* at least three"):
        run_worker(sweep, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_slurm_launcher_runs_workers_through_submitit(sequential, word_shards, tmp_path):
    pytest.importorskip("submitit")
    _, seq_root, _ = sequential
    config = sweep_file(tmp_path, word_shards, AT_END, report=False)  # the same runs; no report
    root = tmp_path / "sweep"
    proc = run(sweep_cmd(config, root, "--launcher=slurm", "--slurm_executor=local",
                         "--workers=2", "--wait"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"submitted 2 sweep workers: job \d+", proc.stdout), proc.stdout[-2000:]
    assert results(root) == results(seq_root)
    logs = "".join(p.read_text() for p in (root / "slurm").rglob("*_log.out"))
    assert sorted(units_started(logs)) == ["b", FAILING, "b__hidden_dim=32"]


def slurm_node_ready() -> bool:
    """Whether a SLURM controller answers here with a node that can take jobs (``sbatch`` on the
    PATH is not enough: its daemons may be down)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    states = proc.stdout.split() if proc.returncode == 0 else []
    return any(s.rstrip("*") in ("idle", "mixed") for s in states)


@pytest.mark.skipif(not slurm_node_ready(), reason="no SLURM node ready here (sinfo): "
                    "bash launch/slurm_local.sh sets one up on this machine")
@pytest.mark.timeout(1500)  # a real SLURM queue: the command's own limit is 1,200 s
def test_slurm_launcher_on_a_real_slurm(sequential, tmp_path):
    pytest.importorskip("submitit")
    config, seq_root, _ = sequential
    root = tmp_path / "sweep"
    proc = run(sweep_cmd(config, root, "--launcher=slurm", "--workers=2", "--slurm_cpus=1",
                         "--slurm_time_min=20", "--wait"), timeout=1200)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert results(root) == results(seq_root)


def test_one_failed_unit_is_retried_alone(sequential, word_shards, tmp_path, capsys):
    """The failed run (eval batch 45 on 2 devices) is retried alone on one device, where it fits,
    by a later launch; a worker of the launch it failed in (one that started late) leaves it."""
    from minilm_jax.sweep.claims import LAUNCHED_AT_ENV

    _, seq_root, _ = sequential
    config = sweep_file(tmp_path, word_shards, AT_END, report=False)  # the same runs; no report
    root = tmp_path / "sweep"
    shutil.copytree(seq_root, root)
    env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
    sibling = subprocess.run(sweep_cmd(config, root, f"--only={FAILING}", "--stage=pretrain"),
                             cwd=REPO, env={**env, LAUNCHED_AT_ENV: "0"}, capture_output=True,
                             text=True, timeout=600)
    assert sibling.returncode == 1 and units_started(sibling.stdout) == [], sibling.stdout[-3000:]
    proc = subprocess.run(sweep_cmd(config, root, f"--only={FAILING}", "--stage=pretrain"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert units_started(proc.stdout) == [FAILING], proc.stdout[-3000:]
    status = status_of(root, capsys)
    assert "3 units: 3 done" in status, status


def test_gpu_workers_get_one_gpu_each_and_the_launcher_flags_stay_with_the_launcher(monkeypatch):
    from minilm_jax.errors import UserError
    from minilm_jax.sweep.launchers import gpu_envs, worker_argv

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu_envs(0)] == ["2", "5", "7"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu_envs(2)] == ["2", "5"]
    with pytest.raises(UserError, match="has 3 GPU"):
        gpu_envs(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError, match="found no GPU"):
        gpu_envs(0)
    argv = ["sweep", "--config=sweep:a4", "--root=R", "--launcher=slurm", "--workers=8",
            "--slurm_gpus", "1", "--nowait", "--only=x", "--config.num_steps=10"]
    assert worker_argv(argv)[1:] == ["-m", "minilm_jax.sweep", "--config=sweep:a4", "--root=R",
                                     "--only=x", "--config.num_steps=10", "--launcher=local",
                                     "--workers=1"]


def test_a_stopped_worker_is_terminated_once_its_unit_was_taken_over_and_the_sweep_ends(
        sequential, word_shards, tmp_path, monkeypatch):
    """``--workers=2``; the worker holding ``b``'s pre-training is stopped with SIGSTOP after its
    checkpoint at step 4 (alive, silent): the other worker takes the unit over once its claim is
    stale and finishes every unit; the launcher then names the silent worker in one line, kills it
    (a stopped process acts on no other signal, and resuming it could let it write into the unit
    taken over) and ends by itself with the exit status and results of one uninterrupted worker."""
    from minilm_jax.sweep.claims import ClaimBoard

    _, seq_root, _ = sequential
    heartbeat, stale = 1, 5
    monkeypatch.setenv("MINILM_CLAIM_HEARTBEAT_SECONDS", str(heartbeat))
    monkeypatch.setenv("MINILM_CLAIM_STALE_SECONDS", str(stale))
    config = sweep_file(tmp_path, word_shards, report=False)  # the same runs; no report
    root = tmp_path / "sweep"
    launcher = subprocess.Popen(sweep_cmd(config, root, "--workers=2"), cwd=REPO, env=sweep_env(),
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = None
    try:
        wait_for(root / "runs" / "b" / "pretrain" / "checkpoints" / "4", launcher)
        victim = ClaimBoard(root / "claims", root).holder(root / "runs" / "b" / "pretrain")["pid"]
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        out, _ = launcher.communicate(timeout=300)  # before the fix: waits on it forever
        took = time.monotonic() - stopped_at
    finally:
        if launcher.poll() is None:  # never leave a stopped worker or its launcher behind
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 1, out[-3000:]  # the run that fails on purpose, as one worker
    named = re.findall(r"^warning: sweep worker w\d \(pid (\d+)\) has been silent for (\d+) s "
                       r"\(stopped\) after every unit was settled; terminating it", out, re.M)
    assert [int(pid) for pid, _ in named] == [victim], out[-3000:]
    # silent since the stop, give or take the launcher's one look per heartbeat
    assert stale <= int(named[0][1]) <= took + heartbeat + 1, (named, took)
    assert len([line for line in out.splitlines() if f"(pid {victim})" in line]) == 1, out[-3000:]
    taken = re.search(rf"taking over pretrain of runs/b/pretrain from worker \S+:{victim} "
                      rf"\(stale: pid {victim} alive, silent for (\d+) s\)", out)
    assert taken and int(taken.group(1)) >= stale, out[-3000:]
    assert "resumed from checkpoint at step" in out
    assert results(root) == results(seq_root)
    outcome = json.loads(out[out.rindex("\n{") + 1:])
    assert list(outcome["failures"]) == [FAILING]
    assert sorted(outcome["workers"]) == [-signal.SIGKILL, 1]
    with pytest.raises(ProcessLookupError):  # killed and reaped: no stopped process left
        os.kill(victim, 0)
    assert not list((root / "claims").glob("*.json"))  # its claim was taken over, then released
