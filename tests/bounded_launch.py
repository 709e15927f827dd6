"""Waiting for a local launcher with a deadline: :func:`bounded_launch` runs
``wait_for_workers`` in a thread and fails the test when it has not returned within the deadline
(after killing the workers, so the launcher and the test end), never a test that hangs."""

from __future__ import annotations

import io
import sys
import threading
import time
from typing import Sequence

import pytest

from minilm_jax.sweep.launchers import SilenceRule, wait_for_workers


def bounded_launch(procs: Sequence, rule: SilenceRule, monkeypatch, deadline: float
                   ) -> tuple[list[int], str, float]:
    """Exit codes, what the launcher printed and seconds it took, waiting at most ``deadline``
    seconds for it to end every worker."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    result: list[list[int]] = []
    start = time.monotonic()
    waiter = threading.Thread(target=lambda: result.append(wait_for_workers(procs, rule)),
                              daemon=True)
    waiter.start()
    waiter.join(deadline)
    took = time.monotonic() - start
    if waiter.is_alive():
        for proc in procs:  # SIGKILL ends a stopped process too: the launcher then returns
            proc.kill()
        waiter.join(30)
        monkeypatch.undo()
        pytest.fail(f"the launcher did not end its workers within {deadline:g} s; it printed:\n"
                    f"{out.getvalue()}")
    monkeypatch.undo()
    return result[0], out.getvalue(), took
