"""Shared types of the downstream-task package: examples, task specs, errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from minilm_jax.errors import UserError

Label = Union[int, float, None]


class TaskDataError(UserError, ValueError):
    """Malformed task data; the message names the file (and line) at fault."""


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
