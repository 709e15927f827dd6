"""Run locations on object stores: whole-object writes and rewritten metrics files."""

import json
import os

import pytest

from minilm_jax import storage
from minilm_jax.storage import atomic_write_json
from minilm_jax.train import run_log as metrics_lib


def test_remote_locations_are_recognised():
    assert storage.is_remote("gs://bucket/run") and not storage.is_remote("runs/x")
    assert str(storage.run_path("gs://bucket/run/config.json")) == "gs://bucket/run/config.json"


def test_metrics_on_an_object_store_are_rewritten_whole(tmp_path, monkeypatch):
    """Object stores cannot append: records are kept and the file is rewritten at each flush,
    after reading what an earlier session wrote (resume)."""
    monkeypatch.setattr(metrics_lib, "is_remote", lambda location: True)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train"}) + "\n")
    writer = metrics_lib.MetricsWriter(tmp_path)
    assert writer._tb is None
    writer.write(2, "train", {"loss": 1.5})
    writer.flush()
    writer.write(3, "validation", {"loss": 1.2})
    writer.close()
    records = metrics_lib.read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (3, "validation")]


def test_atomic_write_to_a_url_is_one_whole_write(monkeypatch, tmp_path):
    written = {}

    class FakeRemote:
        def __init__(self, location):
            self.location = location

        @property
        def parent(self):
            return self

        def mkdir(self, **_):
            pass

        def write_bytes(self, data):
            written[self.location] = data

    monkeypatch.setattr(storage, "run_path", FakeRemote)
    atomic_write_json("gs://bucket/run/summary.json", {"a": 1})
    assert json.loads(written["gs://bucket/run/summary.json"]) == {"a": 1}


def _lock_file(directory, pid, host=None):
    import socket
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".lock").write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                                 "since": 0.0}))


def test_workdir_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path, capsys):
    import subprocess
    import sys

    from minilm_jax.errors import UserError
    from minilm_jax.storage import WorkdirLock

    lock = WorkdirLock(tmp_path / "run").acquire()
    assert lock.acquire().held  # re-entrant for its owner
    lock.release()
    assert not (tmp_path / "run" / ".lock").exists()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path / "busy", sleeper.pid)
        with pytest.raises(UserError, match=f"in use by process {sleeper.pid}"):
            WorkdirLock(tmp_path / "busy").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with WorkdirLock(tmp_path / "busy") as taken:  # the owner is gone: stale
        assert taken.held
    assert "stale lock" in capsys.readouterr().out
    _lock_file(tmp_path / "elsewhere", 123, host="another-host")
    with pytest.raises(UserError, match="on host another-host; if that process is gone, delete"):
        WorkdirLock(tmp_path / "elsewhere").acquire()


@pytest.mark.parametrize("remote", [False, True])
def test_undecodable_metrics_lines_are_dropped_like_garbled_ones(tmp_path, monkeypatch, remote):
    """A metrics.jsonl line that is not UTF-8 (a torn write, a disk error) is skipped by
    read_metrics and dropped and counted by truncate_after, as an unparseable ASCII line is; the
    valid records around it are kept byte for byte."""
    if remote:
        monkeypatch.setattr(metrics_lib, "is_remote", lambda location: True)
    first = json.dumps({"step": 1, "split": "train", "loss": 2.5}).encode()
    second = json.dumps({"step": 2, "split": "train", "loss": 2.0}).encode()
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(first + b"\n" + b"\xff\xfe{\"step\": 1\x80\n" + second + b"\n")
    assert [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(path)] == [(1, 2.5), (2, 2.0)]
    # A JSON line with one bad byte inside a string is undecodable too, not a record.
    path.write_bytes(first + b"\n" + b'{"step": 1, "split": "tr\xe9in"}\n' + second + b"\n")
    assert [(r["step"], r["split"]) for r in metrics_lib.read_metrics(path)] == [(1, "train"),
                                                                                (2, "train")]
    writer = metrics_lib.MetricsWriter(path.parent, tensorboard=False)
    dropped = writer.truncate_after(2)  # the undecodable line, as a garbled one would be
    assert (dropped.total, dropped.later, dropped.lost) == (
        1, 0, ("line 2, between the records of steps 1 and 2",))
    writer.close()
    assert path.read_bytes() == first + b"\n" + second + b"\n"
    path.write_bytes(first + b"\n" + b"\xff\xfe\n" + b"not json\n" + second + b"\n")
    writer = metrics_lib.MetricsWriter(path.parent, tensorboard=False)
    dropped = writer.truncate_after(1)  # both bad lines and the record after step 1
    assert (dropped.total, dropped.later, dropped.lost, dropped.unsure) == (
        3, 1, (), ("line 2, after the record of step 1", "line 3, after the record of step 1"))
    writer.close()
    assert path.read_bytes() == first + b"\n"


def test_stale_temporary_folders_are_those_of_dead_processes_on_this_host(tmp_path, capsys):
    import subprocess
    import sys

    from minilm_jax.storage import owned_temp_dir, remove_stale_temps

    mine = owned_temp_dir(tmp_path, "out", "tmp")
    assert mine.name.startswith(".out.tmp-") and f"-{os.getpid()}-" in mine.name
    assert mine.stat().st_mode & 0o777 == 0o700
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # that process has exited
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)
    try:
        host = mine.name[len(".out.tmp-"):].rsplit("-", 2)[0]  # this host, as names carry it
        stale = [tmp_path / f".out.old-{host}-{dead}-89abcdef",
                 tmp_path / f".out.tmp-{host}-{dead}-0123abcd"]
        live = tmp_path / f".out.tmp-{host}-{sleeper.pid}-0123abcd"
        elsewhere = tmp_path / f".out.tmp-another-host-{dead}-0123abcd"
        legacy = tmp_path / ".out.tmp-k2j_9x0a"
        others = [tmp_path / f".other.tmp-{host}-{dead}-0123abcd",
                  tmp_path / f".out.log-{host}-{dead}-0123abcd", tmp_path / "out"]
        for path in [*stale, live, elsewhere, legacy, *others]:
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "data").write_bytes(b"x" * 100)
        assert remove_stale_temps(tmp_path, "out", ("tmp", "old")) == sorted(stale)
        assert all(p.is_dir() for p in (mine, live, elsewhere, legacy, *others))
        assert not any(p.exists() for p in stale)
        err = capsys.readouterr().err
        assert f"note: removed {stale[0]}, left by process {dead} (no longer running)" in err
        assert f"note: {legacy} is a temporary folder of an earlier version" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temps(tmp_path, "out", ("tmp",)) == [live]  # its owner is gone now
    assert remove_stale_temps(tmp_path / "missing", "out", ("tmp",)) == []


def test_per_member_lists_are_one_tensorboard_curve_each(tmp_path):
    """A list value (one per fine-tuning member) is in metrics.jsonl as a list and in TensorBoard
    as one scalar curve per member."""
    import struct

    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    writer = metrics_lib.MetricsWriter(tmp_path)
    writer.write(3, "train", {"loss": 0.5, "member_loss": [0.25, 0.75], "flag": True})
    writer.close()
    tags = {}
    for path in (tmp_path / "tensorboard").iterdir():
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    tags[value.tag] = value.simple_value
    assert tags == {"train/loss": 0.5, "train/member_loss/member_0": 0.25,
                    "train/member_loss/member_1": 0.75, "train/flag": 1.0}
    assert metrics_lib.read_metrics(tmp_path / "metrics.jsonl")[0]["member_loss"] == [0.25, 0.75]
