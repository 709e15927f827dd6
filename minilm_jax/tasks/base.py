"""Shared types of the downstream-task package: examples, task specs, errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from minilm_jax.errors import UserError

Label = Union[int, float, None]


class TaskDataError(UserError, ValueError):
    """Malformed task data; the message names the file (and line) at fault."""


def fit_csv_fields(text: str) -> None:
    """Raise Python's CSV field size limit (131,072 characters by default, one process-wide
    setting) to the length of ``text``, a whole file read into memory: no field of it can be
    longer, so a long cell (a document of several megabytes) is read, never refused by the
    reader with a traceback."""
    import csv

    if len(text) >= csv.field_size_limit():
        csv.field_size_limit(len(text) + 1)


def not_utf8(path: Path) -> TaskDataError:
    """The error for a task file that is not UTF-8 text: names the file, the line of its first
    undecodable byte and that byte (the reader's own error knows neither the file nor the line)."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            byte = line[err.start]
            return TaskDataError(f"{path}, line {number}: not UTF-8 text (byte {byte:#04x} at "
                                 f"column {err.start + 1}); save the file as UTF-8")
    return TaskDataError(f"{path}: not UTF-8 text; save the file as UTF-8")


@dataclass(frozen=True)
class Example:
    """One labelled (or unlabelled) example of a downstream task.

    ``text_b`` is ``None`` for single-sentence tasks. ``label`` is a class
    index for classification, a float for regression (STS-B) and ``None`` for
    unlabelled test splits. ``uid`` is ``"<task>/<split>/<row>"`` (row =
    0-based data row of the source), unique within a task.
    """

    text_a: str
    text_b: str | None
    label: Label
    uid: str


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task.

    ``num_labels`` is 1 for regression. ``metric_names`` are the keys of the
    task's official metrics as returned by :func:`minilm_jax.tasks.metrics.task_metrics`.
    """

    name: str
    num_labels: int
    label_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    splits: tuple[str, ...]
    is_pair: bool = False

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1
