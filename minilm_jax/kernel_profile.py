"""Where a step's device time goes: each kernel's launches and microseconds per step, from a
profile of a few steps (``jax.profiler``), as ``python -m minilm_jax.bench --profile N`` prints it.

Kernels per step (:mod:`minilm_jax.hlo_kernels`) count launches; this measures them. On an H200 it
showed that ``paper-1.25m``'s step with the encoder's kernels was busy for all of its 1.15 ms in 59
kernels, 83% of it in the encoder layer's and the output layer's Pallas kernels
(docs/performance.md)."""

from __future__ import annotations

import glob
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class KernelTime:
    """One kernel (by the name the device trace gives it): launches and device microseconds per
    step."""
    name: str
    launches: float
    us: float


@dataclass(frozen=True)
class StepProfile:
    """The profiled steps' kernels, slowest first; ``busy_us``: the device's kernel time per step
    (below the step's wall time by what the device sat idle)."""
    kernels: tuple[KernelTime, ...]
    busy_us: float

    def table(self, top: int, step_ms: float | None = None) -> str:
        """The ``top`` slowest kernels, with their share of the busy time."""
        if not self.kernels:
            return "device profile: no GPU kernel in the trace (it reads a GPU's streams)"
        lines = [f"device time per step: {self.busy_us:,.1f} us busy in "
                 f"{sum(k.launches for k in self.kernels):.0f} launches"
                 + (f" ({self.busy_us / 10 / step_ms:.0f}% of the {step_ms:.3f} ms step)"
                    if step_ms else "")]
        for k in self.kernels[:top]:
            lines.append(f"  {k.us:9.1f} us  {100 * k.us / max(self.busy_us, 1e-9):5.1f}%  "
                         f"x{k.launches:<5g} {k.name[:90]}")
        return "\n".join(lines)


def aggregate(events: Iterable[tuple[str, float]], steps: int) -> StepProfile:
    """Per-step launches and microseconds of each kernel name from ``(name, duration_ns)`` device
    events of ``steps`` steps."""
    launches: dict[str, int] = {}
    total_ns: dict[str, float] = {}
    for name, ns in events:
        launches[name] = launches.get(name, 0) + 1
        total_ns[name] = total_ns.get(name, 0.0) + ns
    kernels = tuple(sorted((KernelTime(n, launches[n] / steps, total_ns[n] / 1e3 / steps)
                            for n in launches), key=lambda k: (-k.us, k.name)))
    return StepProfile(kernels, sum(total_ns.values()) / 1e3 / steps)


def device_events(xspace_path: str) -> list[tuple[str, float]]:
    """``(kernel name, duration_ns)`` of every event on a GPU's streams in a profile file (none
    off a GPU: a CPU's XLA ops are host threads)."""
    import jax

    data = jax.profiler.ProfileData.from_file(xspace_path)
    return [(event.name, event.duration_ns) for plane in data.planes
            if plane.name.startswith("/device:GPU") for line in plane.lines
            if "stream" in line.name.lower() for event in line.events]


def profile_steps(step: Callable, state, data, steps: int = 10,
                  steps_per_call: int = 1) -> tuple[StepProfile, object]:
    """Call ``step(state, data) -> (state, metrics)`` ``steps`` times under the profiler (after two
    unprofiled calls) and return the kernels' profile per train step (a call runs
    ``steps_per_call`` of them: ``--steps_per_dispatch``) and the last state."""
    import jax

    for _ in range(2):
        state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory(prefix="minilm-profile-") as folder:
        with jax.profiler.trace(folder):
            for _ in range(steps):
                state, metrics = step(state, data)
            jax.block_until_ready(metrics)
        files = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        events = [e for f in files for e in device_events(f)]
    return aggregate(events, steps * steps_per_call), state
