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

from conftest import REPO, slow_pretrain_script, xla_flags
from test_sweep_workers import sweep_file

# The sweep with the pre-training's dispatch sleeping 1 s after the 4th step (checkpoint 4 is saved
# just before): the move made when that checkpoint appears lands mid-run.
SLOW_SWEEP = slow_pretrain_script("minilm_jax.train.pretrainer:Pretrainer", 4, "minilm_jax.sweep")


def one_run_sweep(tmp_path: Path, shards: Path) -> Path:
    """One tiny run of tests/test_sweep.py's sweep, 16 steps, a checkpoint every 4."""
    return sweep_file(tmp_path, shards, ("checkpoint.every_steps=4",), ofat=())


@pytest.mark.parametrize("heartbeat", ["", "0.3"])
def test_a_root_moved_mid_run_stops_the_worker_in_one_line(word_shards, tmp_path, heartbeat):
    root, moved = tmp_path / "root", tmp_path / "moved"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": xla_flags(1)}
    if heartbeat:
        env.update(MINILM_CLAIM_HEARTBEAT_SECONDS=heartbeat, MINILM_CLAIM_STALE_SECONDS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SWEEP, f"--config={one_run_sweep(tmp_path, word_shards)}",
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


@pytest.fixture
def held_root(tmp_path: Path):
    """A sweep root held as a worker holds it, with one level below it made."""
    from minilm_jax import held_folders

    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    held_folders.hold(root, "sweep root")
    yield root
    held_folders.release(root)


@pytest.mark.parametrize("write", ["folder", "atomic", "exclusive", "metrics"])
def test_a_root_moved_between_the_check_and_the_write_is_not_created_again(
        held_root, tmp_path, monkeypatch, write):
    """The race a loaded machine meets: the check passes, then the root is moved before the write
    makes its folders. Every kind of write says the root is gone (its one line) and nothing
    stands at the old path; the moved root holds no folder the write would have made."""
    from minilm_jax import exclusive_files, held_folders, storage
    from minilm_jax.train.run_log import MetricsWriter

    moved, run = tmp_path / "moved", held_root / "runs" / "b" / "pretrain"
    writer = None
    if write == "metrics":  # a run writing its metrics: its folder exists before the move
        run.mkdir(parents=True)
        writer = MetricsWriter(run, tensorboard=False)
    real_check = held_folders.check

    def check_then_move() -> None:
        real_check()
        if held_root.exists():
            os.rename(held_root, moved)

    monkeypatch.setattr(held_folders, "check", check_then_move)
    with pytest.raises(held_folders.FolderGone) as gone:
        if write == "folder":
            storage.make_folder(run / "checkpoints")
        elif write == "atomic":
            storage.atomic_write_json(run / "summary.json", {"status": "running"})
        elif write == "exclusive":
            exclusive_files.create(held_root / "claims" / "b.json", b"{}")
        else:
            writer.write(5, "train", {"loss": 1.0})
    assert str(gone.value) == (f"sweep root {held_root} is gone (moved or deleted while this "
                               "command ran): stopping; nothing more is written there")
    assert not held_root.exists() and moved.is_dir()
    made = sorted(str(p.relative_to(moved)) for p in moved.rglob("*"))
    assert made == (["runs", "runs/b", "runs/b/pretrain"] if write == "metrics" else ["runs"])
