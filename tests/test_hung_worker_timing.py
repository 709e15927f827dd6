"""How long a local launcher lets a silent worker be, once the sweep is settled: the claims' stale
time, not the SIGTERM grace. With a grace far below the stale time, a hung and a stopped worker are
each terminated after a silence of at least the stale time (and at most one look more), said in
the printed line, and the launcher ends within a deadline (a launcher that never ends a stopped
worker fails here in seconds, not as a hang)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from bounded_launch import bounded_launch
from minilm_jax.sweep.launchers import SilenceRule

STALE, GRACE = 2.0, 0.1  # a grace 20x below the stale time
RULE = SilenceRule(STALE, STALE / 3, GRACE)
DEADLINE = 15.0  # a few seconds needed; a launcher that never ends one fails here


def worker(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time\n" + code],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def silences(output: str) -> list[tuple[int, int, str]]:
    """(pid, seconds silent, stopped|hung) of each worker the launcher said it terminates."""
    return [(int(pid), int(silent), how) for pid, silent, how in re.findall(
        r"^warning: sweep worker w\d \(pid (\d+)\) has been silent for (\d+) s \((stopped|hung)\) "
        r"after every unit was settled; terminating it$", output, re.M)]


@pytest.mark.parametrize("how", ["hung", "stopped"])
def test_a_silent_worker_is_ended_after_the_stale_time_not_the_grace(monkeypatch, how):
    code = ("print('ready', flush=True)\ntime.sleep(120)\n" if how == "hung" else
            "print('ready', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\n")
    silent_one, finished = worker(code), worker("sys.exit(0)")
    try:
        codes, out, took = bounded_launch([finished, silent_one], RULE, monkeypatch, DEADLINE)
    finally:
        silent_one.kill()
        silent_one.wait()
    assert codes == [0, -(signal.SIGTERM if how == "hung" else signal.SIGKILL)], out
    [(pid, silent, said)] = silences(out)
    assert (pid, said) == (silent_one.pid, how), out
    # printed rounded to a second: at least the stale time, at most two looks and 2 s more
    assert STALE - 0.5 <= silent <= STALE + 2 * RULE.every + 2, out
    assert took >= STALE, (took, out)  # never before a whole stale time of silence
