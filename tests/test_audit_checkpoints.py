"""Audit of which checkpoints are kept and read, and of the storage helpers under them
(minilm_jax/train/checkpoint.py, minilm_jax/storage.py), 2026-11-29: 40 mutants planted, 16
survived the suite before this file (of the 29 run against it; the 11 storage.py ones were not);
each test here checks counts, steps, bytes or hashes against a hand count, hashlib or a scripted
clock; every one of the 40 is caught by the suite with this file.

Cost: about a dozen tiny Orbax saves (a 4-float state); everything else is files and JSON."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import pytest

from minilm_jax import storage
from minilm_jax.errors import UserError
from minilm_jax.train import checkpoint, seal
from minilm_jax.train.checkpoint import (CheckpointError, Checkpoints, find_checkpoint,
                                         published_best)


def small_state(value: float) -> dict[str, Any]:
    return {"w": jnp.full((4,), value, jnp.float32)}


def digits(folder: Path) -> list[int]:
    """The step folders in ``folder``, ascending."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def open_checkpoints(root: Path, **kwargs: Any) -> Checkpoints:
    options: dict[str, Any] = dict(keep=2, every_steps=10, every_minutes=60, keep_best=True)
    options.update(kwargs)
    return Checkpoints(root, **options)


# ------------------------------------------------------------------ keep N, snapshots, identity
def test_keep_two_snapshots_at_their_steps_and_the_identity_sealed(tmp_path: Path) -> None:
    """keep=2 of three saves leaves the newest two; snapshots only at the listed steps (given
    unsorted, with a duplicate); each step seals the run's identity; step:N finds a snapshot that
    the regular checkpoints no longer keep."""
    identity = {"seed": 3, "train.num_steps": 6}
    ckpts = open_checkpoints(tmp_path, snapshot_steps=(4, 2, 4), identity=identity,
                             keep_best=False)
    for step in (2, 4, 6):
        ckpts.save(step, small_state(float(step)))
        ckpts.save_snapshot(step, small_state(float(step)))
    ckpts.close()
    assert ckpts.saved_steps() == [4, 6]
    assert digits(tmp_path / "checkpoints") == [4, 6]
    assert digits(tmp_path / "snapshots") == [2, 4]
    assert seal.verify(tmp_path / "checkpoints" / "6").identity == identity
    assert seal.verify(tmp_path / "snapshots" / "2").identity == identity
    assert find_checkpoint(tmp_path, "step:2") == (2, tmp_path / "snapshots" / "2" / "default")
    assert find_checkpoint(tmp_path, "step:6") == (6, tmp_path / "checkpoints" / "6" / "default")


# ------------------------------------------------------------------ save points by a scripted clock
def test_save_points_by_count_and_by_a_scripted_clock(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """every_steps=5 and every_minutes=1: a multiple of 5 is due at once; another step only after
    60 s (60.0 exactly is due); a save restarts the 60 s."""
    now = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: now[0])
    ckpts = open_checkpoints(tmp_path, every_steps=5, every_minutes=1.0, keep_best=False)
    monkeypatch.setattr(ckpts, "_write", lambda *args: None)  # no Orbax: only the clock
    answers = []
    for elapsed, step in ((1.0, 5), (1.0, 3), (59.9, 3), (60.0, 3)):
        now[0] = 1000.0 + elapsed
        answers.append(ckpts.due(step))
    assert answers == [True, False, False, True]
    ckpts.save(3, None)  # at t=1060
    now[0] = 1000.0 + 60.0 + 59.0
    assert not ckpts.due(7)
    now[0] = 1000.0 + 60.0 + 60.0
    assert ckpts.due(7)


# ------------------------------------------------------------------ a step saved again
def test_an_unsealed_step_is_written_again_not_kept(tmp_path: Path) -> None:
    """Saving a step that exists unsealed (killed before its seal) replaces it and seals it: the
    new state is what is read back, and the old copy is quarantined; the manager forgets it."""
    ckpts = open_checkpoints(tmp_path, keep_best=False)
    ckpts.save(4, small_state(1.0))
    (tmp_path / "checkpoints" / "4" / seal.SEAL_NAME).unlink()
    ckpts.save(4, small_state(7.0))
    assert seal.verify(tmp_path / "checkpoints" / "4").ok
    step, state = ckpts.restore_latest({"w": jnp.zeros((4,), jnp.float32)})
    assert step == 4 and state["w"].tolist() == [7.0] * 4
    assert ckpts.saved_steps() == [4]
    ckpts.close()


