"""Run outputs: a JSONL metrics file, TensorBoard events and a progress bar."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

import minilm_jax.held_folders as held_folders
from minilm_jax.storage import atomic_write_bytes, is_remote, make_folder, run_path


# What tensorboardX's import loads where installed and no run uses, at a cost to every command
# that writes metrics: torch (its writer accepts torch tensors, which no run passes: ~1.5
# CPU-seconds) and google-cloud-storage (its writer of gs:// paths, which no run hands it: a
# bucket's events are staged locally and copied by minilm_jax.storage; ~0.15 CPU-seconds).
UNUSED_BY_TENSORBOARD = ("torch", "google.cloud.storage")


def _summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without the modules of
    :data:`UNUSED_BY_TENSORBOARD` that are not loaded yet: importing one of them fails during this
    import only, and each imports as usual afterwards."""
    import sys

    blocked = [] if "tensorboardX" in sys.modules else [
        name for name in UNUSED_BY_TENSORBOARD if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # ImportError for `import name`
    try:
        from tensorboardX import SummaryWriter
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return SummaryWriter


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Only process 0 writes. On an object store (``gs://``) the file is rewritten whole at every
    :meth:`flush` (no appends there); TensorBoard events are written to a local staging folder and
    copied into ``tensorboard/`` at every flush, through the same storage layer.
    """

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.remote = is_remote(workdir)
        self.path = run_path(workdir) / "metrics.jsonl"
        self._lines: list[str] = []
        if self.remote and self.enabled and self.path.exists():
            self._lines = _text_lines(self.path.read_bytes())
        self._tb = None
        self._tb_wanted = self.enabled and tensorboard  # opened at most once, at the first record
        self._tb_remote = f"{str(workdir).rstrip('/')}/tensorboard" if self.remote else None
        self._tb_dir = None if self.remote else str(Path(workdir) / "tensorboard")

    def _tensorboard(self):
        """The TensorBoard writer, opened at the first record (a run refused before its first step
        leaves no event file); None without ``tensorboardX``."""
        if self._tb is None and self._tb_wanted:
            self._tb_wanted = False
            try:
                SummaryWriter = _summary_writer_class()
            except ImportError:
                return None
            if self.remote:  # staged here, copied at each flush
                self._tb_dir = tempfile.mkdtemp(prefix="minilm-tensorboard-")
            else:  # made here: never a held root again (the writer's own makedirs finds it)
                make_folder(self._tb_dir)
            self._tb = SummaryWriter(self._tb_dir)
            self._describe_run()
        return self._tb

    def _describe_run(self) -> None:
        """The run's config (``config.json``, written before its first step) as TensorBoard
        hyperparameters of this run (the HParams tab filters and compares runs by them) and as a
        text table; the validation scalars are the hyperparameters' metrics."""
        from tensorboardX.summary import hparams

        path = self.path.parent / "config.json"
        if not path.exists():
            return
        config = json.loads(path.read_text())
        values = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                  for k, v in sorted(config.items())}
        metrics = ({"validation/score": 0.0, "validation/score_std": 0.0} if "task" in config
                   else {"validation/loss": 0.0, "validation/perplexity": 0.0})
        for summary in hparams(values, metrics):
            self._tb.file_writer.add_summary(summary)
        table = "\n".join(f"| `{k}` | `{v}` |" for k, v in values.items())
        self._tb.add_text("config", "| field | value |\n| --- | --- |\n" + table, 0)

    def truncate_after(self, step: int | None) -> "Dropped":
        """Drop the records after ``step`` (a resumed run recomputes them) and every garbled line
        (torn, undecodable, not a JSON object: its record cannot be read); ``step`` None (a
        finished run) keeps every readable record. What was dropped, and where: :class:`Dropped`.
        TensorBoard events are append-only and keep them (TensorBoard shows the newest)."""
        if not self.enabled or not self.path.exists():
            return Dropped(step)
        lines = self._lines if self.remote else _text_lines(self.path.read_bytes())
        dropped = Dropped.of(lines, step)
        if not dropped:
            return dropped
        kept = [line for line in lines if _step_of(line) <= (math.inf if step is None else step)
                and _record(line) is not None]
        if self.remote:
            self._lines = kept
            self.flush()
        else:
            atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode())
        return dropped

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: _py(v) for k, v in values.items()}}
        if self.remote:
            self._lines.append(json.dumps(record))
        else:
            held_folders.check()  # a held root moved away: one line, not a missing file
            with held_folders.gone_if_missing(), open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self._tensorboard() is not None:  # a list (one value per member): one curve each
            for key, value in record.items():
                if key in ("step", "split"):
                    continue
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{split}/{key}", value, step)
                elif isinstance(value, list) and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    for i, v in enumerate(value):
                        self._tb.add_scalar(f"{split}/{key}/member_{i}", v, step)

    def _rewrite_remote(self) -> None:
        """An object store's metrics file, written whole (no appends there)."""
        if self.remote and self.enabled:
            self.path.write_text("\n".join(self._lines) + "\n")

    def flush(self) -> None:
        self._rewrite_remote()
        if self._tb is not None:
            self._tb.flush()
            self._upload_events()

    def _upload_events(self) -> None:
        """Copy the staged event files (written whole again: object stores have no appends)."""
        if self._tb_remote is None:
            return
        target = run_path(self._tb_remote)
        target.mkdir(parents=True, exist_ok=True)  # a no-op on object stores
        for event_file in Path(self._tb_dir).iterdir():
            (target / event_file.name).write_bytes(event_file.read_bytes())

    def close(self) -> None:
        self._rewrite_remote()
        if self._tb is not None:
            self._tb.close()
            self._upload_events()
            self._tb = None
            if self.remote:
                shutil.rmtree(self._tb_dir, ignore_errors=True)


