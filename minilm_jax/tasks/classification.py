"""Study B classification tasks: AG News, DBpedia-14 (CSV or TFDS) and FewRel (JSON).

Texts: with ``text_mode="join"`` (default) the title and body are joined with one
space into ``text_a`` (as Hugging Face's ``ag_news`` ``text`` field); with
``"pair"`` the title is ``text_a`` and the body ``text_b``. Text is kept verbatim
(AG News keeps its ``\\`` line-break marks and HTML entities such as ``#39;``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .base import Example, TaskDataError, TaskSpec, fit_csv_fields, not_utf8
from .tfds_source import as_class_label, as_text, iter_tfds

TextMode = Literal["join", "pair"]

AG_NEWS = TaskSpec("ag_news", 4, ("World", "Sports", "Business", "Sci/Tech"),
                   ("accuracy",), ("train", "test"))
DBPEDIA14 = TaskSpec("dbpedia14", 14, (
    "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
    "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
    "Album", "Film", "WrittenWork"), ("accuracy",), ("train", "test"))

#: Default entity markers inserted around FewRel head (E1) and tail (E2) mentions.
FEWREL_MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")


def _utf8_text(path: Path) -> str:
    """The text of a task file; one that is not UTF-8 is a :class:`TaskDataError` naming it."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def _make_text(title: str | None, body: str, mode: TextMode) -> tuple[str, str | None]:
    if mode == "pair":
        return (title, body) if title is not None else (body, None)
    if mode == "join":
        return (f"{title} {body}" if title else body), None
    raise ValueError(f"unknown text_mode {mode!r} (use 'join' or 'pair')")


def read_class_csv(path: str | Path, spec: TaskSpec, split: str,
                   text_mode: TextMode = "join") -> list[Example]:
    """Read a Zhang et al. (2015) CSV: ``class index (1-based), [title,] body``.

    The title column is optional (2 or 3 fields), but every row of one file must
    have the same number of fields as its first row. An empty file, or one that is not UTF-8,
    raises :class:`TaskDataError` naming it (and the first bad line).
    """
    path = Path(path)
    examples: list[Example] = []
    n_fields = None
    text = _utf8_text(path)
    fit_csv_fields(text)  # a cell of any length the file holds
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if n_fields is None:
                if len(row) not in (2, 3):
                    raise TaskDataError(f"{where}: expected 2 or 3 CSV fields "
                                        f"(class, [title,] text), got {len(row)}")
                n_fields = len(row)
            elif len(row) != n_fields:
                raise TaskDataError(f"{where}: expected {n_fields} CSV fields, got {len(row)}")
            raw = row[0].strip()
            if not (raw.isdigit() and 1 <= int(raw) <= spec.num_labels):
                raise TaskDataError(f"{where}: unknown label {row[0]!r} "
                                    f"(expected a class index 1..{spec.num_labels})")
            title = row[1] if n_fields == 3 else None
            text_a, text_b = _make_text(title, row[-1], text_mode)
            examples.append(Example(text_a, text_b, int(raw) - 1,
                                    f"{spec.name}/{split}/{len(examples)}"))
    if not examples:
        raise TaskDataError(f"{path}: empty file (no rows)")
    return examples


def load_ag_news(data_dir: str | Path, split: str, text_mode: TextMode = "join") -> list[Example]:
    """AG News ``<data_dir>/<split>.csv`` (original format: class 1-4, title, description)."""
    if split not in AG_NEWS.splits:
        raise ValueError(f"AG News splits are {AG_NEWS.splits}, not {split!r}")
    return read_class_csv(Path(data_dir) / f"{split}.csv", AG_NEWS, split, text_mode)


def load_dbpedia14(data_dir: str | Path, split: str,
                   text_mode: TextMode = "join") -> list[Example]:
    """DBpedia-14 ``<split>.csv`` (class, title, content) or ``<split>_content_only.csv``."""
    if split not in DBPEDIA14.splits:
        raise ValueError(f"DBpedia-14 splits are {DBPEDIA14.splits}, not {split!r}")
    for name in (f"{split}.csv", f"{split}_content_only.csv"):
        path = Path(data_dir) / name
        if path.exists():
            return read_class_csv(path, DBPEDIA14, split, text_mode)
    raise FileNotFoundError(f"no {split}.csv or {split}_content_only.csv in {data_dir}")


