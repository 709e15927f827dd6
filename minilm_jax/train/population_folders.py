"""What a pre-training population's folders hold and may have lost: the metrics writers and locks
of its members used as one (:class:`Each`), each member's history cut back to the step the
population resumes from (:func:`truncate_members`), members whose history or best checkpoint is
gone refused (the stacked checkpoint holds their state, not their records), and a finished
population's summary when it is run again (:func:`finished_earlier`: nothing new is written;
garbled lines of its members' metrics are dropped and noted, :func:`drop_garbled_lines`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath
from minilm_jax.train.population import Member
from minilm_jax.train.records import (DONE, RecordError, read_population_summary,
                                      read_pretrain_summary)
from minilm_jax.train.run_log import MetricsWriter, read_metrics


class Each:
    """Several locks or metrics writers used as one: released, flushed or closed together."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

    def _each(self, method: str) -> None:
        for item in self.items:
            getattr(item, method)()

    def release(self) -> None:
        self._each("release")

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")


def truncate_members(writers: dict[str, MetricsWriter], step: int | None) -> int:
    """Cut each member's metrics history back to ``step`` (the population resumes there; None: it
    had finished, and only garbled lines go), as :func:`~minilm_jax.train.run_loop.restore` cuts
    a separate run's: records after it and garbled lines are dropped, and a member that lost any
    is named in a note saying what was recomputed and what was lost. Returns how many in all."""
    total = 0
    for name, writer in writers.items():
        dropped = writer.truncate_after(step)
        for note in dropped.notes(name):
            print(note, flush=True)
        total += dropped.total
    return total


def drop_garbled_lines(workdirs: dict[str, RunPath]) -> int:
    """A finished population's members (name -> folder): garbled lines of their metrics files
    dropped, counted and named in a note (:func:`truncate_members` with no step)."""
    writers = {name: MetricsWriter(workdir, tensorboard=False)
               for name, workdir in workdirs.items() if (workdir / "metrics.jsonl").is_file()}
    try:
        return truncate_members(writers, None)
    finally:
        for writer in writers.values():
            writer.close()


def trained_steps(workdir: RunPath) -> int:
    """The newest step the population's own checkpoints or summary record (0: never trained)."""
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir()
             if p.name.isdigit()] if (workdir / "checkpoints").is_dir() else []
    try:
        steps.append(int(json.loads((workdir / "summary.json").read_text())["step"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return max(steps, default=0)


def recorded_diverged(workdir: RunPath) -> set[str]:
    """Members the population's summary records as diverged (a member that diverged before
    its first record has no history to lose: populations before the empty ``metrics.jsonl``
    written at the start left none)."""
    try:
        members = read_population_summary(workdir).members
    except RecordError:
        return set()
    return {m.get("name") for m in members if m.get("status") == "diverged"}


def refuse_lost_members(workdir: RunPath, members: Sequence[Member]) -> None:
    """Refuse, in one line naming them, members whose history is gone (folder deleted, or its
    ``config.json`` or ``metrics.jsonl`` lost) while the population trained past step 0: the
    stacked checkpoint holds their state, not their metrics, best or snapshots, so resuming
    would report a member "completed" with no history. A member that lost only its final
    state or summary resumes from the population's checkpoint."""
    trained = trained_steps(workdir)
    if trained == 0:
        return
    diverged = recorded_diverged(workdir)
    lost = [f"{m.name} ({m.workdir}: no {' or '.join(missing)})" for m in members
            if (missing := [f for f in ("config.json", "metrics.jsonl")
                            if not (m.workdir / f).is_file()
                            and not (f == "metrics.jsonl" and m.name in diverged)])]
    lost += [f"{m.name} ({m.workdir}: {gap})" for m in members
             if (m.workdir / "metrics.jsonl").is_file() and (gap := _history_gap(m.workdir))]
    if lost:
        raise UserError(
            f"population {workdir} was trained to step {trained} but the history of "
            f"member {', '.join(lost)} is gone, which its checkpoint cannot rebuild: restore "
            f"the folder, or delete {workdir} and its members' folders to train again")


def finished_earlier(workdir: RunPath, members: Sequence[Member], total_steps: int,
                     keep_best: bool, start: int) -> dict[str, Any] | None:
    """The population's recorded summary when it had finished before this run (completed at
    ``start``, its last step, every member's summary written), else None: run again, a
    finished population writes nothing new (a member that lost its summary has it rebuilt)."""
    if start < total_steps:
        return None
    try:
        summary = read_population_summary(workdir)
        statuses = [read_pretrain_summary(m.workdir).status for m in members]
    except RecordError:
        return None
    if (summary.status != "completed" or summary.step != start
            or any(s not in (*DONE, "diverged") for s in statuses)):
        return None
    if keep_best and not all(_has_best(m.workdir) for m in members):
        return None  # a member that lost its best: refused by refuse_lost_bests
    drop_garbled_lines({m.name: m.workdir for m in members})  # dropped and counted, as on resume
    return summary.to_json()


def _has_best(workdir: RunPath) -> bool:
    """Whether a member's ``best/`` holds a checkpoint."""
    best = workdir / "best"
    return best.is_dir() and any(p.name.isdigit() for p in best.iterdir())


def refuse_lost_bests(workdir: RunPath, members: Sequence[Member], best_losses: Sequence[float],
                      keep_best: bool, start: int) -> None:
    """Refuse members that lost their best checkpoint (``best/``: no best loss restored, in
    ``best_losses``) although they were evaluated before ``start``, the step the population
    resumes from: their best cannot be rebuilt."""
    if not keep_best or start == 0:
        return
    lost = [f"{m.name} ({m.workdir / 'best'})"
            for m, best in zip(members, best_losses)
            if best == float("inf") and any(
                r.get("split") == "validation" and r.get("step", 0) <= start
                for r in read_metrics(m.workdir / "metrics.jsonl"))]
    if lost:
        raise UserError(f"population {workdir} resumes at step {start} but member "
                        f"{', '.join(lost)} lost its best checkpoint, which the population's "
                        "checkpoint cannot rebuild: restore it, or delete the population and "
                        "its members' folders to train again")


def _history_gap(workdir: Path) -> str:
    """What a member's ``metrics.jsonl`` lacks that its ``summary.json`` names (a file cut short:
    its best step's validation record), or "" when nothing is missing or nothing is recorded."""
    try:
        best = (read_pretrain_summary(workdir).best or {}).get("step")
    except RecordError:
        return ""
    if best is None:
        return ""
    steps = {r.get("step") for r in read_metrics(workdir / "metrics.jsonl")
             if r.get("split") == "validation"}
    return "" if best in steps else f"metrics.jsonl has no record of its best step {best}"
