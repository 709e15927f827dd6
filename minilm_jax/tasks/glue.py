"""GLUE loaders: the ``glue_data/<TASK>/*.tsv`` layout of GLUE's download script, and TFDS.

Label ids follow TFDS / Hugging Face ``glue`` (e.g. MNLI entailment=0, neutral=1,
contradiction=2), so both sources give identical examples. STS-B labels are floats
in [0, 5]. Unlabelled test rows get ``label=None``.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .base import Example, TaskDataError, TaskSpec, fit_csv_fields, not_utf8
from .tfds_source import as_class_label, as_text, iter_tfds

_STD_SPLITS = ("train", "dev", "test")
_MNLI_SPLITS = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
_BIN = ("0", "1")


def _spec(name: str, labels: tuple[str, ...], metrics: tuple[str, ...], pair: bool,
          splits: tuple[str, ...] = _STD_SPLITS) -> TaskSpec:
    return TaskSpec(name=name, num_labels=max(1, len(labels)), label_names=labels,
                    metric_names=metrics, splits=splits, is_pair=pair)


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": _spec("cola", ("unacceptable", "acceptable"), ("mcc",), False),
    "sst2": _spec("sst2", ("negative", "positive"), ("accuracy",), False),
    "mrpc": _spec("mrpc", ("not_equivalent", "equivalent"), ("accuracy", "f1"), True),
    "qqp": _spec("qqp", ("not_duplicate", "duplicate"), ("accuracy", "f1"), True),
    "stsb": _spec("stsb", (), ("pearson", "spearman"), True),
    "mnli": _spec("mnli", ("entailment", "neutral", "contradiction"),
                  ("accuracy_m", "accuracy_mm"), True, _MNLI_SPLITS),
    "qnli": _spec("qnli", ("entailment", "not_entailment"), ("accuracy",), True),
    "rte": _spec("rte", ("entailment", "not_entailment"), ("accuracy",), True),
    "wnli": _spec("wnli", ("not_entailment", "entailment"), ("accuracy",), True),
}

#: Directory names used by GLUE's download script.
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
             "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}

# Raw label string in the TSV -> label id (same order as TaskSpec.label_names).
_RAW_LABELS: dict[str, tuple[str, ...]] = {
    "cola": _BIN, "sst2": _BIN, "mrpc": _BIN, "qqp": _BIN, "wnli": _BIN,
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
}


@dataclass(frozen=True)
class _Columns:
    """Header names of the text and label columns of a labelled TSV."""

    text_a: str
    text_b: str | None
    label: str


_COLUMNS = {
    "sst2": _Columns("sentence", None, "label"),
    "mrpc": _Columns("#1 String", "#2 String", "Quality"),
    "qqp": _Columns("question1", "question2", "is_duplicate"),
    "stsb": _Columns("sentence1", "sentence2", "score"),
    "mnli": _Columns("sentence1", "sentence2", "gold_label"),
    "qnli": _Columns("question", "sentence", "label"),
    "rte": _Columns("sentence1", "sentence2", "label"),
    "wnli": _Columns("sentence1", "sentence2", "label"),
}
# CoLA train/dev: no header, 4 fields: source, label, original label ('*' or empty), sentence.
_COLA_FIELDS, _COLA_LABEL, _COLA_TEXT = 4, 1, 3
_COLA_TEST = _Columns("sentence", None, "")

_TFDS_FIELDS = {"cola": ("sentence", None), "sst2": ("sentence", None),
                "mrpc": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
                "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
                "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
                "wnli": ("sentence1", "sentence2")}
_TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test",
                "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched",
                "test_matched": "test_matched", "test_mismatched": "test_mismatched"}

GLUE_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def glue_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a GLUE task (accepts ``CoLA``, ``SST-2``, ``sts-b``...)."""
    key = name.strip().lower()
    key = GLUE_ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {name!r}; known: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _check_split(spec: TaskSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(f"GLUE task {spec.name!r} has splits {spec.splits}, not {split!r}")


def _parse_label(task: str, raw: str, where: str) -> int | float:
    if task == "stsb":
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not (math.isfinite(score) and 0.0 <= score <= 5.0):
            raise TaskDataError(f"{where}: unknown label {raw!r} (STS-B scores lie in [0, 5])")
        return score
    names = _RAW_LABELS[task]
    if raw not in names:
        raise TaskDataError(f"{where}: unknown label {raw!r} for {task} (expected one of {names})")
    return names.index(raw)


def read_glue_tsv(path: str | Path, task: str, split: str,
                  on_bad_row: Literal["error", "skip"] = "error") -> list[Example]:
    """Read one GLUE TSV file (``csv.QUOTE_NONE``, as GLUE's script writes them).

    Every row must have as many fields as the header (4 for headerless CoLA);
    a short or long row raises :class:`TaskDataError` naming file and line, or is
    skipped with a warning when ``on_bad_row="skip"``. A file without data rows, or
    one that is not UTF-8, raises :class:`TaskDataError` naming it (and the first bad line).
    """
    spec = glue_task(task)
    task = spec.name
    _check_split(spec, split)
    path = Path(path)
    labelled = not split.startswith("test")
    examples: list[Example] = []
    skipped = 0
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    fit_csv_fields(text)  # a cell of any length the file holds
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task == "cola" and labelled:
            n_fields, idx_a, idx_b, idx_label = _COLA_FIELDS, _COLA_TEXT, None, _COLA_LABEL
        else:
            cols = _COLA_TEST if task == "cola" else _COLUMNS[task]
            header = next(reader, None)
            if header is None:
                raise TaskDataError(f"{path}: empty file (expected a header line)")
            wanted = [cols.text_a] + ([cols.text_b] if cols.text_b else [])
            wanted += [cols.label] if labelled else []
            missing = [c for c in wanted if c not in header]
            if missing:
                raise TaskDataError(f"{path}, line 1: header lacks columns {missing}; got {header}")
            n_fields = len(header)
            idx_a = header.index(cols.text_a)
            idx_b = header.index(cols.text_b) if cols.text_b else None
            idx_label = header.index(cols.label) if labelled else None
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if len(row) != n_fields:
                if on_bad_row == "skip":
                    skipped += 1
                    continue
                raise TaskDataError(f"{where}: expected {n_fields} tab-separated fields, "
                                    f"got {len(row)}")
            label = _parse_label(task, row[idx_label], where) if idx_label is not None else None
            examples.append(Example(text_a=row[idx_a],
                                    text_b=row[idx_b] if idx_b is not None else None,
                                    label=label, uid=f"{task}/{split}/{len(examples)}"))
    if not examples:
        raise TaskDataError(f"{path}: every data row has the wrong number of fields (skipped "
                            f"{skipped})" if skipped else
                            f"{path}: no data rows (the file is empty or holds a header alone)")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with the wrong number of fields",
                      stacklevel=2)
    return examples


