"""Run outputs: a JSONL metrics file, TensorBoard events and a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from minilm_jax.storage import is_remote, run_path


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Only process 0 writes. On an object store (``gs://``) the file is rewritten whole at every
    :meth:`flush` (no appends there) and TensorBoard events are not written.
    """

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.remote = is_remote(workdir)
        self.path = run_path(workdir) / "metrics.jsonl"
        self._lines: list[str] = []
        if self.remote and self.enabled and self.path.exists():
            self._lines = self.path.read_text().splitlines()
        self._tb = None
        if self.enabled and tensorboard and self.remote:
            print(f"note: no TensorBoard events for the remote workdir {workdir}; metrics.jsonl "
                  "has every value", flush=True)
        elif self.enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: _py(v) for k, v in values.items()}}
        if self.remote:
            self._lines.append(json.dumps(record))
        else:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def flush(self) -> None:
        if self.remote and self.enabled:
            self.path.write_text("\n".join(self._lines) + "\n")
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self.remote:
            self.flush()
        if self._tb is not None:
            self._tb.close()


def _py(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file (tolerates a truncated last line)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A tqdm bar with ETA (a no-op object when disabled or not process 0)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                disable=not enabled or jax.process_index() != 0, smoothing=0.1)
