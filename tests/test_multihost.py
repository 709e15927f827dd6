"""Multi-host pre-training, proved on one machine: two ``python -m minilm_jax.pretrain`` processes
on localhost (``jax.distributed`` + Gloo collectives over TCP, 2 fake CPU devices each) train like
one process with the same 4 devices, on the same shards and config.

The two-process run is preempted the way a cluster does it: SIGTERM reaches one host only. Both
processes must save the same step into the shared workdir (Orbax, every process writing its part)
and exit; the run then resumes on a different mesh: data x fsdp = 2 x 2 (parameters replicated
across the processes) before the stop, 1 x 4 (parameters sharded across the processes) after.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import trajectory_tolerance, xla_flags
from minilm_jax.train.batches import BatchIndexer
from minilm_jax.train.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
POINT = "E32-H32-I64-L1-A2-V500"
STEPS, EVAL_EVERY = 24, 12
BATCH, EVAL_BATCH = 16, 48  # 100 validation/test rows: the last evaluation batch is padded
DEVICES_PER_PROCESS = 2
# The processes reduce gradients in another order (Gloo across processes, XLA within), so values
# agree to float32 rounding, not bit for bit (measured: <= 2e-7 relative): trajectory_tolerance
# (tests/conftest.py) over a step's reductions: a weight gradient sums over BATCH x 64 positions;
# the 500-way logsumexp; the layer's hidden and ffn widths; attention over 64 positions.
STEP_TERMS = BATCH * 64 + 500 + 32 + 64 + 64
TIMEOUT_S = 240  # per stage; a stuck collective must never hang the test suite
STOP_TIMEOUT_S = 90  # from the SIGTERM to both processes' exit

# Runs the real entry point, recording which shard rows this process reads (split size, rows).
DRIVER = r"""
import json, os, runpy, sys
import minilm_jax.train.batches as batches
_load_rows, _log = batches.load_rows, open(os.environ["MINILM_TEST_ROW_LOG"], "a")
def load_rows(split, rows, pad_id):
    _log.write(json.dumps([int(split.num_sequences), [int(r) for r in rows]]) + "\n")
    _log.flush()
    return _load_rows(split, rows, pad_id)