@dataclass(frozen=True)
class Dropped:
    """What :meth:`MetricsWriter.truncate_after` dropped from a metrics file cut back to ``step``
    (None: a finished run, nothing after it): ``later``, the records after the step (a resumed
    run recomputes them; a garbled line after a record past the step is one of them, records
    being appended in step order); ``lost``, where each garbled line lies that a kept record
    follows (its record is lost: the run resumes after it); ``unsure``, where each garbled line
    lies after the last kept record (a record past the step it held is recomputed, one of the
    step or before is lost)."""
    step: int | None
    later: int = 0
    lost: tuple[str, ...] = ()
    unsure: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.later + len(self.lost) + len(self.unsure)

    def __bool__(self) -> bool:
        return self.total > 0

    @classmethod
    def of(cls, lines: list[str], step: int | None) -> "Dropped":
        """Classify what cutting ``lines`` back to ``step`` drops."""
        limit = math.inf if step is None else step
        steps = [None if _record(line) is None else _step_of(line) for line in lines]
        later, lost, unsure = 0, [], []
        for i, value in enumerate(steps):
            if value is not None:
                later += value > limit
                continue
            before = next((v for v in reversed(steps[:i]) if v is not None), None)
            after = next((v for v in steps[i + 1:] if v is not None), None)
            if before is not None and before > limit:
                later += 1
            elif after is not None and after <= limit:
                lost.append(f"line {i + 1}, " + (f"between the records of steps {_n(before)} and "
                                                 f"{_n(after)}" if before is not None else
                                                 f"before the record of step {_n(after)}"))
            else:
                unsure.append(f"line {i + 1}" + (f", after the record of step {_n(before)}"
                                                 if before is not None else ""))
        return cls(step, later, tuple(lost), tuple(unsure))

    def notes(self, member: str = "") -> list[str]:
        """The ``note:`` lines saying what was dropped (``member``: the population member's
        name, said in each)."""
        of = f" of member {member}" if member else ""
        lines = []
        if self.later:
            lines.append(f"note: dropped {self.later} metrics record(s) after step {self.step} "
                         f"(recomputed now){of}")
        resumes = ("the run had finished" if self.step is None
                   else f"the run resumes from step {self.step}")
        if self.lost:
            lines.append(f"note: dropped {len(self.lost)} garbled metrics line(s){of} "
                         f"({'; '.join(self.lost)}): what they recorded is lost, not recomputed "
                         f"({resumes})")
        if self.unsure:
            lines.append(f"note: dropped {len(self.unsure)} garbled metrics line(s){of} "
                         f"({'; '.join(self.unsure)}): unreadable; " + (
                             "what they recorded is lost (the run had finished)"
                             if self.step is None else
                             f"a record of a step after {self.step} is recomputed now, one of "
                             f"step {self.step} or earlier is lost"))
        return lines


