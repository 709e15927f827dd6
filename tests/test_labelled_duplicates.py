"""A user's labelled file with the same text labelled twice: two different labels are refused in
one line naming how many texts and the first conflicting lines (a data error, and one label leaks
into the folds the other is scored on); exact repeats (same text, same label) are noted with their
count, said to leak between folds; a regression file's repeated texts with other values are noted,
not refused. The counts and line numbers are counted here from the rows written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from configs.finetune import get_config
from minilm_jax.errors import UserError
from minilm_jax.tasks import table
from minilm_jax.tasks.task_data import load_task_data


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def config(task: str, path: Path, folds: int = 3):
    c = get_config(task)
    c.data.dir, c.data.cv_folds, c.data.cv_fold = str(path), folds, 0
    return c


def rows(n: int = 30) -> list[tuple[str, str]]:
    return [(f"review {i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg")
            for i in range(n)]


def line_of(data: list[tuple[str, str]], index: int) -> int:
    return index + 2  # the header is line 1


def test_a_text_with_two_labels_is_refused_naming_the_count_and_lines(tmp_path):
    data = rows()
    data.append((data[3][0], "neg"))  # row 3 says pos
    data.append((data[8][0], "pos"))  # row 8 says neg
    data.append((data[8][0], "pos"))  # the same conflict again: still one text
    path = write(tmp_path / "labels.csv", data)
    with pytest.raises(UserError) as err:
        load_task_data(config("table", path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"task table: {path}: 2 text(s) labelled twice with different "
                              "labels (")
    assert (f"line {line_of(data, 3)} 'pos' vs line {line_of(data, 30)} 'neg'; line "
            f"{line_of(data, 8)} 'neg' vs line {line_of(data, 31)} 'pos'; line "
            f"{line_of(data, 8)} 'neg' vs line {line_of(data, 32)} 'pos')") in message


def test_exact_repeats_are_noted_with_their_count_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(table, "_NOTED", set())
    data = rows()
    data += [data[5], data[5], data[12]]  # 3 rows repeat an earlier row
    path = write(tmp_path / "labels.csv", data)
    first = load_task_data(config("table", path))
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {path}: 3 row(s) repeat an earlier row's text and label (first: line "
                     f"{line_of(data, 30)} = line {line_of(data, 5)}); cut into folds or a "
                     "holdout, a copy can be trained on while another is scored, so the held-out "
                     "score is optimistic: remove the repeats for a clean estimate"]
    kept = len(first.train) + len(first.validation) + len(first.evals["holdout"])
    assert kept == len(data)  # kept, not dropped
    load_task_data(config("table", path))  # the next fold run of the same file: no second note
    assert "note:" not in capsys.readouterr().out


def test_a_regression_files_repeated_text_with_another_value_is_noted(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(table, "_NOTED", set())
    data = [(f"sentence {i}", str(i / 4)) for i in range(20)] + [("sentence 2", "3.5")]
    path = write(tmp_path / "values.csv", data)
    load_task_data(config("table_regression", path))
    out = capsys.readouterr().out
    assert (f"note: {path}: 1 text(s) occur again with another value (first: line "
            f"{line_of(data, 2)} 0.5, line {line_of(data, 20)} 3.5)") in out


def test_a_clean_file_says_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(table, "_NOTED", set())
    load_task_data(config("table", write(tmp_path / "labels.csv", rows())))
    assert "note:" not in capsys.readouterr().out
