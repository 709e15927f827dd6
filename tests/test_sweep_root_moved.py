"""A sweep root moved (renamed) while its worker trains: the worker stops with one ``error:`` line
saying the root is gone and exit status 2, writes nothing at the old path (no folder re-created,
no half-written checkpoint, no failure recorded there) and never claims another worker took its
unit over; the moved root keeps what was written before the move. With the claims' default
heartbeat the next write notices; with a short one, the heartbeat may notice first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, xla_flags

TESTS = Path(__file__).resolve().parent

# The sweep command with the pre-training's dispatch sleeping 1 s after the 4th step (checkpoint 4
# is saved just before): the move made when that checkpoint appears lands mid-run.
SLOW_SWEEP = """
import runpy, sys, time
from minilm_jax.train.pretrainer import Pretrainer as _trainer
_dispatch, _count = _trainer.dispatch, [0]
def dispatch(self, state, host_batch):
    _count[0] += 1
    if _count[0] > 4:
        time.sleep(1.0)
    return _dispatch(self, state, host_batch)
_trainer.dispatch = dispatch
sys.argv[0] = "minilm_jax.sweep"
runpy.run_module("minilm_jax.sweep", run_name="__main__", alter_sys=True)
"""


def sweep_file(tmp_path: Path, shards: Path) -> Path:
    """One tiny run of tests/test_sweep.py's sweep, 16 steps, a checkpoint every 4."""
    path = tmp_path / "one_run_sweep.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from test_sweep import tiny_sweep\n\n\n"
        "def get_config():\n"
        f"    sweep = tiny_sweep(Path({str(shards)!r}))\n"
        "    sweep.num_steps, sweep.ofat = 16, ()\n"
        "    sweep.pretrain_overrides = tuple(sweep.pretrain_overrides) + "
        "('checkpoint.every_steps=4',)\n"
        "    return sweep\n")
    return path


@pytest.mark.parametrize("heartbeat", ["", "0.3"])
def test_a_root_moved_mid_run_stops_the_worker_in_one_line(word_shards, tmp_path, heartbeat):
    root, moved = tmp_path / "root", tmp_path / "moved"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": xla_flags(1)}
    if heartbeat:
        env.update(MINILM_CLAIM_HEARTBEAT_SECONDS=heartbeat, MINILM_CLAIM_STALE_SECONDS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SWEEP, f"--config={sweep_file(tmp_path, word_shards)}",
         f"--root={root}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        start = time.monotonic()
        checkpoint = root / "runs" / "b" / "pretrain" / "checkpoints" / "4"
        while not checkpoint.is_dir():  # the event: the first checkpoint written
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - start < 300
            time.sleep(0.05)
        os.rename(root, moved)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, (proc.returncode, out[-2000:], err[-2000:])
    assert errors == [f"error: sweep root {root} is gone (moved or deleted while this command "
                      "ran): stopping; nothing more is written there"], err[-2000:]
    assert "Traceback" not in err and "taken over" not in out + err
    assert not root.exists()  # nothing re-created at the old path
    # the moved root holds what was written before the move; no failure was recorded in it
    assert (moved / "runs" / "b" / "pretrain" / "checkpoints" / "4").is_dir()
    records = [json.loads(p.read_text()) for p in (moved / "status").glob("*.json")]
    assert [(r["run"], r["stage"], r["state"]) for r in records] == [("b", "pretrain", "running")]
