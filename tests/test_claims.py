"""Sweep claims on a local folder and in a ``gs://`` bucket (the Cloud Storage stand-in on
127.0.0.1): one of two workers wins a unit, a stale claim is taken over by exactly one, the
heartbeat keeps a claim young, a release never deletes another worker's claim; stage records of
many workers are kept apart."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

from gcs_stand_in import gcs  # noqa: F401  (the session fixture)
from minilm_jax import exclusive_files
from minilm_jax.storage import atomic_write_json, run_path
from minilm_jax.sweep.claims import ClaimBoard
from minilm_jax.sweep.status import SweepStatus


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
    """A sweep root on this machine's disk, or in the stand-in's bucket (a fresh prefix)."""
    if request.param == "local":
        return run_path(str(tmp_path / "sweep"))
    stand_in = request.getfixturevalue("gcs")
    return run_path(stand_in.uri(f"claims-{tmp_path.name}"))


def board(root, **kwargs) -> ClaimBoard:
    return ClaimBoard(root / "claims", root, **kwargs)


def wait_until(condition, timeout: float = 30.0) -> None:
    """Wait for ``condition()`` (an event another thread causes), failing after ``timeout``."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_exclusive_files_create_replace_delete(root):
    path = root / "x.json"
    first = exclusive_files.create(path, b"a")
    assert first and exclusive_files.create(path, b"b") is None
    held = exclusive_files.read(path)
    assert held.data == b"a" and held.version == first and held.age < 60
    second = exclusive_files.replace(path, first, b"c")
    assert second and second != first
    assert exclusive_files.replace(path, first, b"d") is None  # not at that version any more
    assert not exclusive_files.delete(path, first)
    assert exclusive_files.read(path).data == b"c"
    assert list(exclusive_files.listing(root)) == ["x.json"]
    assert exclusive_files.delete(path, second) and exclusive_files.read(path) is None
    assert exclusive_files.refresh(path, second) is None and exclusive_files.listing(root) == {}


def test_of_two_workers_one_wins_a_unit(root):
    unit = root / "runs" / "a" / "pretrain"
    barrier, won = threading.Barrier(4), []

    def worker():
        barrier.wait()
        claim = board(root).try_claim([unit], "pretrain")
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    holder = board(root).holder(unit)
    assert holder["unit"] == "runs/a/pretrain" and holder["stage"] == "pretrain"
    assert list(board(root).holders()) == ["runs/a/pretrain"]
    won[0].release()
    assert board(root).holder(unit) is None and board(root).holders() == {}
    assert board(root).try_claim([unit], "pretrain") is not None


def test_a_unit_is_claimed_whole_or_not_at_all(root):
    a, b = root / "runs" / "a" / "pretrain", root / "runs" / "b" / "pretrain"
    held = board(root).try_claim([b], "pretrain")
    assert board(root).try_claim([a, b], "pretrain") is None
    assert board(root).holder(a) is None  # the part it got was given back
    held.release()
    assert board(root).try_claim([a, b], "pretrain") is not None


def foreign_claim(root, unit: str) -> None:
    """A claim left by a worker on another host (a preempted SLURM node or TPU host)."""
    owner = {"worker": "node7:123", "host": "node7", "pid": 123, "since": 0.0,
             "stage": "pretrain", "unit": unit}
    path = board(root).path_of(root / unit)
    assert exclusive_files.create(path, json.dumps(owner).encode())


def claim_when_stale(taker: ClaimBoard, unit, timeout: float = 30.0):
    """``taker`` looking again and again until the claim on ``unit`` is stale and it gets it."""
    end = time.monotonic() + timeout
    while (claim := taker.try_claim([unit], "pretrain")) is None:
        assert time.monotonic() < end, "never stale"
        time.sleep(0.01)
    return claim


