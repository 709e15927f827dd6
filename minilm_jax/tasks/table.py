"""A user's own labelled data as a task: CSV, TSV or JSON Lines files with a text column, an optional
pair column and a label column.

Two registry entries read it: ``table`` (classification; labels are any strings or integers, classes
in sorted order) and ``table_regression`` (a real-valued label). ``data.dir`` is either

- a folder holding ``<split>.csv`` / ``<split>.tsv`` / ``<split>.jsonl`` for ``data.train_split``
  and every split of ``data.eval_splits`` (e.g. ``train.csv`` and ``test.csv``), or
- one file: by default cross-validated (``data.cv_folds``, stratified by class; a regression
  file's folds are a seeded shuffle; each fold a run whose held-out fold is reported as
  ``holdout``, :func:`cross_validated`); with ``data.cv_folds=0`` a seeded per-class share
  (``data.holdout_fraction``) is held out and reported as ``holdout``.

The same text (and pair text) labelled twice with different labels is refused in one line naming
the count and the first conflicting lines (a data error, and cut into folds one label is trained on
while the other is scored); exact repeats (same text, same label) and a regression file's repeated
texts with other values are noted with their count (their copies can land on both sides of a
fold, which makes the held-out score optimistic).

Columns are named by ``data.text_column`` (default ``text``), ``data.pair_column`` (default empty:
single-text task) and ``data.label_column`` (default ``label``); CSV and TSV files have a header row.
Every problem is one :class:`TaskDataError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from minilm_jax.errors import UserError

from .base import Example, TaskDataError, TaskSpec, fit_csv_fields, not_utf8

SUFFIXES = (".csv", ".tsv", ".jsonl")
REGRESSION_TASK = "table_regression"
TABLE_TASKS = ("table", REGRESSION_TASK)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a CSV/TSV (header row first) or JSON Lines file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{path}, line {number}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}, line {number}: expected a JSON object per line")
            yield number, row
        return
    fit_csv_fields(text)  # a cell of any length the file holds
    reader = csv.DictReader(io.StringIO(text, newline=""),
                            delimiter="\t" if path.suffix == ".tsv" else ",")
    for row in reader:
        if None in row:  # more fields than the header names
            raise TaskDataError(f"{path}, line {reader.line_num}: {len(reader.fieldnames or []) + len(row[None])} "
                                f"fields, the header has {len(reader.fieldnames or [])}")
        yield reader.line_num, row


def _column(path: Path, number: int, row: dict[str, Any], column: str, field: str) -> Any:
    if column not in row:
        raise TaskDataError(f"{path}, line {number}: no column {column!r} (data.{field}); the row has "
                            f"{sorted(row)}")
    return row[column]


def _text(path: Path, number: int, row: dict[str, Any], column: str, field: str) -> str:
    value = _column(path, number, row, column, field)
    if not isinstance(value, str) or not value.strip():
        raise TaskDataError(f"{path}, line {number}: column {column!r} must be non-empty text, "
                            f"got {value!r}")
    return value.strip()


def read_table(path: str | Path, data: ml_collections.ConfigDict, regression: bool
               ) -> list[tuple[str, str | None, Any, int]]:
    """``(text_a, text_b, raw label, line)`` of every row of one file."""
    path = Path(path)
    rows = []
    for number, row in _rows(path):
        text_a = _text(path, number, row, data.text_column, "text_column")
        text_b = _text(path, number, row, data.pair_column, "pair_column") if data.pair_column else None
        label = _column(path, number, row, data.label_column, "label_column")
        if regression:
            try:
                label = float(label)
            except (TypeError, ValueError):
                label = math.nan
            if not math.isfinite(label):
                raise TaskDataError(f"{path}, line {number}: label {row[data.label_column]!r} is not a "
                                    "finite number (task table_regression)")
        elif isinstance(label, (dict, list)) or label is None or not str(label).strip():
            raise TaskDataError(f"{path}, line {number}: empty or non-scalar label {label!r}")
        else:
            label = str(label).strip()
        rows.append((text_a, text_b, label, number))
    if not rows:
        raise TaskDataError(f"{path}: no rows")
    return rows


_NOTED: set[tuple[str, str]] = set()  # (file, note) already printed by this process
SHOWN_CONFLICTS = 3  # conflicting pairs of lines an error names


def check_repeated_texts(path: Path, rows: list[tuple[str, str | None, Any, int]],
                         regression: bool, one_file: bool) -> None:
    """Refuse a classification file whose text (with its pair text) occurs with two different
    labels: one :class:`TaskDataError` naming how many texts and the first conflicting lines.
    Note (once per process) exact repeats, and a regression file's repeated texts with other
    values, with their count; ``one_file``: the file is cut into folds or a holdout, which its
    repeats leak across."""
    first: dict[tuple[str, str | None], tuple[Any, int]] = {}
    conflicts: list[tuple[int, Any, int, Any]] = []
    conflicting: set[tuple[str, str | None]] = set()
    repeats: list[tuple[int, int]] = []  # (line, the earlier line it repeats)
    for text_a, text_b, label, number in rows:
        key = (text_a, text_b)
        if key not in first:
            first[key] = (label, number)
        elif first[key][0] == label:
            repeats.append((number, first[key][1]))
        else:
            conflicts.append((first[key][1], first[key][0], number, label))
            conflicting.add(key)
    if conflicts and not regression:
        shown = "; ".join(f"line {a} {la!r} vs line {b} {lb!r}"
                          for a, la, b, lb in conflicts[:SHOWN_CONFLICTS])
        raise TaskDataError(
            f"{path}: {len(conflicting)} text(s) labelled twice with different labels ({shown}"
            f"{'; ...' if len(conflicts) > SHOWN_CONFLICTS else ''}): give each text one label "
            "(the same text with two labels is a data error, and once the file is cut into "
            "folds one label is trained on while the other is scored)")
    leak = ("; cut into folds or a holdout, a copy can be trained on while another is scored, "
            "so the held-out score is optimistic: remove the repeats for a clean estimate"
            if one_file else "")
    notes = []
    if repeats:
        line, earlier = repeats[0]
        notes.append(f"{len(repeats)} row(s) repeat an earlier row's text and label (first: line "
                     f"{line} = line {earlier}){leak}")
    if conflicts:  # regression: the same text with other values (e.g. several raters)
        a, va, b, vb = conflicts[0]
        notes.append(f"{len(conflicting)} text(s) occur again with another value (first: line {a} "
                     f"{va!r}, line {b} {vb!r}){leak}")
    for note in notes:
        if (str(path), note) not in _NOTED:
            _NOTED.add((str(path), note))
            print(f"note: {path}: {note}", flush=True)


def cross_validated(task: str, data: ml_collections.ConfigDict) -> bool:
    """True when ``task`` reads one labelled file (no split of its own to report on) and
    ``data.cv_folds`` > 0: every row is then scored once, out of fold, by k-fold cross-validation
    (stratified by class; a regression file's folds: a seeded shuffle; each fold a run;
    :mod:`minilm_jax.finetune.run` runs them all)."""
    return (task in TABLE_TASKS and bool(data.dir) and Path(data.dir).is_file()
            and int(data.get("cv_folds", 0)) > 0)


def class_names(labels: set[str]) -> tuple[str, ...]:
    """Class names in a stable order: numerically when every label is an integer, else as text."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def split_file(root: Path, split: str) -> Path:
    """The file of ``split`` in a table folder (one of :data:`SUFFIXES`)."""
    found = [root / f"{split}{suffix}" for suffix in SUFFIXES if (root / f"{split}{suffix}").is_file()]
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise TaskDataError(f"{root}: {what} file for split {split!r} (expected one of "
                            f"{', '.join(split + s for s in SUFFIXES)})")
    return found[0]


