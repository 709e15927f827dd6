"""A user's own labelled files as a task (``table``, ``table_regression``), and the own-data path end
to end: text -> tokenizer -> shards -> pre-training -> fine-tuning on a labelled CSV
(``launch/own_data.sh``), on real text (WikiText-2) and real labels (SST-2) when ../shared/data has
them."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import xla_flags
from configs.finetune import get_config
from minilm_jax.errors import UserError
from minilm_jax.tasks.metrics import macro_f1, task_metrics
from minilm_jax.tasks.task_data import load_task_data

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINILM_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def config(task: str, data_dir: Path, **data: object):
    c = get_config(task)
    c.data.dir = str(data_dir)
    for key, value in data.items():
        c.data[key] = value
    return c


def reviews(n: int) -> list[list]:
    return [[f"review number {i} was {'good' if i % 3 else 'bad'}", "pos" if i % 3 else "neg"]
            for i in range(n)]


def test_a_folder_of_csv_splits_with_named_columns(tmp_path):
    write_csv(tmp_path / "train.csv", ["review", "sentiment"], reviews(30))
    write_csv(tmp_path / "test.csv", ["review", "sentiment"], reviews(9))
    data = load_task_data(config("table", tmp_path, text_column="review", label_column="sentiment"))
    assert data.spec.label_names == ("neg", "pos") and data.spec.num_labels == 2
    assert not data.spec.is_pair and data.spec.metric_names == ("accuracy", "macro_f1")
    assert sorted(data.evals) == ["test"] and len(data.evals["test"]) == 9
    assert len(data.train) + len(data.validation) == 30  # validation carved from train
    first = data.evals["test"][0]
    assert (first.text_a, first.label, first.uid) == ("review number 0 was bad", 0, "table/test/2")


def test_one_jsonl_file_without_folds_holds_out_a_seeded_share_per_class(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"a": f"first {i}", "b": f"second {i}", "label": i % 3} for i in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = config("table", path, text_column="a", pair_column="b", holdout_fraction=0.25, cv_folds=0)
    data = load_task_data(c)
    assert data.spec.is_pair and data.spec.label_names == ("0", "1", "2")
    held = data.evals["holdout"]
    assert len(held) == 15 and {ex.label for ex in held} == {0, 1, 2}
    assert held[0].text_b.startswith("second ")
    again = load_task_data(c)
    assert [ex.uid for ex in again.evals["holdout"]] == [ex.uid for ex in held]  # seeded


def test_regression_reads_real_valued_labels_from_tsv(tmp_path):
    rows = [[f"sentence {i}", f"other {i}", f"{i / 10:.1f}"] for i in range(40)]
    write_csv(tmp_path / "train.tsv", ["s1", "s2", "score"], rows, delimiter="\t")
    write_csv(tmp_path / "test.tsv", ["s1", "s2", "score"], rows[:8], delimiter="\t")
    data = load_task_data(config("table_regression", tmp_path, text_column="s1", pair_column="s2",
                                 label_column="score"))
    assert data.spec.is_regression and data.spec.metric_names == ("pearson", "spearman")
    assert [ex.label for ex in data.evals["test"][:3]] == [0.0, 0.1, 0.2]


@pytest.mark.parametrize("make, message", [
    (lambda d: write_csv(d / "train.csv", ["text", "y"], reviews(5)),
     r"train.csv, line 2: no column 'label' \(data.label_column\)"),
    (lambda d: (write_csv(d / "train.csv", ["text", "label"], reviews(9)),
                write_csv(d / "test.csv", ["text", "label"], [["an odd one", "maybe"]])),
     r"test.csv, line 2: label 'maybe' does not occur in the training file"),
    (lambda d: write_csv(d / "train.csv", ["text", "label"], [["only", "pos"], ["one", "pos"]]),
     r"one class only \('pos'\)"),
    (lambda d: write_csv(d / "train.csv", ["text", "label"], [["fine", "pos"], ["", "neg"]]),
     r"train.csv, line 3: column 'text' must be non-empty text"),
    (lambda d: (d / "train.csv").write_bytes(b"text,label\ncaf\xe9,pos\n"),
     r"train.csv, line 2: not UTF-8 text \(byte 0xe9"),
    (lambda d: (d / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", \n'),
     r"train.jsonl, line 2: invalid JSON"),
    (lambda d: None, r"no file for split 'train'"),
])
def test_bad_files_are_one_error_naming_file_and_line(tmp_path, make, message):
    make(tmp_path)
    if not (tmp_path / "test.csv").exists():
        write_csv(tmp_path / "test.csv", ["text", "label"], reviews(6))
    with pytest.raises(UserError, match=message):
        load_task_data(config("table", tmp_path))


def test_a_regression_label_that_is_not_a_number_is_refused(tmp_path):
    path = write_csv(tmp_path / "scores.csv", ["text", "label"], [["a", "1.5"], ["b", "high"]])
    with pytest.raises(UserError, match=r"scores.csv, line 3: label 'high' is not a finite number"):
        load_task_data(config("table_regression", path))


def test_macro_f1_weighs_every_class_equally():
    labels = [0, 0, 0, 0, 1]
    assert macro_f1([0, 0, 0, 0, 0], labels) == pytest.approx((8 / 9 + 0) / 2)
    assert macro_f1(labels, labels) == 1.0
    assert task_metrics("table", [0, 1, 1], [0, 1, 0]) == {
        "accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(2 / 3)}


def test_one_file_is_cut_into_stratified_folds_each_row_held_out_once(tmp_path):
    """data.cv_folds (the default for one file): fold k's run trains on the other folds and
    reports fold k; over the folds every row is held out exactly once, each class spread evenly;
    the partition is the seed's (another seed, another partition; the same seed, the same)."""
    path = write_csv(tmp_path / "reviews.csv", ["text", "label"], reviews(62))
    assert config("table", path).data.cv_folds == 10  # the default: +-5 points on 1,200 rows
    c = config("table", path, cv_folds=5)
    assert c.data.cv_fold == -1
    with pytest.raises(UserError, match="cross-validates the file"):
        load_task_data(c)  # every fold is a run: the finetune command runs them
    held: list[str] = []
    for fold in range(5):
        data = load_task_data(config("table", path, cv_folds=5, cv_fold=fold, cv_seed=3))
        rows = data.evals["holdout"]
        train = {ex.uid for ex in data.train + data.validation}
        assert not train & {ex.uid for ex in rows} and len(train) + len(rows) == 62
        assert sorted(ex.label for ex in rows).count(0) in (4, 5)  # 21 "neg" rows over 5 folds
        held += [ex.uid for ex in rows]
    assert sorted(held) == sorted(f"table/all/{i}" for i in range(2, 64))
    again = load_task_data(config("table", path, cv_folds=5, cv_fold=0, cv_seed=3)).evals["holdout"]
    other = load_task_data(config("table", path, cv_folds=5, cv_fold=0, cv_seed=4)).evals["holdout"]
    assert [e.uid for e in again] == [e.uid for e in load_task_data(
        config("table", path, cv_folds=5, cv_fold=0, cv_seed=3)).evals["holdout"]]
    assert {e.uid for e in again} != {e.uid for e in other}
    few = write_csv(tmp_path / "few.csv", ["text", "label"], reviews(30) + [["odd one", "rare"]])
    with pytest.raises(UserError, match="class 'rare' has 1 examples, fewer than the 5 folds"):
        load_task_data(config("table", few, cv_folds=5, cv_fold=0))
    # a folder of splits is used as given, and cv_folds=0 keeps the seeded holdout
    assert not config("table", tmp_path).data.dir.endswith(".csv")
    plain = load_task_data(config("table", path, cv_folds=0))
    assert len(plain.evals["holdout"]) == 12


