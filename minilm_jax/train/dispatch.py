"""Run-control helpers shared by the training loops: dispatch plans and preemption signals."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterable, Iterator


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


@contextlib.contextmanager
def sigterm_flag() -> Iterator[dict[str, str | None]]:
    """Within the block, SIGTERM sets ``flag["signal"]`` instead of killing the process."""
    flag: dict[str, str | None] = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.__setitem__("signal", "SIGTERM"))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