def table_task(task: str, data: ml_collections.ConfigDict
               ) -> tuple[TaskSpec, dict[str, list[Example]], bool]:
    """The task's spec and examples per split; True when they came from one file (then the caller
    holds out a share). Class labels are indexed by :func:`class_names` of the training labels; a
    reported split with a label unseen in training is an error naming the file and line."""
    if not data.dir:
        raise UserError(f"task {task} needs --config.data.dir=PATH: a CSV/TSV/JSONL file, or a folder "
                        "with <split>.csv|.tsv|.jsonl for the train and evaluation splits")
    root = Path(data.dir)
    if not root.exists():
        raise FileNotFoundError(f"task {task}: data.dir not found: {root}")
    regression = task == REGRESSION_TASK
    one_file = root.is_file()
    if one_file:
        if root.suffix not in SUFFIXES:
            raise TaskDataError(f"{root}: a task file must end in {', '.join(SUFFIXES)}")
        files = {"all": root}
    else:
        files = {s: split_file(root, s) for s in (data.train_split, *data.eval_splits)}
    tables = {split: read_table(path, data, regression) for split, path in files.items()}
    for split, rows in tables.items():
        check_repeated_texts(files[split], rows, regression, one_file)
    train_split = "all" if one_file else data.train_split
    if regression:
        names: tuple[str, ...] = ("value",)
        index: dict[Any, Any] = {}
    else:
        names = class_names({label for _, _, label, _ in tables[train_split]})
        if len(names) < 2:
            raise TaskDataError(f"{files[train_split]}: one class only ({names[0]!r}); a "
                                "classification task needs at least two")
        index = {name: i for i, name in enumerate(names)}
    examples: dict[str, list[Example]] = {}
    for split, rows in tables.items():
        out = examples[split] = []
        for text_a, text_b, label, number in rows:
            if not regression:
                if label not in index:
                    raise TaskDataError(f"{files[split]}, line {number}: label {label!r} does not "
                                        f"occur in the training file (classes: {list(names)[:10]})")
                label = index[label]
            out.append(Example(text_a, text_b, label, f"{task}/{split}/{number}"))
    metrics = ("pearson", "spearman") if regression else ("accuracy", "macro_f1")
    splits = ("train", "holdout") if one_file else (data.train_split, *data.eval_splits)
    spec = TaskSpec(task, 1 if regression else len(names), names, metrics, splits,
                    is_pair=bool(data.pair_column))
    return spec, examples, one_file
