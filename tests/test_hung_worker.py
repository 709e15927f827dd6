"""A local launcher's silent worker (stopped with SIGSTOP, or hung) once the sweep is settled: named
in one line and terminated, never a worker that computes, prints or keeps its claim fresh, never
one while no worker finished; ``status`` says what a claim nobody refreshes holds (a live process
that went silent, or one that is gone). Stand-in workers here are tiny Python processes; the real
sweep with a SIGSTOPped worker: tests/test_sweep_workers.py."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from bounded_launch import bounded_launch
from minilm_jax.sweep.launchers import SilenceRule, process_cpu, wait_for_workers

STALE = 1.5  # the claims' stale time of these launches (seconds); heartbeat STALE / 3


def worker(code: str) -> subprocess.Popen:
    """A stand-in worker running ``code``, its output on a pipe as a launcher's workers have."""
    return subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time\n" + code],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def launch(procs, monkeypatch, root=None, grace=1.0) -> tuple[list[int], str, float]:
    """Wait for ``procs`` as the local launcher does: exit codes, what it printed, seconds (the
    test fails when the launcher has not ended them within 60 s)."""
    return bounded_launch(procs, SilenceRule(STALE, STALE / 3, grace, root), monkeypatch, 60.0)


def terminated(output: str) -> list[tuple[int, int, str]]:
    """(pid, seconds silent, stopped|hung) of each worker the launcher said it terminates."""
    return [(int(pid), int(silent), how) for pid, silent, how in re.findall(
        r"^warning: sweep worker w\d \(pid (\d+)\) has been silent for (\d+) s \((stopped|hung)\) "
        r"after every unit was settled; terminating it$", output, re.M)]


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer exists (ended and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


STOPS_ITSELF = ("print('working', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\n"
                "print('resumed')\n")


def test_a_stopped_worker_is_killed_once_another_finished(monkeypatch):
    finished, stopped = worker("sys.exit(1)"), worker(STOPS_ITSELF)
    try:
        codes, out, took = launch([finished, stopped], monkeypatch)
    finally:
        stopped.kill()
    assert codes == [1, -signal.SIGKILL], out
    [(pid, silent, how)] = terminated(out)
    assert (pid, how) == (stopped.pid, "stopped") and STALE <= silent + 0.5 <= took + 1, out
    assert took < 15 and gone(stopped.pid)  # reaped, not left stopped
    assert "resumed" not in out  # killed while stopped: it never ran again
    assert out.count(f"(pid {stopped.pid})") == 1, out  # no "killed by SIGKILL" warning too


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_a_hung_worker_gets_sigterm_then_sigkill_after_the_grace(monkeypatch, ignores_sigterm):
    """Not stopped but silent (blocked, no CPU time): SIGTERM; SIGKILL once the grace has passed
    if SIGTERM did not end it."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_sigterm else ""
    hung = worker(ignore + "print('ready', flush=True)\ntime.sleep(120)\n")
    finished = worker("sys.exit(0)")
    try:
        codes, out, took = launch([finished, hung], monkeypatch, grace=1.0)
    finally:
        hung.kill()
    expected = signal.SIGKILL if ignores_sigterm else signal.SIGTERM
    assert codes == [0, -expected], out
    [(pid, silent, how)] = terminated(out)
    assert (pid, how) == (hung.pid, "hung") and silent >= STALE - 0.5, out
    assert took < 20 and gone(hung.pid)


def test_a_worker_that_computes_or_prints_is_never_terminated(monkeypatch):
    """Silent for longer than the stale time by one sign but alive by the other: CPU time (a long
    computation, no output), output lines (little CPU)."""
    computes = worker("end = time.monotonic() + 3 * 1.5\nwhile time.monotonic() < end:\n"
                      "    sum(range(1000))\n")
    prints = worker("for _ in range(25):\n    print('step', flush=True)\n    time.sleep(0.2)\n")
    finished = worker("sys.exit(1)")
    codes, out, took = launch([finished, computes, prints], monkeypatch)
    assert codes == [1, 0, 0], out
    assert terminated(out) == [] and "warning" not in out, out
    assert took >= 3 * 1.5 - 0.5  # each ran its whole time, well past the stale time


def test_a_worker_whose_claim_is_kept_fresh_is_not_terminated_until_it_goes_stale(
        monkeypatch, tmp_path):
    """A stopped worker (no CPU time, no output) whose claim is refreshed (by this test, as its
    heartbeat thread would) is left alone; once the refreshes stop and the claim passes the stale
    time, it is terminated, and its claim is then seen as gone."""
    from minilm_jax import exclusive_files
    from minilm_jax.sweep.claims import ClaimBoard

    root = tmp_path / "sweep"
    board = ClaimBoard(root / "claims", root, STALE, STALE / 3)
    unit = root / "runs" / "a" / "pretrain"
    stopped, finished = worker(STOPS_ITSELF), worker("sys.exit(1)")
    owner = {"worker": f"{socket.gethostname()}:{stopped.pid}", "host": socket.gethostname(),
             "pid": stopped.pid, "since": time.time(), "heartbeat": 0.2, "stage": "pretrain",
             "unit": "runs/a/pretrain"}
    (root / "claims").mkdir(parents=True)
    assert exclusive_files.create(board.path_of(unit), json.dumps(owner).encode())
    beating = 4.0
    done = threading.Event()

    def beat():
        end = time.monotonic() + beating
        while time.monotonic() < end and not done.wait(0.1):
            os.utime(board.path_of(unit))

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        codes, out, took = launch([finished, stopped], monkeypatch, root=str(root))
    finally:
        done.set()
        beater.join()
        stopped.kill()
    assert codes == [1, -signal.SIGKILL], out
    assert [(pid, how) for pid, _, how in terminated(out)] == [(stopped.pid, "stopped")], out
    assert took >= beating + STALE - 0.2, (took, out)  # not before its claim went stale
    seen = board.claims()["runs/a/pretrain"]
    assert (seen["verdict"], seen["note"]) == ("gone", f"gone: pid {stopped.pid} not running")


def test_a_silent_worker_is_waited_for_while_no_worker_finished(monkeypatch):
    """The other worker was stopped by a signal (exit 143): the sweep is not known settled, so the
    silent worker is named once and waited for; resumed, it ends by itself."""
    stopped, interrupted = worker(STOPS_ITSELF), worker("sys.exit(143)")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    codes = []
    waiter = threading.Thread(target=lambda: codes.extend(wait_for_workers(
        [stopped, interrupted], SilenceRule(STALE, STALE / 3, 1.0))))
    waiter.start()
    try:
        end = time.monotonic() + 30
        while "waiting for it" not in out.getvalue():
            assert time.monotonic() < end, out.getvalue()
            time.sleep(0.05)
        assert process_cpu(stopped.pid)[1] == "T"  # still there, untouched
        os.kill(stopped.pid, signal.SIGCONT)
        waiter.join(30)
    finally:
        stopped.kill()
        waiter.join()
        monkeypatch.undo()
    text = out.getvalue()
    assert codes == [0, 143], text
    assert re.findall(rf"^warning: sweep worker w0 \(pid {stopped.pid}\) has been silent for "
                      r"\d+ s and the other workers ended before the sweep was settled; waiting "
                      r"for it", text, re.M) and terminated(text) == [], text
    assert "[w0] resumed" in text


def test_status_says_whether_a_claim_nobody_refreshes_is_held_by_a_live_process(
        word_shards, tmp_path, capsys):
    """``status``: a unit whose claim a live but stopped process of this host has not refreshed
    for the stale time is ``stale`` with that pid and how long it has been silent; one whose
    process is gone is ``interrupted``, saying the pid is not running."""
    from minilm_jax import exclusive_files
    from minilm_jax.sweep.claims import ClaimBoard
    from minilm_jax.sweep.layout import SweepLayout
    from minilm_jax.sweep.status import SweepStatus
    from minilm_jax.sweep.workers import save_config
    from test_sweep_workers import load_sweep, status_of, sweep_file

    root = tmp_path / "sweep"
    sweep = load_sweep(sweep_file(tmp_path, word_shards))
    save_config(sweep, SweepLayout(root))
    board = ClaimBoard(root / "claims", root)
    stopped = worker(STOPS_ITSELF)
    dead = worker("pass")
    dead.wait()
    try:
        while process_cpu(stopped.pid)[1] != "T":
            time.sleep(0.02)
        silent = 400.0  # past the default 300 s stale time
        for run, proc in (("b", stopped), ("b__hidden_dim=32", dead)):
            SweepStatus(root).record(run, "pretrain", "running", worker=f"host:{proc.pid}")
            path = board.path_of(root / "runs" / run / "pretrain")
            owner = {"worker": f"{socket.gethostname()}:{proc.pid}", "pid": proc.pid,
                     "host": socket.gethostname(), "since": time.time() - 500, "heartbeat": 20.0,
                     "stage": "pretrain", "unit": f"runs/{run}/pretrain"}
            exclusive_files.create(path, json.dumps(owner).encode())
            os.utime(path, (time.time() - silent, time.time() - silent))
        shown = status_of(root, capsys)
    finally:
        stopped.kill()
        stopped.wait()
    assert re.search(r"^b\s+pretrain\s+stale\s", shown, re.M), shown
    said = re.search(rf"claim stale: pid {stopped.pid} alive, silent for (\d+) s", shown)
    assert said and silent <= int(said.group(1)) <= silent + 60, shown
    assert re.search(r"^b__hidden_dim=32\s+pretrain\s+interrupted\s", shown, re.M), shown
    assert f"claim gone: pid {dead.pid} not running" in shown, shown
    assert "3 units: 1 interrupted, 1 pending, 1 stale" in shown, shown
