"""The one run loop shared by pre-training and fine-tuning.

:func:`run_loop` owns what every run does the same way: the dispatch plan, the host prefetcher, the
progress bar, metrics read back one dispatch late (a non-finite loss stops the run naming the
step), the evaluation cadence, checkpoint decisions (by count, by clock, at the end, on
preemption, on early stopping), SIGTERM on one process and JAX's
preemption sync point on several, and early stopping. :func:`check_workdir` refuses a workdir
holding another config; :func:`restore` resumes from the newest readable checkpoint.

A specialisation (:class:`LoopSpec`: ``Pretrainer``, ``Finetuner``) says what a batch is, how a
dispatch runs, what a log line holds and what an evaluation does.
"""

from __future__ import annotations

import abc
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils

from minilm_jax.errors import Interrupted, UserError
import minilm_jax.run_identity as run_identity
from minilm_jax.run_identity import QUIET_DEFAULTS
from minilm_jax.storage import RunPath, WorkdirLock, atomic_write_json
from minilm_jax.train import batches as batch_lib
from minilm_jax.train.checkpoint import Checkpoints, abstract_like
from minilm_jax.train.dispatch import DeferredMetrics, dispatch_plan, preempted, stop_signals
from minilm_jax.train.state import UnbuiltState
from minilm_jax.train.run_log import (EtaClock, MetricsWriter, log_line, plain_progress,
                                      progress_bar)


@dataclass
class Window:
    """The span of wall-clock time a log line's speed figures cover. ``compiled`` is False until
    the first line is written: that window includes compilation, so it carries no speed figures.
    Evaluation and checkpoint time is left out (the loop restarts the clock after them)."""

    start: float = field(default_factory=time.perf_counter)
    compiled: bool = False
    host_wait: float = 0.0  # seconds the loop has waited for host batches so far

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    def restart(self, logged: bool = False) -> None:
        self.start = time.perf_counter()
        self.compiled = self.compiled or logged


@dataclass
class LoopResult:
    state: Any
    step: int
    status: str  # completed | early_stopped | preempted


class LoopSpec(abc.ABC):
    """What a run loop specialisation provides."""

    total_steps: int
    workdir: RunPath

    @abc.abstractmethod
    def host_batch(self, first: int, count: int) -> dict[str, np.ndarray]:
        """This process's rows for optimizer steps ``first .. first + count - 1``."""

    @abc.abstractmethod
    def dispatch(self, state: Any, host_batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """Place the batch on the devices and run the jitted step: (new state, device metrics)."""

    @abc.abstractmethod
    def record_metrics(self, first: int, count: int, host: dict[str, Any]) -> None:
        """Account one dispatch's metrics (host arrays) for the next log line."""

    @abc.abstractmethod
    def log_line(self, step: int, host: dict[str, Any], window: Window) -> dict[str, str]:
        """Write the train metrics of the window ending at ``step``; the progress bar's postfix."""

    @abc.abstractmethod
    def evaluation_due(self, prev: int, step: int) -> bool:
        """Whether the dispatch from ``prev`` to ``step`` ends at an evaluation point."""

    @abc.abstractmethod
    def evaluate_at(self, step: int, state: Any) -> tuple[Any, bool]:
        """Evaluate at ``step``: (state, possibly updated; whether to stop early)."""

    def dispatch_boundaries(self) -> Iterable[int]:
        """Steps no dispatch may cross (so an evaluation lands exactly there)."""
        return ()

    # ``check_losses(first step, host metrics)``: the divergence rule; None: any non-finite loss
    # stops the run (a population stops a diverged member and goes on).
    check_losses: Callable[[int, dict[str, Any]], None] | None = None

    lock: WorkdirLock  # taken by check_workdir when the specialisation is built

    # The state a run starts from when no checkpoint is restored, not built yet: ``state`` builds
    # it when first read, and :meth:`starting_state` hands it to :func:`open_run` unbuilt, so a
    # run that resumes never builds it (no initialiser compiled or run, no second copy in memory).
    initial: UnbuiltState | None = None
    _state: Any = None

    @property
    def state(self) -> Any:
        """The run's state (built from ``initial`` when first read, if no other was set)."""
        if self._state is None and self.initial is not None:
            self.state = self.initial.build()
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        """Set the state; the unbuilt one (and what its builder holds, a pre-trained encoder's
        arrays) is let go."""
        self._state, self.initial = value, None

    def starting_state(self) -> Any:
        """What :func:`open_run` restores into: the state if built, else ``initial``."""
        return self._state if self._state is not None else self.initial

    stopped_by: str | None = None  # the signal that stopped the last run_loop, if any
    stopped_at: int | None = None  # the step it saved before stopping

    def run(self) -> dict[str, Any]:
        """Train to the end (or preemption); the run's summary. The workdir lock is released
        however the run ends. Ctrl-C saves, writes the summary, then raises
        :class:`~minilm_jax.errors.Interrupted` (SIGTERM returns the ``preempted`` summary)."""
        try:
            summary = self.train()
        finally:
            self.lock.release()
        if self.stopped_by == "SIGINT":
            raise Interrupted(f"interrupted (Ctrl-C) at step {self.stopped_at} of "
                              f"{self.workdir}; that step is saved: run the same command again "
                              "to resume")
        return summary

    def train(self) -> dict[str, Any]:
        """Restore, run :func:`run_loop`, write and return the summary (what :meth:`run` calls)."""
        raise NotImplementedError


def open_run(workdir: RunPath, checkpoint_config: Any, state: Any, *, identity: dict[str, Any],
             resumable: tuple[str, ...], **checkpoint_options: Any
             ) -> tuple[Checkpoints, MetricsWriter, int, Any]:
    """The run's checkpoints (``checkpoint_config``: keep, every_steps, every_minutes), its metrics
    writer and (step, state) restored from the newest usable checkpoint (see :func:`restore`)."""
    ckpts = Checkpoints(workdir, keep=checkpoint_config.keep,
                        every_steps=checkpoint_config.every_steps,
                        every_minutes=checkpoint_config.every_minutes, identity=identity,
                        resumable=resumable, **checkpoint_options)
    writer = MetricsWriter(workdir)
    start, state = restore(ckpts, writer, state)
    return ckpts, writer, start, state


def never_stepped(workdir: RunPath) -> bool:
    """True when ``workdir`` holds nothing a step made: no summary, checkpoint, metrics record or
    validation history (a run that failed before its first step completed)."""
    if any((workdir / name).exists() for name in ("summary.json", "history.json")):
        return False
    metrics = workdir / "metrics.jsonl"
    if metrics.exists() and metrics.read_text().strip():
        return False
    checkpoints = workdir / "checkpoints"
    return not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()))


