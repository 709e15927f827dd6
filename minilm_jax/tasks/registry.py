"""The task registry: every downstream task in one place — its family, metrics, loader and
fine-tuning recipe.

Fine-tuning configs (``finetune_config``), data loading (``load_task_data``), metrics
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

from .base import TaskDataError
from .glue import GLUE_ALIASES, GLUE_TASKS
from .loaders import (TaskData, load_bbc_sentence_task, load_fewrel_task, load_folder_task,
                      load_glue_task, load_news_task)

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


# SPEC A6: batch 32, LR 2e-4, weight decay 0, 5 epochs, linear decay, no warmup.
GLUE_RECIPE = {"optim.peak_lr": 2e-4, "optim.weight_decay": 0.0, "train.epochs": 5,
               "train.batch_size": 32}
# SPEC B: AdamW 5e-5, batch 32, up to 50 epochs (early stopping on the validation split); weight
# decay 0.01 is not stated for fine-tuning: the pre-training value.
STUDY_B_RECIPE = {"optim.peak_lr": 5e-5, "optim.weight_decay": 0.01, "train.epochs": 50,
                  "train.batch_size": 32, "train.early_stopping_patience": 5,
                  "data.eval_splits": ("test",), "data.source": "csv"}
# The main job's BBC sentence tasks (minilm_jax.tasks.bbc).
BBC_SENTENCE_RECIPE = {**STUDY_B_RECIPE, "data.source": "bbc", "optim.peak_lr": 1e-3,
                       "train.epochs": 10, "train.early_stopping_patience": 0, "data.max_len": 64}
FOLDER_RECIPE = {**STUDY_B_RECIPE, "data.source": "folders", "data.eval_splits": ("holdout",)}

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
    for name, spec in GLUE_TASKS.items():
        recipe = dict(GLUE_RECIPE)
        if name == "mnli":
            recipe["data.eval_splits"] = ("dev_matched", "dev_mismatched")
        register_task(TaskEntry(name, "glue", spec.metric_names, load_glue_task, recipe))
    accuracy = ("accuracy",)
    register_task(TaskEntry("ag_news", "study_b", accuracy, load_news_task,
                            {**STUDY_B_RECIPE, "data.train_per_class": 1000,
                             "data.eval_per_class": 1000}))
    register_task(TaskEntry("dbpedia14", "study_b", accuracy, load_news_task,
                            {**STUDY_B_RECIPE, "data.train_per_class": 100,
                             "data.eval_per_class": 100}))
    register_task(TaskEntry("fewrel", "study_b", accuracy, load_fewrel_task,
                            {**STUDY_B_RECIPE, "data.source": "json", "data.train_per_class": 630,
                             "data.eval_per_class": 70}, splits_per_class=True))
    for name in ("folders", "bbc", "bbc_headlines"):
        register_task(TaskEntry(name, "local", accuracy, load_folder_task, FOLDER_RECIPE))
    for name in ("bbc_topic", "bbc_order"):
        register_task(TaskEntry(name, "local", accuracy, load_bbc_sentence_task,
                                BBC_SENTENCE_RECIPE))


_register_builtin()