def test_a_stale_claim_of_another_host_is_taken_over_once_with_its_workdir_lock(root, capsys,
                                                                               monkeypatch):
    from minilm_jax import storage
    from minilm_jax.errors import UserError
    from minilm_jax.storage import WorkdirLock

    monkeypatch.setattr(storage, "_GONE", set())  # no process known gone yet

    unit = root / "runs" / "a" / "pretrain"
    foreign_claim(root, "runs/a/pretrain")
    atomic_write_json(unit / ".lock", {"host": "node7", "pid": 123, "since": 0.0})
    with pytest.raises(UserError, match="in use by process 123 on host node7"):
        WorkdirLock(unit).acquire()
    assert board(root).try_claim([unit], "pretrain") is None  # fresh: its heartbeat is recent
    assert board(root).holder(unit)["worker"] == "node7:123"
    taker = board(root, stale_after=0.0, heartbeat=0.01)
    taken = claim_when_stale(taker, unit)
    assert "taking over pretrain of runs/a/pretrain from worker node7:123" in capsys.readouterr().out
    assert taker.try_claim([unit], "pretrain") is None  # ours is live
    WorkdirLock(unit).acquire().release()  # node7's process is gone: its lock is taken over
    assert "stale lock of process 123 on node7" in capsys.readouterr().out
    taken.release()
    assert board(root).holder(unit) is None


def test_a_live_claim_is_kept_from_a_host_whose_clock_runs_ahead(tmp_path):
    """Another host's claim whose last write looks 10 minutes old (the clocks disagree) but that
    its worker keeps refreshing is never taken over; once the refreshes stop, it is."""
    root = run_path(str(tmp_path / "sweep"))
    unit = root / "runs" / "a" / "pretrain"
    foreign_claim(root, "runs/a/pretrain")
    path = board(root).path_of(unit)
    old = time.time() - 600
    taker = board(root, heartbeat=0.02)  # stale_after 300 s
    for beat in range(20):  # the owner's heartbeat, as the taker sees it: mtime moves, stays old
        os.utime(path, (old + beat, old + beat))
        assert taker.try_claim([unit], "pretrain") is None
        time.sleep(0.01)
    claim_when_stale(taker, unit).release()  # unchanged for three heartbeats and old: stale


def test_a_unit_is_not_left_half_claimed_when_the_store_fails(root, monkeypatch):
    a, b = root / "runs" / "a" / "pretrain", root / "runs" / "b" / "pretrain"
    real, calls = exclusive_files.create, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise ConnectionError("store unreachable")
        return real(path, data)

    monkeypatch.setattr(exclusive_files, "create", failing)
    with pytest.raises(ConnectionError):
        board(root).try_claim([a, b], "pretrain")
    monkeypatch.setattr(exclusive_files, "create", real)
    assert board(root).holders() == {}


def test_a_write_whose_reply_was_lost_is_recognised_as_ours(root):
    """A retried create or replace refused because the first attempt went through: the file holds
    our own bytes, so it is ours."""
    path = root / "x.json"
    version = exclusive_files.create(path, b"mine")
    assert exclusive_files.create(path, b"mine") == version
    assert exclusive_files.create(path, b"theirs") is None
    newer = exclusive_files.replace(path, version, b"mine, renewed")
    assert exclusive_files.replace(path, version, b"mine, renewed") == newer


def test_the_heartbeat_keeps_a_claim_young_and_a_lost_claim_is_reported_and_spared(root):
    unit = root / "runs" / "a" / "pretrain"
    owner, lost = board(root, heartbeat=0.05), []
    owner.on_lost = lost.append  # (a worker's default: stop the process at once)
    claim = owner.try_claim([unit], "pretrain")
    path = claim.paths[0]
    stamp = exclusive_files.listing(root / "claims")  # mtime (local) or generation (gs)
    wait_until(lambda: exclusive_files.listing(root / "claims") != stamp)
    # another worker judged it stale and took it over: our release leaves theirs alone
    successor = json.dumps({"worker": "node9:1", "host": "node9", "pid": 1, "since": 0.0,
                            "stage": "pretrain", "unit": "runs/a/pretrain"}).encode()
    wait_until(lambda: exclusive_files.replace(path, exclusive_files.read(path).version,
                                               successor) is not None)  # (between two beats)
    wait_until(lambda: lost == [path])  # the next beat finds it gone
    claim.release()
    assert exclusive_files.read(path).data == successor