def check_workdir(workdir: RunPath, current: dict[str, Any], resumable: tuple[str, ...],
                  what: str = "a run") -> WorkdirLock:
    """Take the workdir's lock (one live process per workdir; process 0 of a multi-host run), hold
    ``current`` to the identity its ``config.json`` records (:func:`run_identity.hold`: outside
    ``resumable`` fields and locations; a change of the model's code refused unless accepted),
    then record ``current``. Returns the lock (release it when the run ends)."""
    lock = WorkdirLock(workdir)
    if jax.process_index() == 0:
        lock.acquire()
    saved_path = workdir / "config.json"
    try:
        if saved_path.exists():
            saved = json.loads(saved_path.read_text())
            try:
                diffs = run_identity.hold(saved, current, resumable, QUIET_DEFAULTS,
                                          f"the run in {workdir}")
            except UserError:
                if not never_stepped(workdir):
                    raise
                diffs = ["model_code"]
            if diffs and never_stepped(workdir):  # e.g. a crash at the first step: nothing to keep
                log_line(f"note: {workdir} holds {what} that never completed a step; its config "
                         f"is replaced ({', '.join(diffs[:6])})")
                diffs = []
            if diffs:
                raise UserError(f"workdir {workdir} holds {what} with a different config "
                                f"({run_identity.describe(saved, current, diffs)}); use a new "
                                "--workdir")
        if jax.process_index() == 0:
            atomic_write_json(saved_path, current)
    except BaseException:
        lock.release()
        raise
    return lock


def restore(ckpts: Checkpoints, writer: MetricsWriter, state: Any) -> tuple[int, Any]:
    """(step, state) of the newest usable checkpoint, or (0, ``state``) when there is none (an
    :class:`~minilm_jax.train.state.UnbuiltState` is built then, and only then); the
    metrics history after that step is dropped (it is about to be recomputed), and garbled lines,
    each said in a note."""
    unbuilt = isinstance(state, UnbuiltState)
    restored = ckpts.restore_latest(state.target if unbuilt else abstract_like(state))
    step = 0 if restored is None else int(restored[0])
    if restored is not None:
        state = restored[1]
        print(f"resumed from checkpoint at step {step}", flush=True)
    elif unbuilt:
        state = state.build()
    for note in writer.truncate_after(step).notes():  # later records; garbled lines (lost)
        print(note, flush=True)
    return step, state