def _n(step: float) -> str:
    return str(int(step)) if float(step).is_integer() else str(step)


def _py(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def _text_lines(data: bytes) -> list[str]:
    """The lines of a metrics file's bytes, each decoded as UTF-8 on its own. A line that is not
    UTF-8 (a torn write, a damaged disk block) keeps its bad bytes as ``\\xNN`` escapes, which
    are never valid JSON: it is dropped and counted as any garbled line is, and the lines around
    it are read as usual."""
    return [line.decode("utf-8", errors="backslashreplace") for line in data.splitlines()]


def _record(line: str) -> dict[str, Any] | None:
    """The record of a line, or None for a garbled one (torn, undecodable, not a JSON object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _step_of(line: str) -> float:
    """A record line's step (a garbled line counts as past every step, so it is dropped)."""
    record = _record(line)
    try:
        return float(record["step"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return float("inf")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file, one per (step, split): a record written again (a resumed run
    that recomputed it, a re-run that scored its test split again) replaces the earlier one in
    place. A garbled line (a torn last line, bytes that are not UTF-8) is skipped."""
    records: dict[tuple[Any, Any], dict[str, Any]] = {}
    for line in _text_lines(run_path(path).read_bytes()):
        record = _record(line)
        if record is not None:
            records[(record.get("step"), record.get("split"))] = record  # a repeat keeps its place
    return list(records.values())


def has_record(workdir: str | Path, step: int, split: str) -> bool:
    """Whether ``workdir``'s ``metrics.jsonl`` holds a ``split`` record at ``step`` (a finished
    run's test record, not to be written twice when its summary is written again)."""
    path = run_path(workdir) / "metrics.jsonl"
    return path.exists() and any(r.get("step") == step and r.get("split") == split
                                 for r in read_metrics(path))


def on_terminal() -> bool:
    """Whether progress bars can redraw: stderr is a terminal (not a log file or a pipe)."""
    import sys
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A tqdm bar with ETA on a terminal (a no-op object when disabled, when stderr is a file or a
    pipe, or not on process 0: there the run prints plain lines, :func:`log_line`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                disable=not enabled or not on_terminal() or jax.process_index() != 0,
                smoothing=0.1)


def log_line(text: str) -> None:
    """A plain log line (process 0), printed above a progress bar if one is drawn."""
    if jax.process_index() != 0:
        return
    from tqdm.auto import tqdm
    tqdm.write(text)


def plain_progress(desc: str, step: int, total: int, values: dict[str, str],
                   eta_seconds: float | None = None) -> str:
    """``pretrain step 100/2500 (4%): loss 5.123 lr 1.00e-03 tok/s 41,200, ETA 3m12s``."""
    shown = " ".join(f"{k} {v}" for k, v in values.items())
    eta = "" if eta_seconds is None or step >= total else f", ETA {duration(eta_seconds)}"
    return f"{desc} step {step}/{total} ({100 * step / max(total, 1):.0f}%): {shown}{eta}"


def duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class EtaClock:
    """Time left from the rate since the first log line after compilation (evaluations and
    saves included: they recur until the end)."""

    def __init__(self) -> None:
        self._origin: tuple[int, float] | None = None

    def eta(self, step: int, total: int) -> float | None:
        import time

        now = time.perf_counter()
        if self._origin is None:
            self._origin = (step, now)
            return None
        first, start = self._origin
        if step <= first:
            return None
        return (total - step) * (now - start) / (step - first)
