"""Run-control helpers shared by the training loops: dispatch plans, diverged losses and stop
signals (SIGTERM and Ctrl-C: save, then stop)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from minilm_jax.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class DeferredMetrics:
    """The last dispatch's device metrics, read back one dispatch late so the host never waits for
    the device; a non-finite loss stops the run naming the step."""

    def __init__(self, what_is_kept: Callable[[], str],
                 check: Callable[[int, dict[str, np.ndarray]], None] | None = None):
        self._pending: tuple[int, int, Any] | None = None
        self._what_is_kept = what_is_kept  # says which checkpoint a resumption would start from
        self._check = check  # replaces the rule "any non-finite loss stops" (populations)

    def push(self, first_step: int, steps: int, metrics: Any) -> None:
        self._pending = (first_step, steps, metrics)

    def pop(self) -> tuple[int, int, dict[str, np.ndarray]] | None:
        """``(first step, steps, host metrics)`` of the pending dispatch, or None."""
        if self._pending is None:
            return None
        first, count, metrics = self._pending
        self._pending = None
        host = jax.device_get(metrics)
        if self._check is not None:
            self._check(first, host)
            return first, count, host
        losses = np.asarray(host["loss"])  # [K] or [K, members]
        finite = np.isfinite(losses.reshape(losses.shape[0], -1)).all(axis=1)
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            raise TrainingDiverged(f"non-finite training loss at step {first + k + 1} "
                                   f"({describe_losses(losses[k])}); {self._what_is_kept()}")
        return first, count, host


def describe_losses(losses: np.ndarray) -> str:
    """A step's non-finite loss in words: ``nan``, or which members of a population diverged."""
    values = np.asarray(losses, np.float64).reshape(-1)
    if values.size == 1:
        return f"{values[0]:g}"
    bad = np.flatnonzero(~np.isfinite(values))
    shown = ", ".join(f"member {i}: {values[i]:g}" for i in bad[:4])
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    return f"{len(bad)} of {values.size} members: {shown}{more}"


def dispatch_plan(start: int, total: int, steps_per_dispatch: int,
                  boundaries: Iterable[int] = ()) -> list[tuple[int, int]]:
    """``[(first step, steps)]`` from ``start`` to ``total``, at most ``steps_per_dispatch`` steps
    per dispatch, never crossing a step in ``boundaries`` (evaluation points)."""
    k = max(1, int(steps_per_dispatch))
    stops = sorted({b for b in boundaries if start < b < total} | {total})
    plan, step = [], start
    for stop in stops:
        while step < stop:
            n = min(k, stop - step)
            plan.append((step, n))
            step += n
    return plan


def preempted(signal_name: str, step: int) -> str:
    """Say that a run stopped on ``signal_name`` after saving ``step``; the status to record."""
    if signal_name != "SIGINT":  # Ctrl-C: the one line is the entry point's (exit 130)
        print(f"received {signal_name}: saved checkpoint at step {step}; exiting", flush=True)
    return "preempted"


class StopRequest:
    """The stop signal a process received (``SIGTERM`` or ``SIGINT``), or None."""

    def __init__(self) -> None:
        self.signal: str | None = None


_ACTIVE: list[StopRequest] = []


@contextlib.contextmanager
def stop_signals(enabled: bool = True) -> Iterator[StopRequest]:
    """Catch SIGTERM and SIGINT (Ctrl-C) while the block runs: each sets the yielded request, and
    the code inside saves and stops at its next safe point; a second Ctrl-C interrupts at once.
    Nested blocks share the outermost request, so a signal that reaches a sweep between or before
    its runs' loops still stops the run that starts next. ``enabled=False`` (several processes,
    where JAX's preemption service owns SIGTERM) or a thread other than the main one: nothing is
    caught."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield StopRequest()
        return
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    request = StopRequest()

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and request.signal == "SIGINT":
            raise KeyboardInterrupt  # asked twice: stop now, unsaved
        if request.signal != "SIGINT":  # Ctrl-C, once pressed, decides how the command ends
            request.signal = name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.remove(request)
        for s, old in previous.items():
            signal.signal(s, old)