def test_restore_takes_the_newest_of_unsealed_steps_and_forgets_a_quarantined_one(
        tmp_path: Path) -> None:
    """No step sealed: the newest unsealed (4, not 2) is restored. Then a corrupt newest (6) is
    quarantined and the manager's list drops it (3 steps kept by keep=3, 2 left)."""
    ckpts = open_checkpoints(tmp_path, keep=3, keep_best=False)
    for step in (2, 4):
        ckpts.save(step, small_state(float(step)))
        (tmp_path / "checkpoints" / str(step) / seal.SEAL_NAME).unlink()
    target = {"w": jnp.zeros((4,), jnp.float32)}
    step, state = open_checkpoints(tmp_path, keep=3, keep_best=False).restore_latest(target)
    assert step == 4 and state["w"].tolist() == [4.0] * 4
    shutil.copytree(tmp_path / "checkpoints" / "4", tmp_path / "checkpoints" / "6")
    seal.write_seal(tmp_path / "checkpoints" / "6", None)
    (tmp_path / "checkpoints" / "6" / "default" / "stray").write_text("x")  # corrupt
    reopened = open_checkpoints(tmp_path, keep=3, keep_best=False)
    assert reopened.saved_steps() == [2, 4, 6]
    assert reopened.restore_latest(target)[0] == 4
    assert reopened.saved_steps() == [2, 4]
    assert digits(tmp_path / "checkpoints") == [2, 4]


# ------------------------------------------------------------------ best: publishing and reading
def test_a_best_at_an_earlier_step_replaces_a_later_one(tmp_path: Path) -> None:
    """A resumed run (best published at 6 on close, resumed from 4) finds a better step 5: best/
    holds 5 alone and its metrics are read, not the stale 6's."""
    ckpts = open_checkpoints(tmp_path)
    ckpts.save_best(6, small_state(6.0), {"loss": 2.0})
    ckpts.save_best(5, small_state(5.0), {"loss": 1.0})
    assert digits(tmp_path / "best") == [5]
    assert ckpts.best_metrics() == {"loss": 1.0}
    assert find_checkpoint(tmp_path, "best") == (5, tmp_path / "best" / "5" / "state")


def test_best_readers_take_the_newest_of_several_and_hold_the_identity(tmp_path: Path) -> None:
    """best/ with steps 4 and 6 (both sealed, then both unsealed): published_best and
    restore_best give 6. A best of another config is refused; a resumable field may differ."""
    identity = {"seed": 0, "train.num_steps": 8}
    ckpts = open_checkpoints(tmp_path, identity=identity)
    ckpts.save_best(4, small_state(4.0), {"loss": 2.0})
    ckpts.close()
    shutil.copytree(tmp_path / "best" / "4", tmp_path / "best" / "6")
    assert published_best(tmp_path) == (6, tmp_path / "best" / "6" / "state")
    for step in (4, 6):
        (tmp_path / "best" / str(step) / seal.SEAL_NAME).unlink()
    assert published_best(tmp_path) == (6, tmp_path / "best" / "6" / "state")
    target = {"w": jnp.zeros((4,), jnp.float32)}
    assert open_checkpoints(tmp_path, identity=identity).restore_best(target)[0] == 6
    shutil.rmtree(tmp_path / "best" / "6")
    seal.write_seal(tmp_path / "best" / "4", identity)
    resumed = open_checkpoints(tmp_path, identity={"seed": 0, "train.num_steps": 16},
                               resumable=("train.num_steps",))
    assert resumed.best_metrics() == {"loss": 2.0}
    other = open_checkpoints(tmp_path, identity={"seed": 1, "train.num_steps": 8})
    with pytest.raises(CheckpointError, match="different config"):
        other.best_metrics()


# ------------------------------------------------------------------ the on-disk layout (no Orbax)
def _step(folder: Path, step: int, inner: str | None, sealed: bool) -> None:
    path = folder / str(step)
    (path / inner).mkdir(parents=True) if inner else path.mkdir(parents=True)
    if sealed:
        seal.write_seal(path, None)


def test_readers_skip_step_folders_without_their_state(tmp_path: Path) -> None:
    """A step folder with no default/ (checkpoints) or state/ (best) is not a checkpoint, even
    when it is the newest: nothing sealed, the newest folder that holds a state is taken."""
    _step(tmp_path / "checkpoints", 4, "default", sealed=False)
    _step(tmp_path / "checkpoints", 8, None, sealed=False)
    assert find_checkpoint(tmp_path, "latest") == (4, tmp_path / "checkpoints" / "4" / "default")
    _step(tmp_path / "best", 3, "state", sealed=False)
    _step(tmp_path / "best", 7, None, sealed=False)
    assert published_best(tmp_path) == (3, tmp_path / "best" / "3" / "state")


@pytest.mark.parametrize("config", [None, {"checkpoint.keep_best": True}])
def test_an_unknown_or_split_less_config_never_falls_back_from_best(tmp_path: Path,
                                                                    config: dict | None) -> None:
    """No config.json (unknown) or one without data.eval_split (default: a split): best is
    expected, so an unfinished run with no best/ is an error, not its newest step."""
    _step(tmp_path / "checkpoints", 4, "default", sealed=True)
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no evaluated best checkpoint"):
        find_checkpoint(tmp_path, "best")
    assert find_checkpoint(tmp_path, "latest")[0] == 4


# ------------------------------------------------------------------ saving errors, in a few words
def test_the_storage_cause_of_a_write_error() -> None:
    """The OS error code in a TensorStore message (quoted or not) becomes os.strerror and the
    file; a plain OSError gives its strerror and file name."""
    for code in ("28", "'28'"):
        err = RuntimeError(f'Failed writing "/run/checkpoints/4/d/x": os_error_code={code} ...')
        assert checkpoint._storage_cause(err) == f"{os.strerror(28)}: /run/checkpoints/4/d/x"
    err = OSError(27, "File too large", "/run/checkpoints/4/default/y")
    assert checkpoint._storage_cause(err) == "File too large: /run/checkpoints/4/default/y"


