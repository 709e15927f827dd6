"""A labelled file with a cell longer than Python's CSV field size limit (131,072 characters by
default): a 10 MB document in the own-data table task's CSV, an AG News CSV and a GLUE TSV is read
whole, each row where it belongs, instead of a ``csv.Error`` traceback."""

from __future__ import annotations

import csv
from pathlib import Path

import ml_collections
import pytest

from minilm_jax.tasks.classification import AG_NEWS, read_class_csv
from minilm_jax.tasks.glue import read_glue_tsv
from minilm_jax.tasks.table import read_table

LONG = 10_000_000  # characters of the long cell


@pytest.fixture
def default_limit():
    """Python's default field size limit while the test runs (the setting is process-wide)."""
    before = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(before)


def long_text() -> str:
    words = ["the", "review", "went", "on", "and"]
    text = " ".join(words[i % len(words)] for i in range(LONG // 3))
    return text[:LONG].strip()


def test_a_10mb_cell_of_an_own_data_csv_is_read_whole(tmp_path, default_limit):
    text = long_text()
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([["short one", "neg"], [text, "pos"], ["short two", "neg"]])
    data = ml_collections.ConfigDict({"text_column": "text", "pair_column": "",
                                      "label_column": "label"})
    rows = read_table(path, data, regression=False)
    assert [(len(a), b, label, line) for a, b, label, line in rows] == [
        (9, None, "neg", 2), (len(text), None, "pos", 3), (9, None, "neg", 4)]
    assert rows[1][0] == text


def test_a_10mb_cell_of_a_class_csv_and_a_glue_tsv_is_read_whole(tmp_path, default_limit):
    text = long_text()
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["1", "a title", "a body"], ["3", "long", text]])
    examples = read_class_csv(path, AG_NEWS, "train")
    assert [(e.label, len(e.text_a)) for e in examples] == [(0, len("a title a body")),
                                                            (2, len("long ") + len(text))]
    tsv = tmp_path / "train.tsv"
    tsv.write_text(f"sentence\tlabel\nshort\t0\n{text}\t1\n")
    examples = read_glue_tsv(tsv, "sst2", "train")
    assert [(e.label, len(e.text_a)) for e in examples] == [(0, 5), (1, len(text))]
