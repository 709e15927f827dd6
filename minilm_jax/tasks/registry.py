"""The task registry: every downstream task in one place — its family, metrics, loader and
fine-tuning recipe (the built-in tasks' recipes are in ``configs/task_recipes.py``).

Fine-tuning configs (``configs/finetune.py``), data loading (``load_task_data``), metrics
(``task_metrics``, ``glue_score``), results tables and sweeps only look tasks up here. Adding a task
is one :func:`register_task` call with a loader::

    register_task(TaskEntry("my_task", family="local", metric_names=("accuracy",),
                            load=my_loader, recipe={"train.epochs": 3, "data.eval_splits": ("test",)}))

where ``my_loader(task, data_config) -> TaskData`` returns the task's spec, training examples and
reported splits (see ``minilm_jax.tasks.loaders``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from minilm_jax.configs.task_recipes import TASK_RECIPES

from .base import TaskDataError
from .glue import GLUE_ALIASES, GLUE_TASKS
from .loaders import (TaskData, load_bbc_sentence_task, load_fewrel_task, load_folder_task,
                      load_glue_task, load_news_task, load_table_task)

Loader = Callable[[str, ml_collections.ConfigDict], TaskData]
FAMILIES = ("glue", "study_b", "local")


class UnknownTask(TaskDataError):
    """A task name the registry does not hold."""


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """One downstream task.

    ``metric_names``: the official metrics (their mean is the task's score). ``recipe``: fine-tuning
    config fields (``"optim.peak_lr": 2e-4``) applied over the generic defaults.
    ``splits_per_class``: the loader draws per-class train / reported splits itself (FewRel), so
    ``data.train_per_class`` is not applied again afterwards.
    """

    name: str
    family: str
    metric_names: tuple[str, ...]
    load: Loader
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    splits_per_class: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"task {self.name}: family must be one of {FAMILIES}, "
                             f"not {self.family!r}")
        if not self.metric_names:
            raise ValueError(f"task {self.name}: no metric names")


_REGISTRY: dict[str, TaskEntry] = {}


def register_task(entry: TaskEntry, *, replace: bool = False) -> TaskEntry:
    """Add ``entry`` (refusing a name already taken unless ``replace``)."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"task {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_task(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_task(name: str) -> TaskEntry:
    """The entry of ``name`` (case-insensitive; GLUE spellings such as ``SST-2`` or ``sts-b``
    accepted); :class:`UnknownTask` names the known ones."""
    key = name.strip().lower()
    key = GLUE_ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownTask(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def task_names(family: str | None = None) -> tuple[str, ...]:
    """Registered task names (of one family), in registration order."""
    return tuple(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def _register_builtin() -> None:
    """The built-in tasks; each one's recipe is its entry of ``configs/task_recipes.py``."""
    for name, spec in GLUE_TASKS.items():
        register_task(TaskEntry(name, "glue", spec.metric_names, load_glue_task,
                                TASK_RECIPES[name]))
    accuracy = ("accuracy",)
    for name in ("ag_news", "dbpedia14"):
        register_task(TaskEntry(name, "study_b", accuracy, load_news_task, TASK_RECIPES[name]))
    register_task(TaskEntry("fewrel", "study_b", accuracy, load_fewrel_task, TASK_RECIPES["fewrel"],
                            splits_per_class=True))
    for name in ("folders", "bbc", "bbc_headlines"):
        register_task(TaskEntry(name, "local", accuracy, load_folder_task, TASK_RECIPES[name]))
    for name in ("bbc_topic", "bbc_order"):
        register_task(TaskEntry(name, "local", accuracy, load_bbc_sentence_task,
                                TASK_RECIPES[name]))
    # a user's labelled CSV/TSV/JSONL files (minilm_jax.tasks.table)
    register_task(TaskEntry("table", "local", ("accuracy", "macro_f1"), load_table_task,
                            TASK_RECIPES["table"]))
    register_task(TaskEntry("table_regression", "local", ("pearson", "spearman"), load_table_task,
                            TASK_RECIPES["table_regression"]))


_register_builtin()
