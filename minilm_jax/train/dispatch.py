"""Run-control helpers shared by the training loops: dispatch plans and preemption signals."""

from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np

from minilm_jax.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class DeferredMetrics:
    """The last dispatch's device metrics, read back one dispatch late so the host never waits for
    the device; a non-finite loss stops the run naming the step."""

    def __init__(self, where_kept: str):
        self._pending: tuple[int, int, Any] | None = None
        self._where_kept = where_kept

    def push(self, first_step: int, steps: int, metrics: Any) -> None:
        self._pending = (first_step, steps, metrics)

    def pop(self) -> tuple[int, int, dict[str, np.ndarray]] | None:
        """``(first step, steps, host metrics)`` of the pending dispatch, or None."""
        if self._pending is None:
            return None
        first, count, metrics = self._pending
        self._pending = None
        host = jax.device_get(metrics)
        losses = np.asarray(host["loss"])  # [K] or [K, members]
        finite = np.isfinite(losses.reshape(losses.shape[0], -1)).all(axis=1)
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            raise TrainingDiverged(f"non-finite training loss ({losses[k]}) at step {first + k + 1}; "
                                   f"the last good checkpoint is kept in {self._where_kept}")
        return first, count, host


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
    print(f"received {signal_name}: saved checkpoint at step {step}; exiting", flush=True)
    return "preempted"