def _on_process_0(flag: bool) -> bool:
    """Process 0's value of ``flag``, on every process (for choices all processes must share)."""
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def run_loop(spec: LoopSpec, state: Any, start: int, ckpts: Checkpoints, writer: MetricsWriter, *,
             steps_per_dispatch: int, log_every: int, prefetch_depth: int, progress: bool,
             desc: str, nothing_left: bool = False) -> LoopResult:
    """Train ``state`` from ``start`` to ``spec.total_steps`` (see the module docstring)."""
    total = spec.total_steps
    plan = [] if nothing_left else dispatch_plan(start, total, steps_per_dispatch,
                                                 spec.dispatch_boundaries())
    size_of = dict(plan)
    prefetch = batch_lib.Prefetcher(lambda s: spec.host_batch(s, size_of[s]),
                                    iter([s for s, _ in plan]), prefetch_depth)
    bar = progress_bar(total, start, progress, desc)
    # No bar (stderr is a file, or progress off): plain lines, about 20 per run and at least every
    # log_every steps apart.
    plain = bar.disable
    plain_every = max(log_every, -(-total // 20 // log_every) * log_every)
    deferred = DeferredMetrics(lambda: kept_note(ckpts, spec.workdir), spec.check_losses)
    window = Window()
    clock = EtaClock()
    step, status = start, ("early_stopped" if nothing_left else "completed")
    # Saving and training are collective: with several processes, none may stop alone. There
    # JAX's preemption service catches SIGTERM (on any host) and picks one dispatch at which every
    # process saves and stops; a single process handles SIGTERM and Ctrl-C itself.
    multi = jax.process_count() > 1
    signals = stop_signals(enabled=not multi)
    stop = signals.__enter__()
    spec.stopped_by = spec.stopped_at = None
    dispatches = 0

    def drain() -> None:
        """Read the previous dispatch's metrics (one dispatch late) and log them when due."""
        popped = deferred.pop()
        if popped is None:
            return
        first, count, host = popped
        spec.record_metrics(first, count, host)
        last = first + count
        if last // log_every > first // log_every or last == total:
            window.host_wait = prefetch.wait_seconds
            postfix = spec.log_line(last, host, window)
            window.restart(logged=True)
            bar.set_postfix(**postfix)
            eta = clock.eta(last, total)
            if plain and (last // plain_every > first // plain_every or last == total):
                log_line(plain_progress(desc, last, total, postfix, eta))

    try:
        for first, host_batch in prefetch:
            count = size_of[first]
            state, metrics = spec.dispatch(state, host_batch)
            drain()  # the previous dispatch's metrics: the host never blocks the device
            deferred.push(first, count, metrics)
            prev, step = first, first + count
            bar.update(count)
            evaluate_now = spec.evaluation_due(prev, step)
            dispatches += 1
            if multi and multihost_utils.reached_preemption_sync_point(dispatches):
                stop.signal = "SIGTERM"
            if multi:  # every process must decide alike: the clock is process 0's, read at
                # logging steps; the other reasons are the same everywhere
                save_now = (step % ckpts.every_steps == 0 or step == total or bool(stop.signal)
                            or (step // log_every > prev // log_every
                                and _on_process_0(ckpts.due(step))))
            else:
                save_now = ckpts.due(step) or step == total or bool(stop.signal)
            if evaluate_now or save_now:
                drain()
            early = False
            if evaluate_now:
                state, early = spec.evaluate_at(step, state)
            # A SIGTERM that arrived during the evaluation (or the drain) stops the run here, so
            # this step is saved too. (Several processes only stop at the sync point above.)
            save_now = save_now or bool(stop.signal)
            if save_now or early:
                ckpts.save(step, state)
                writer.flush()
            if evaluate_now or save_now:  # keep evaluation and saving out of the speed figures
                window.start = time.perf_counter()
            if stop.signal:
                status = preempted(stop.signal, step)
                break
            if early:
                status = "early_stopped"
                break
        drain()
    finally:
        prefetch.close()
        bar.close()
        signals.__exit__(None, None, None)
        writer.flush()
    spec.stopped_by = stop.signal if status == "preempted" else None
    spec.stopped_at = step if status == "preempted" else None
    return LoopResult(state, step, status)


def kept_note(ckpts: Checkpoints, workdir: RunPath) -> str:
    """What a diverged run leaves to resume from, for its error line."""
    steps = ckpts.saved_steps()
    if steps:
        return (f"the last good checkpoint (step {max(steps)}) is kept in {workdir}/checkpoints: "
                "lower the learning rate or use a new --workdir")
    return ("no checkpoint was saved before it: start again in a new --workdir with a lower "
            "learning rate")