def _load_tfds_classes(name: str, spec: TaskSpec, split: str, body: str,
                       text_mode: TextMode, data_dir: str | None,
                       download: bool) -> list[Example]:
    examples = []
    for i, rec in enumerate(iter_tfds(name, split, data_dir, download)):
        label = as_class_label(rec["label"], spec.num_labels, f"tfds {name} {split} record {i}")
        text_a, text_b = _make_text(as_text(rec["title"]), as_text(rec[body]), text_mode)
        examples.append(Example(text_a, text_b, label, f"{spec.name}/{split}/{i}"))
    return examples


def load_ag_news_tfds(split: str, text_mode: TextMode = "join", data_dir: str | None = None,
                      download: bool = True) -> list[Example]:
    """AG News from TFDS ``ag_news_subset`` (fields title, description, label 0-3)."""
    return _load_tfds_classes("ag_news_subset", AG_NEWS, split, "description", text_mode,
                              data_dir, download)


def load_dbpedia14_tfds(split: str, text_mode: TextMode = "join", data_dir: str | None = None,
                        download: bool = True) -> list[Example]:
    """DBpedia-14 from TFDS's community catalogue ``huggingface:dbpedia_14/dbpedia_14``."""
    return _load_tfds_classes("huggingface:dbpedia_14/dbpedia_14", DBPEDIA14, split,
                              "content", text_mode, data_dir, download)


# --------------------------------------------------------------------------- FewRel

def mark_entities(tokens: Sequence[str], head: Sequence[int], tail: Sequence[int],
                  markers: Sequence[str] = FEWREL_MARKERS) -> str:
    """Join ``tokens`` with spaces, wrapping the head span in E1 and tail span in E2 markers.

    A span runs from the first to the last of its token positions. Example:
    ``"LEAD : [E1] Cris Carter [/E1] , the [E2] wide receiver [/E2] picked ..."``.
    """
    open_h, close_h, open_t, close_t = markers
    before: list[list[str]] = [[] for _ in tokens]
    after: list[list[str]] = [[] for _ in tokens]
    for (opener, closer), span in (((open_h, close_h), head), ((open_t, close_t), tail)):
        before[min(span)].append(opener)
        after[max(span)].insert(0, closer)
    words: list[str] = []
    for tok, pre, post in zip(tokens, before, after):
        words.extend(pre)
        words.append(tok)
        words.extend(post)
    return " ".join(words)


def fewrel_spec(relations: Sequence[str]) -> TaskSpec:
    """TaskSpec for relation classification over ``relations`` (label = sorted position)."""
    names = tuple(sorted(relations))
    return TaskSpec("fewrel", len(names), names, ("accuracy",), ("train", "test"))


def load_fewrel(path: str | Path, relations: Sequence[str] | None = None,
                markers: Sequence[str] = FEWREL_MARKERS) -> tuple[list[Example], TaskSpec]:
    """Load a FewRel JSON file (``relation -> [{tokens, h, t}, ...]``) for classification.

    Each instance becomes one example whose ``text_a`` is the sentence with entity
    markers (see :func:`mark_entities`; the first mention of head and tail is
    marked). Labels index the sorted relation ids (``relations`` fixes that list
    across files; a relation of the file not in it raises). ``uid`` is
    ``fewrel/<file stem>/<row>`` over relations in sorted order.
    """
    path = Path(path)
    text = _utf8_text(path)
    if not text.strip():
        raise TaskDataError(f"{path}: empty file (expected a JSON object relation -> instances)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskDataError(f"{path}, line {err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise TaskDataError(f"{path}: expected a JSON object relation -> instances")
    spec = fewrel_spec(relations if relations is not None else list(data))
    unknown = sorted(set(data) - set(spec.label_names))
    if unknown:
        raise TaskDataError(f"{path}: unknown label(s) {unknown[:5]} not in the given relations")
    examples = []
    for label, relation in enumerate(spec.label_names):
        for j, inst in enumerate(data.get(relation, [])):
            where = f"{path}: relation {relation!r} instance {j}"
            try:
                tokens = inst["tokens"]
                head, tail = inst["h"][2][0], inst["t"][2][0]
                if not (head and tail and max(head + tail) < len(tokens) and min(head + tail) >= 0):
                    raise ValueError("entity positions outside the sentence")
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise TaskDataError(f"{where}: malformed instance ({err})") from err
            examples.append(Example(mark_entities(tokens, head, tail, markers), None, label,
                                    f"fewrel/{path.stem}/{len(examples)}"))
    return examples, spec