def test_stage_records_of_many_workers_are_kept_apart(root):
    status = SweepStatus(root)
    threads = [threading.Thread(target=status.record, args=(f"run{i}", "pretrain", "done"))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status.record("run0", "finetune:sst2:random", "failed", error="ValueError: x")
    recorded = status.read()
    assert sorted(recorded) == [f"run{i}" for i in range(6)]
    assert status.entry("run0", "finetune:sst2:random")["state"] == "failed"
    assert status.failures({"run0"}) == {"run0": {"finetune:sst2:random": "ValueError: x"}}
    assert status.unfinished() == ["run0 finetune:sst2:random: failed"]


def test_a_root_of_the_single_status_file_is_still_read(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps(
        {"b": {"pretrain": {"state": "failed", "time": 1.0, "error": "E"}}}))
    status = SweepStatus(tmp_path)
    assert status.entry("b", "pretrain")["state"] == "failed"
    status.record("b", "pretrain", "done")
    assert status.read()["b"]["pretrain"]["state"] == "done" and status.unfinished() == []


def test_a_filesystem_without_hard_links_still_creates_exclusively(tmp_path, monkeypatch):
    def no_links(*args):  # as on some FUSE mounts
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "c.json"
    assert exclusive_files.create(path, b"a") and exclusive_files.create(path, b"b") is None
    assert path.read_bytes() == b"a" and [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_a_worker_whose_claim_was_taken_over_stops_at_once(tmp_path):
    """In a worker process, the default reaction: one error line and exit status 75 at the next
    heartbeat, before the unit could be trained twice."""
    import subprocess
    import sys

    code = (
        "import json, sys, time\n"
        "from minilm_jax import exclusive_files\n"
        "from minilm_jax.sweep.claims import ClaimBoard\n"
        f"root = {str(tmp_path)!r}\n"
        "board = ClaimBoard(root + '/claims', root, heartbeat=0.05)\n"
        "claim = board.try_claim([root + '/runs/a'], 'pretrain')\n"
        "path = claim.paths[0]\n"
        "exclusive_files.replace(path, exclusive_files.read(path).version, b'{}')\n"
        "time.sleep(60)  # the heartbeat thread ends the process first\n"
        "sys.exit(0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.strip().startswith("error: claim ") and "taken over" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_status_shows_a_long_silent_claim_of_another_host_as_not_held(tmp_path):
    root = run_path(str(tmp_path / "sweep"))
    foreign_claim(root, "runs/a/pretrain")
    assert list(board(root).holders()) == ["runs/a/pretrain"]  # written just now: held
    assert board(root).holders()["runs/a/pretrain"]["silent_for"] == 0
    quiet = time.time() - 100  # three 20 s heartbeats missed, not yet the 300 s stale time
    os.utime(board(root).path_of(root / "runs" / "a" / "pretrain"), (quiet, quiet))
    assert board(root).holders()["runs/a/pretrain"]["silent_for"] >= 99  # status: "silent"
    old = time.time() - 600
    os.utime(board(root).path_of(root / "runs" / "a" / "pretrain"), (old, old))
    assert board(root).holders() == {}  # silent for 10 minutes: its worker is gone
    seen = board(root).claims()["runs/a/pretrain"]  # what status says of it
    assert seen["verdict"] == "stale" and 600 <= seen["silent_for"] < 660
    assert seen["note"] == f"stale: silent for {seen['silent_for']:.0f} s on host node7"


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, capsys):
    """Same host: the owner's pid decides, with no waiting (a SIGKILLed local worker)."""
    import socket
    import subprocess
    import sys

    root = run_path(str(tmp_path / "sweep"))
    unit = root / "runs" / "a" / "pretrain"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    for pid, taken in ((os.getppid(), False), (int(dead), True)):  # a live process, a gone one
        owner = {"worker": f"{socket.gethostname()}:{pid}", "host": socket.gethostname(),
                 "pid": pid, "since": 0.0, "stage": "pretrain", "unit": "runs/a/pretrain"}
        path = board(root).path_of(unit)
        held = exclusive_files.read(path)
        assert exclusive_files.replace(path, held.version, json.dumps(owner).encode()) if held \
            else exclusive_files.create(path, json.dumps(owner).encode())
        claim = board(root).try_claim([unit], "pretrain")
        assert (claim is not None) == taken
    assert (f"from worker {socket.gethostname()}:{dead} (gone: pid {dead} not running)"
            in capsys.readouterr().out)
    claim.release()


def test_a_stale_claim_of_a_live_process_on_this_host_is_taken_over(tmp_path, capsys):
    """Same host, a live pid that never refreshes its claim (no worker: a reused pid, or a hung
    worker): once the claim is older than stale_after it is taken over, not waited on forever."""
    import socket

    root = run_path(str(tmp_path / "sweep"))
    unit = root / "runs" / "a" / "pretrain"
    owner = {"worker": f"{socket.gethostname()}:{os.getppid()}", "host": socket.gethostname(),
             "pid": os.getppid(), "since": 0.0, "stage": "pretrain", "unit": "runs/a/pretrain"}
    path = board(root).path_of(unit)
    assert exclusive_files.create(path, json.dumps(owner).encode())
    assert board(root).try_claim([unit], "pretrain") is None  # fresh: its pid is alive
    old = time.time() - 20 * 60  # as if written 20 minutes ago and never refreshed
    os.utime(path, (old, old))
    claim = board(root).try_claim([unit], "pretrain")
    assert claim is not None
    said = re.search(rf"from worker {socket.gethostname()}:{os.getppid()} \(stale: pid "
                     rf"{os.getppid()} alive, silent for (\d+) s\)", capsys.readouterr().out)
    assert said and 20 * 60 <= int(said.group(1)) <= 20 * 60 + 60  # the claim's age, not "gone"
    claim.release()


def test_a_zombie_holder_is_gone_and_wakes_a_waiting_worker(tmp_path):
    """A worker killed but not yet reaped by its parent (a zombie) holds nothing: its claim is
    free, and a worker waiting for a change wakes at once instead of after its timeout."""
    import socket
    import subprocess
    import sys

    from minilm_jax.storage import process_alive

    root = run_path(str(tmp_path / "sweep"))
    unit = root / "runs" / "a" / "pretrain"
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    owner = {"worker": f"{socket.gethostname()}:{child.pid}", "host": socket.gethostname(),
             "pid": child.pid, "since": time.time(), "stage": "pretrain",
             "unit": "runs/a/pretrain"}
    exclusive_files.create(board(root).path_of(unit), json.dumps(owner).encode())
    assert process_alive(child.pid) and list(board(root).holders()) == ["runs/a/pretrain"]
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: (board(root).wait_for_change(600), woke.set()))
    waiter.start()
    child.stdin.close()  # the child ends; nobody reaps it until child.wait() below
    wait_until(lambda: os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT) is not None)
    assert not process_alive(child.pid)  # a zombie is not alive
    assert board(root).holders() == {}
    wait_until(woke.is_set)  # not 600 s
    waiter.join()
    child.wait()


def test_a_claim_released_before_the_wait_began_wakes_the_worker_at_once(root):
    """A worker that found a unit held, then waits: the holder released it between the worker's
    look and its wait (a unit failing at once does). The wait compares with what the look saw
    (``since``), so it returns at once, not after its timeout (30 s in a sweep; 600 here);
    without ``since`` nothing changes after the call and it waits the full timeout."""
    unit = root / "runs" / "a" / "pretrain"
    status = SweepStatus(root).folder

    def wait_since(looked) -> None:
        woke = threading.Event()
        threading.Thread(target=lambda: (board(root).wait_for_change(600, [status], since=looked),
                                         woke.set()), daemon=True).start()
        wait_until(woke.is_set)  # not 600 s

    held = board(root).try_claim([unit], "pretrain")
    assert held is not None
    looked = board(root).snapshot([status])
    assert board(root).try_claim([unit], "pretrain") is None  # another worker's look: held
    held.release()  # before the looking worker waits
    wait_since(looked)
    assert board(root).snapshot([status]) != looked
    # a stage record written after the look wakes it too
    looked = board(root).snapshot([status])
    SweepStatus(root).record("a", "pretrain", "failed")
    wait_since(looked)