batches.load_rows = load_rows
sys.argv[0] = "minilm_jax.pretrain"
runpy.run_module("minilm_jax.pretrain", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def distributed_flags(distributed) -> list[str]:
    """The ``--config.distributed.*`` flags of process ``process_id`` of ``num_processes``, with
    the coordinator on localhost:``port``."""
    port, process_id, num_processes = distributed
    return ["--config.distributed.initialize=True",
            f"--config.distributed.coordinator_address=localhost:{port}",
            f"--config.distributed.num_processes={num_processes}",
            f"--config.distributed.process_id={process_id}"]


def start(name, tmp_path, args, *, devices, env=None):
    """Start ``python args...`` with ``devices`` fake CPU devices (and ``env`` added); its
    stdout+stderr go to ``<tmp>/<name>.log``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
           "XLA_FLAGS": xla_flags(devices), **(env or {})}
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.name, proc.log_path = name, log_path
    return proc


def launch(name, tmp_path, shards, workdir, *, devices, mesh, distributed=None):
    """Start one pre-training process; its stdout+stderr go to ``<tmp>/<name>.log``."""
    args = ["-c", DRIVER, f"--config=configs/pretrain.py:{POINT}",
            f"--workdir={workdir}", f"--config.data.shards={shards}", "--config.model.max_len=64",
            f"--config.train.num_steps={STEPS}", f"--config.train.batch_size={BATCH}",
            "--config.train.log_every=1", "--config.optim.warmup_steps=4",
            f"--config.eval.every_steps={EVAL_EVERY}", f"--config.eval.batch_size={EVAL_BATCH}",
            f"--config.checkpoint.every_steps={EVAL_EVERY}", "--config.mlm.max_predictions=16",
            f"--config.mesh.data={mesh[0]}", f"--config.mesh.fsdp={mesh[1]}",
            "--config.train.peak_flops=1e12", "--config.train.progress=False"]
    if distributed is not None:
        args += distributed_flags(distributed)
    return start(name, tmp_path, args, devices=devices,
                 env={"MINILM_TEST_ROW_LOG": str(tmp_path / f"{name}.rows.jsonl")})


def output(proc) -> str:
    return proc.log_path.read_text(errors="replace")


def fail_with_logs(procs, what: str) -> None:
    noise = re.compile(r"\[Gloo\]|[WI]\d{4} ")  # connection chatter, warnings, compile logs
    logs = []
    for p in procs:
        lines = [line for line in output(p).splitlines() if not noise.match(line)]
        logs.append(f"----- {p.name} (exit {p.poll()}) -----\n" + "\n".join(lines)[-5000:])
    pytest.fail(what + "\n" + "\n".join(logs), pytrace=False)


def kill_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_stage(procs, timeout_s: float = TIMEOUT_S) -> None:
    """Wait for every process of a stage to exit 0 within ``timeout_s``; never leave one behind."""
    try:
        wait_all(procs, time.monotonic() + timeout_s)
    finally:
        kill_all(procs)


def wait_all(procs, deadline: float, until=None, waiting_for="the processes to finish") -> None:
    """Wait for every process to exit 0 (or for ``until()``); on a failure or past the deadline,
    SIGKILL them all and fail with their output."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [p for p, c in zip(procs, codes) if c not in (None, 0)]
        if failed:
            kill_all(procs)
            fail_with_logs(procs, f"{failed[0].name} exited with status {failed[0].returncode}")
        if time.monotonic() > deadline:
            kill_all(procs)
            fail_with_logs(procs, f"timed out waiting for {waiting_for}")
        if (until() if until else all(c == 0 for c in codes)):
            return
        time.sleep(0.05)


def records(workdir, split):
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return {}
    return {r["step"]: r for r in read_metrics(path) if r["split"] == split}


def row_reads(path):
    return [tuple(json.loads(line)) for line in Path(path).read_text().splitlines()]


def check_own_rows(reads, process, num_processes, *, first_step, min_steps, train_size):
    """Process ``process`` read exactly its block of each global train batch (from ``first_step``
    on, in order; the prefetcher may read a few batches past a stop) and of each eval batch."""
    def block(rows):
        per = len(rows) // num_processes
        return [int(r) for r in rows[process * per:(process + 1) * per]]

    indexer = BatchIndexer(0, train_size, BATCH)
    train = [rows for size, rows in reads if size == train_size]
    assert len(train) >= min_steps
    assert train == [block(indexer.indices(first_step + k)) for k in range(len(train))]
    for size, rows in reads:
        if size == train_size:
            continue
        batches = [np.concatenate([np.arange(s, min(s + EVAL_BATCH, size)),
                                   np.full(max(0, s + EVAL_BATCH - size), s)])
                   for s in range(0, size, EVAL_BATCH)]  # the padded eval batches of the split
        assert rows in [block(b) for b in batches], (
            f"process {process} read evaluation rows {rows}, not just its block of an evaluation "
            "batch (Pretrainer.evaluate should load rows through batches.eval_batch)")
    return sum(size != train_size for size, _ in reads)


def test_two_processes_train_like_one_and_survive_preemption(word_shards, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_size = int(json.loads((word_shards / "manifest.json").read_text())
                     ["splits"]["train"]["num_sequences"])

    # Stage 1: the reference (one process, 4 devices) and two processes (2 devices each) at once;
    # after step 3, SIGTERM reaches process 1 only.
    port = free_port()
    stage1 = [launch(f"two-{i}", tmp_path, word_shards, two, devices=DEVICES_PER_PROCESS,
                     mesh=(2, 2), distributed=(port, i, 2)) for i in range(2)]
    reference = launch("one", tmp_path, word_shards, one, devices=2 * DEVICES_PER_PROCESS,
                       mesh=(2, 2))
    everything = stage1 + [reference]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        wait_all(stage1, deadline, until=lambda: max(records(two, "train"), default=0) >= 3,
                 waiting_for="step 3")
        stage1[1].send_signal(signal.SIGTERM)
        # Both must save and exit within seconds: a process stopping alone deadlocks the other.
        wait_all(stage1, min(deadline, time.monotonic() + STOP_TIMEOUT_S),
                 waiting_for="both processes to save and exit after SIGTERM reached process 1")
        wait_all([reference], deadline)
    finally:
        kill_all(everything)
    stops = [re.findall(r"received SIGTERM: saved checkpoint at step (\d+); exiting", output(p))
             for p in stage1]
    assert stops[0] and stops[0] == stops[1], f"the processes stopped apart: {stops}"
    stopped = int(stops[0][0])
    assert 3 <= stopped < STEPS
    summary = json.loads((two / "summary.json").read_text())  # written by process 0 alone
    assert summary["status"] == "preempted" and summary["step"] == stopped
    assert (two / "checkpoints" / str(stopped)).is_dir()
    for i in range(2):
        assert f"distributed: process {i} of 2, 2 local of 4 devices" in output(stage1[i])
        check_own_rows(row_reads(tmp_path / f"two-{i}.rows.jsonl"), i, 2, first_step=0,
                       min_steps=stopped, train_size=train_size)

    # Stage 2: resume both processes from that checkpoint, parameters now sharded across them.
    port = free_port()
    stage2 = [launch(f"two-{i}-resumed", tmp_path, word_shards, two, devices=DEVICES_PER_PROCESS,
                     mesh=(1, 4), distributed=(port, i, 2)) for i in range(2)]
    run_stage(stage2)
    for i in range(2):
        assert f"resumed from checkpoint at step {stopped}" in output(stage2[i])
        evals = check_own_rows(row_reads(tmp_path / f"two-{i}-resumed.rows.jsonl"), i, 2,
                               first_step=stopped, min_steps=STEPS - stopped,
                               train_size=train_size)
        assert evals >= 6  # at least validation at step 24 and test at the end, 3 batches each

    # Same loss at every step, same validation and test results.
    ref_train, got_train = records(one, "train"), records(two, "train")
    assert sorted(got_train) == sorted(ref_train) == list(range(1, STEPS + 1))
    ref_losses = np.array([ref_train[s]["loss"] for s in range(1, STEPS + 1)])
    got_losses = np.array([got_train[s]["loss"] for s in range(1, STEPS + 1)])
    rel = np.abs(got_losses - ref_losses) / ref_losses
    print(f"\nstopped at step {stopped}; train loss: max relative difference {rel.max():.2e} over "
          f"steps 1-{STEPS}")
    np.testing.assert_allclose(got_losses, ref_losses, rtol=0,
                               atol=trajectory_tolerance(ref_losses.max(), STEP_TERMS, STEPS))
    assert sorted(records(two, "validation")) == sorted(records(one, "validation")) == [12, 24]
    assert sorted(records(two, "test")) == sorted(records(one, "test")) == [STEPS]
    for split in ("validation", "test"):
        ref, got = records(one, split), records(two, split)
        for step in ref:
            assert got[step]["sequences"] == ref[step]["sequences"] == 100
            assert got[step]["predictions"] == ref[step]["predictions"]  # the same masks
            # a perplexity's relative error is its loss's absolute error; the evaluation sums
            # over its predictions too
            rel = trajectory_tolerance(np.log(ref[step]["perplexity"]),
                                       STEP_TERMS + ref[step]["predictions"], step + 1)
            assert got[step]["perplexity"] == pytest.approx(ref[step]["perplexity"], rel=rel)
            print(f"{split} perplexity at step {step}: one process {ref[step]['perplexity']:.6f}, "
                  f"two processes {got[step]['perplexity']:.6f}")

    ref_summary = json.loads((one / "summary.json").read_text())
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == STEPS
    assert summary["num_devices"] == ref_summary["num_devices"] == 4
    assert summary["best"]["step"] == ref_summary["best"]["step"]
    best, step = ref_summary["best"]["validation_perplexity"], ref_summary["best"]["step"]
    rel = trajectory_tolerance(np.log(best), STEP_TERMS + records(one, "validation")[step]
                               ["predictions"], step + 1)  # as the perplexities above
    assert summary["best"]["validation_perplexity"] == pytest.approx(best, rel=rel)
    assert len(summary["final_params_sha256"]) == 64  # gathered from both processes
    assert {p.name for p in (two / "checkpoints").iterdir()} == {str(stopped), "12", "24"}