# ------------------------------------------------------------------ storage helpers
def test_locations_relative_to_a_root_local_and_remote(tmp_path: Path) -> None:
    assert storage.is_remote("s3://b/run") and storage.is_remote("gs://b/run")
    assert not storage.is_remote(tmp_path)
    assert storage.relative_location("gs://b/run/a/b.json", "gs://b/run/") == "a/b.json"
    assert storage.relative_location("gs://b/run/a/b.json", "gs://b/run") == "a/b.json"
    assert storage.relative_location(tmp_path / "a" / "b", tmp_path) == "a/b"
    with pytest.raises(ValueError):
        storage.relative_location("gs://b/runs/x", "gs://b/run")


class _FakeBucketPath:
    """A stand-in for an ``epath.Path`` under gs://: str, / and walk over a fixed listing."""

    def __init__(self, location: str):
        self.location = location.rstrip("/")

    def __str__(self) -> str:
        return self.location

    def __truediv__(self, name: str) -> "_FakeBucketPath":
        return _FakeBucketPath(f"{self.location}/{name}")

    def walk(self) -> list[tuple[str, list[str], list[str]]]:
        bare = self.location.split("://", 1)[1]
        return [(bare, ["sub"], ["top.json"]), (f"{bare}/sub", [], ["a.bin", "b.bin"])]


def test_files_under_a_bucket_are_keyed_relative_to_its_root(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "run_path", _FakeBucketPath)
    files = storage.files_under("gs://b/run")
    assert {k: str(v) for k, v in files.items()} == {
        "top.json": "gs://b/run/top.json", "sub/a.bin": "gs://b/run/sub/a.bin",
        "sub/b.bin": "gs://b/run/sub/b.bin"}


def test_file_sha256_reads_every_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5
    (tmp_path / "f").write_bytes(data)
    assert storage.file_sha256(tmp_path / "f", chunk=7) == hashlib.sha256(data).hexdigest()


def test_atomic_json_is_sorted_follows_the_umask_and_leaves_no_temporary(tmp_path: Path) -> None:
    obj = {"b": [1, 2], "a": {"d": 1, "c": 2}}
    old = os.umask(0o027)
    try:
        storage.atomic_write_json(tmp_path / "x.json", obj)
    finally:
        os.umask(old)
    expected = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    assert (tmp_path / "x.json").read_bytes() == expected
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640
    with pytest.raises(TypeError):
        storage.atomic_write_bytes(tmp_path / "y.bin", "not bytes")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_bucket_listings_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    fsspec_config = pytest.importorskip("fsspec.config")
    monkeypatch.setattr(fsspec_config, "conf", {"s3": {"anon": True}})
    storage._uncached_listings.__wrapped__()
    assert {p: c.get("use_listings_cache") for p, c in fsspec_config.conf.items()} == {
        "gs": False, "gcs": False, "s3": False}
    assert fsspec_config.conf["s3"]["anon"] is True


def test_a_lock_taken_over_by_another_process_is_not_removed_by_the_old_owner(
        tmp_path: Path) -> None:
    lock = storage.WorkdirLock(tmp_path).acquire()
    other = {"host": "another-host", "pid": os.getpid() + 1, "since": 0.0}
    (tmp_path / storage.LOCK_NAME).write_text(json.dumps(other))
    lock.release()
    assert json.loads((tmp_path / storage.LOCK_NAME).read_text()) == other
    assert not storage.process_alive(0) and not storage.process_alive(-1)
    assert storage.process_alive(os.getpid())


def test_a_model_is_loaded_from_an_unsealed_step_but_not_a_corrupt_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_model_state reads an unsealed step (it predates seals) and refuses a corrupt one; the
    model's shapes are scripted (a 4-float parameter), the restore is Orbax's."""
    import types

    import jax

    shapes = ({"w": jax.ShapeDtypeStruct((4,), jnp.float32)}, {})
    monkeypatch.setattr(checkpoint, "encoder_factory", lambda arch: None)
    monkeypatch.setattr(checkpoint, "_host_shapes", lambda model, factory, part: shapes)
    ckpts = open_checkpoints(tmp_path, keep_best=False)
    ckpts.save(4, {"params": {"w": jnp.arange(4, dtype=jnp.float32)}, "step": jnp.ones(())})
    ckpts.close()
    step_dir, model = tmp_path / "checkpoints" / "4", types.SimpleNamespace(arch="scripted")
    (step_dir / seal.SEAL_NAME).unlink()
    loaded = checkpoint.load_model_state(step_dir / "default", model=model)
    assert loaded["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    seal.write_seal(step_dir, None)
    (step_dir / "default" / "stray").write_text("x")
    with pytest.raises(CheckpointError, match="is corrupt"):
        checkpoint.load_model_state(step_dir / "default", model=model)