# Every fine-tuning batch padded to max_len: one train and one evaluation program, compiled once
# and reused by both inits and the second labelled file, instead of one per 16-token bucket
# (bucketing: test_finetune_selection.py's test_bucketed_padding_changes_no_logits).
ONE_SHAPE = ("--config.data.pad_buckets=0",)


def test_own_text_and_labels_end_to_end(tmp_path):
    """The documented own-data script at a small size: WikiText-2 text -> a 500-piece tokenizer ->
    64-token shards -> 30 pre-training steps -> fine-tuning (pre-trained and random twin, 2 seeds
    x 3 cross-validation folds) on 600 SST-2 sentences written as a CSV with the user's own column
    names and string labels."""
    text = SHARED / "wikitext2" / "tokenized" / "wiki.valid.tokens"
    sst2 = SHARED / "glue" / "SST-2" / "train.tsv"
    if not (text.is_file() and sst2.is_file()):
        pytest.skip("needs ../shared/data (WikiText-2, GLUE SST-2)")
    rows = [line.rstrip("\n").split("\t") for line in sst2.read_text().splitlines()[1:601]]
    labels = write_csv(tmp_path / "reviews.csv", ["review", "sentiment"],
                       [[s, "positive" if y == "1" else "negative"] for s, y in rows])
    out = tmp_path / "own"
    env = {**os.environ, "OWN_STEPS": "30", "OWN_TOKENS": "500", "OWN_SEQ_LEN": "64",
           "OWN_SEEDS": "0,1", "OWN_FOLDS": "3", "XLA_FLAGS": xla_flags()}
    proc = subprocess.run(
        ["bash", "launch/own_data.sh", str(text), str(labels), str(out), "--",
         "--config.data.text_column=review", "--config.data.label_column=sentiment",
         "--config.train.epochs=2", *ONE_SHAPE], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.stdout.startswith("estimate: about "), proc.stdout[:300]
    pretrain = json.loads((out / "pretrain" / "summary.json").read_text())
    assert pretrain["status"] == "completed"
    # the shards carry their baselines, and the run says whether it learned beyond them
    baselines = json.loads((out / "shards" / "baselines.json").read_text())["splits"]["validation"]
    reference = pretrain["reference"]
    assert reference["unigram"] == pytest.approx(math.exp(baselines["unigram"]))
    assert "baselines on validation" in proc.stdout and "unigram perplexity" in proc.stdout
    ppl = pretrain["best"]["validation_perplexity"]
    assert pretrain["learned"] == (ppl < 0.9 * reference["unigram"])
    verdict = "learned: validation perplexity" if pretrain["learned"] else (
        "warning: validation perplexity")
    assert verdict in proc.stdout + proc.stderr
    assert re.search(r"validation step \d+: loss [\d.]+ perplexity [\d.]+ \(unigram [\d.]+, "
                     r"bigram [\d.]+\)", proc.stdout + proc.stderr)
    task_dir = out / "finetune" / "reviews"
    assert "labelled rows x 2 seeds x 3 folds x 2 inits, fine-tuning included" in proc.stdout
    for init in ("pretrained", "random"):
        held = []
        for fold in range(3):
            summary = json.loads((task_dir / init / f"s1-fold{fold}" / "summary.json").read_text())
            assert summary["status"] == "completed" and summary["task"] == "table"
            assert summary["reported_splits"] == ["holdout"] and "holdout" in summary["majority"]
            ids = json.loads((task_dir / init / f"s1-fold{fold}" / "predictions" /
                              "holdout.ids.json").read_text())
            assert len(ids) == summary["examples"]["holdout"] and ids[0].startswith("table/")
            held += ids
        assert len(set(held)) == len(held) == 600  # every row scored once, out of fold
    table = (task_dir / "results.md").read_text()
    assert "stratified 3-fold cross-validation" in table and "n = 600 rows x 2 seeds" in table
    assert "corrected resampled t, n = 6" in table and "Power: " in table
    assert "| negative | " in table and "| positive | " in table  # the per-class rows
    assert "(unigram " in table and "majority class" in table
    assert table.strip() in proc.stdout  # the script prints the table, no JSON dump
    assert '"status"' not in proc.stdout
    # a second labelled file on the same text and OUT: only the new task is fine-tuned
    more = write_csv(tmp_path / "more.csv", ["review", "sentiment"],
                     [[s, "positive" if y == "1" else "negative"] for s, y in rows[:300]])
    again = subprocess.run(
        ["bash", "launch/own_data.sh", str(text), str(more), str(out), "--",
         "--config.data.text_column=review", "--config.data.label_column=sentiment",
         "--config.train.epochs=1", *ONE_SHAPE], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900)
    assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
    assert again.stdout.count(": reused") == 3
    assert "0.0 MB of text, 0 pre-training steps" in again.stdout  # only the fine-tuning counted
    assert (out / "finetune" / "more" / "results.md").is_file()
    assert json.loads((out / "pretrain" / "summary.json").read_text()) == pretrain
    other = subprocess.run(["bash", "launch/own_data.sh", str(sst2), "-", str(out)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "use another OUT" in other.stderr
    # the same text spelled another way (a symlink, by a path relative to another folder) is the
    # same text: everything made from it is reused
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link.txt").symlink_to(text)
    same = subprocess.run(["bash", str(REPO / "launch" / "own_data.sh"), "../link.txt", "-",
                           "../own"], cwd=tmp_path / "elsewhere", env=env, capture_output=True,
                          text=True, timeout=300)
    assert same.returncode == 0, (same.stdout[-2000:], same.stderr[-2000:])
    assert same.stdout.count(": reused") == 3
    # a wrong column name: one error line, exit 2, the finished pre-training untouched
    bad = subprocess.run(
        [sys.executable, "-m", "minilm_jax.finetune",
         "--config=finetune:table", f"--workdir={tmp_path / 'ft2'}",
         f"--config.init.checkpoint={out / 'pretrain'}", f"--config.data.dir={labels}",
         "--config.data.max_len=64"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: task table: {labels}, line 2: no column 'text' (data.text_column); the row has "
        "['review', 'sentiment']"]