def glue_tsv_path(data_dir: str | Path, task: str, split: str) -> Path:
    """``<data_dir>/<TASK>/<split>.tsv`` (``data_dir`` is the ``glue_data`` folder)."""
    spec = glue_task(task)
    _check_split(spec, split)
    return Path(data_dir) / GLUE_DIRS[spec.name] / f"{split}.tsv"


def load_glue_tfds(task: str, split: str, data_dir: str | None = None,
                   download: bool = True) -> list[Example]:
    """Load ``glue/<task>`` from TensorFlow Datasets (imported lazily)."""
    spec = glue_task(task)
    _check_split(spec, split)
    field_a, field_b = _TFDS_FIELDS[spec.name]
    name = f"glue/{spec.name}"
    examples = []
    for i, rec in enumerate(iter_tfds(name, _TFDS_SPLITS[split], data_dir, download)):
        where = f"tfds {name} split {_TFDS_SPLITS[split]} record {i}"
        if spec.is_regression:
            value = float(rec["label"])
            label: int | float | None = None if value == -1 else value
            if label is not None and not 0.0 <= label <= 5.0:
                raise TaskDataError(f"{where}: unknown label {value!r}")
        else:
            label = as_class_label(rec["label"], spec.num_labels, where)
        examples.append(Example(text_a=as_text(rec[field_a]),
                                text_b=as_text(rec[field_b]) if field_b else None,
                                label=label, uid=f"{spec.name}/{split}/{i}"))
    return examples


def load_glue(task: str, split: str, *, source: Literal["tsv", "tfds"] = "tsv",
              data_dir: str | Path | None = None,
              on_bad_row: Literal["error", "skip"] = "error",
              download: bool = True) -> list[Example]:
    """Load one split of a GLUE task.

    ``source="tsv"``: ``data_dir`` is the ``glue_data`` folder of GLUE's download
    script. ``source="tfds"``: ``data_dir`` is an optional TFDS data directory.
    Splits: ``train``, ``dev``, ``test``; MNLI: ``train``, ``dev_matched``,
    ``dev_mismatched``, ``test_matched``, ``test_mismatched``.
    """
    if source == "tsv":
        if data_dir is None:
            raise ValueError("load_glue(source='tsv') needs data_dir (the glue_data folder)")
        return read_glue_tsv(glue_tsv_path(data_dir, task, split), task, split, on_bad_row)
    if source == "tfds":
        return load_glue_tfds(task, split, None if data_dir is None else str(data_dir), download)
    raise ValueError(f"unknown source {source!r} (use 'tsv' or 'tfds')")
