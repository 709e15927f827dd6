"""The fine-tuning tasks' numbers and data pinned on tiny inputs counted by hand (or by scipy):
MRPC/QQP's F1 of the positive class, a task's GLUE score over its official metrics only, Pearson
of a constant side and the bootstrap's dropped and Spearman resamples, QNLI's columns, TFDS label
ranges (STS-B, class ids), single-text truncation, regression labels after an unlabelled row,
edge padding, committee subsets at exactly ``max_subsets``, per-class eval sampling, unlabelled
reported rows, and the registry's families and ``replace``."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from scipy import stats

from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.errors import UserError
from minilm_jax.tasks import TaskDataError, load_glue
from minilm_jax.tasks.base import Example, TaskSpec
from minilm_jax.tasks.batching import pad_to_batches
from minilm_jax.tasks.committee_math import accuracy_vs_k
from minilm_jax.tasks.correlation import correlate
from minilm_jax.tasks.encoding import build_inputs, encode_examples
from minilm_jax.tasks.loaders import TaskData
from minilm_jax.tasks.metrics import glue_score, pearson_rows, task_metrics
from minilm_jax.tasks.registry import (TaskEntry, get_task, register_task, task_names,
                                      unregister_task)
from minilm_jax.tasks.task_data import load_task_data
from test_tasks_glue import FakeTfds


class _WordPiece:
    """Token ids by hand: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3; a word's id is its length + 10."""

    kind, pad_id, bos_id, eos_id, unk_id, mask_id, vocab_size = "wordpiece", 0, 1, 2, 3, 4, 100

    def encode(self, text):
        return [10 + len(w) for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


def _write_tsv(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_mrpc_qqp_f1_is_the_positive_class_f1_not_macro(task):
    """GLUE's F1 of MRPC/QQP is the F1 of class 1 (equivalent / duplicate)."""
    predictions, labels = [1, 1, 0, 0], [1, 0, 0, 0]
    # class 1: TP 1, FP 1, FN 0 -> 2/3; macro would average class 0's 4/5 in
    got = task_metrics(task, predictions, labels)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["accuracy"] == pytest.approx(3 / 4)


def test_glue_score_averages_only_the_tasks_official_metrics():
    """Extra metrics in the mapping (a run logs more) never enter a task's score."""
    assert glue_score("cola", {"mcc": 0.2, "accuracy": 0.9}) == pytest.approx(0.2)
    assert glue_score("stsb", {"pearson": 0.8, "spearman": 0.6, "loss": 3.0}) == pytest.approx(0.7)


def test_pearson_rows_is_nan_for_a_constant_side_whose_mean_rounds():
    """0.1 repeated has a float mean that is not exactly 0.1: still constant, so NaN."""
    x = np.array([0.0, 1.0, 10.0])
    y = np.full(3, 0.1)
    assert y.mean() != 0.1  # the rounding this test relies on
    assert np.isnan(pearson_rows(x, y))
    assert np.isnan(pearson_rows(y, x))


def test_bootstrap_drops_resamples_with_a_constant_side():
    """n_valid counts resamples where both x and y vary, replayed from the seeded draw."""
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.1, 0.7])
    n, seed = 400, 3
    idx = np.random.default_rng(seed).integers(0, 3, size=(n, 3))
    varies = (np.ptp(x[idx], axis=1) > 0) & (np.ptp(y[idx], axis=1) > 0)
    result = correlate(x, y, n_resamples=n, seed=seed)
    assert result.pearson.n_valid == int(varies.sum()) < n


def test_bootstrap_spearman_interval_is_over_resampled_rank_correlations():
    """Each resample's Spearman (scipy) on the replayed seeded draw; skewed y so that Pearson of
    raw values differs from Spearman."""
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = np.array([1.0, 1.5, 2.0, 30.0, 3.0, 400.0, 500.0, 5000.0])
    n, seed = 300, 5
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n, x.size))
    with warnings.catch_warnings():  # a constant resample: scipy warns and gives NaN
        warnings.simplefilter("ignore")
        rhos = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    rhos = rhos[np.isfinite(rhos)]
    result = correlate(x, y, n_resamples=n, seed=seed)
    assert result.spearman.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert result.spearman.n_valid == rhos.size
    low, high = np.quantile(rhos, [0.025, 0.975])
    assert (result.spearman.low, result.spearman.high) == pytest.approx((low, high), abs=1e-12)


def test_qnli_question_is_text_a_and_sentence_text_b(tmp_path):
    """QNLI pairs (question, sentence), read by header name whatever the column order."""
    _write_tsv(tmp_path / "QNLI" / "dev.tsv", ["index\tsentence\tquestion\tlabel",
                                               "0\tHe did.\tWho?\tentailment"])
    ex = load_glue("qnli", "dev", data_dir=tmp_path)[0]
    assert (ex.text_a, ex.text_b, ex.label) == ("Who?", "He did.", 0)


def test_tfds_stsb_score_outside_zero_to_five_is_refused(monkeypatch):
    """STS-B scores lie in [0, 5]: 5.5 from TFDS is an error, 5.0 and 0.0 are read."""
    fake = FakeTfds([{"sentence1": b"a", "sentence2": b"b", "label": 5.0, "idx": 0},
                      {"sentence1": b"c", "sentence2": b"d", "label": 0.0, "idx": 1}])
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    assert [e.label for e in load_glue("stsb", "train", source="tfds")] == [5.0, 0.0]
    fake.records = [{"sentence1": b"a", "sentence2": b"b", "label": 5.5, "idx": 0}]
    with pytest.raises(TaskDataError, match="5.5"):
        load_glue("stsb", "train", source="tfds")


def test_tfds_class_label_equal_to_num_labels_is_refused(monkeypatch):
    """CoLA has labels 0 and 1: a record with label 2 is out of range (1 is the last class)."""
    fake = FakeTfds([{"sentence": b"x", "label": 1, "idx": 0}])
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    assert load_glue("cola", "train", source="tfds")[0].label == 1
    fake.records = [{"sentence": b"x", "label": 2, "idx": 0}]
    with pytest.raises(TaskDataError, match="label 2"):
        load_glue("cola", "train", source="tfds")


def test_a_long_single_text_keeps_its_first_tokens():
    """Single texts are cut from the end: [CLS] 10 11 12 [SEP] of 10..15 at max_len 5."""
    tokens, types_ = build_inputs(_WordPiece(), [10, 11, 12, 13, 14, 15], None, max_len=5)
    assert tokens == [1, 10, 11, 12, 2]
    assert types_ == [0] * 5


def test_regression_is_inferred_from_any_float_label_even_after_an_unlabelled_row():
    """An STS-B split whose first row is unlabelled still encodes float labels (NaN, 2.5)."""
    rows = [Example("a b", "c", None, "stsb/x/0"), Example("a", "b", 2.5, "stsb/x/1")]
    labels = encode_examples(rows, _WordPiece(), max_len=8)["labels"]
    assert labels.dtype == np.float32
    assert np.isnan(labels[0]) and labels[1] == 2.5


def test_committee_enumerates_subsets_when_there_are_exactly_max_subsets():
    """K=5, max_subsets=5: the 5 singletons are enumerated without drawing, so the seeded draws
    of the 2-member subsets start from a fresh generator (replayed here)."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 40)
    logits = rng.normal(size=(5, 40, 3))
    points = accuracy_vs_k(logits, labels, max_subsets=5, seed=11)
    draw, chosen = np.random.default_rng(11), set()
    while len(chosen) < 5:
        chosen.add(tuple(sorted(draw.choice(5, size=2, replace=False).tolist())))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    accs = [np.mean(probs[list(s)].mean(0).argmax(-1) == labels) for s in sorted(chosen)]
    assert points[1].n_subsets == 5
    assert points[1].accuracy == pytest.approx(np.mean(accs))
    assert points[1].std == pytest.approx(np.std(accs, ddof=1))


def test_edge_padding_repeats_the_last_real_row():
    """7 rows in batches of 4: the second batch is rows 4, 5, 6 and a copy of row 6."""
    arrays = {"x": np.arange(7), "y": np.arange(14).reshape(7, 2)}
    (_, first), (second, mask) = list(pad_to_batches(arrays, 4))
    assert first.tolist() == [True] * 4
    assert second["x"].tolist() == [4, 5, 6, 6]
    assert second["y"].tolist() == [[8, 9], [10, 11], [12, 13], [12, 13]]
    assert mask.tolist() == [True, True, True, False]



def _toy_loader(task, data):
    """12 training and 12 test examples, labels 0, 1, 2 in turn; test rows named in the config's
    extra field ``data.unlabelled`` (set by a test) carry no label."""
    def rows(split, unlabelled=()):
        return [Example(f"w{i}", None, None if i in unlabelled else i % 3, f"{task}/{split}/{i}")
                for i in range(12)]

    spec = TaskSpec(task, 3, ("a", "b", "c"), ("accuracy",), ("train", "test"))
    return TaskData(spec, rows("train"), {"test": rows("test", data.get("unlabelled", ()))})


@pytest.fixture()
def toy_config():
    register_task(TaskEntry("audit_toy", "local", ("accuracy",), _toy_loader,
                            {"data.eval_splits": ("test",)}))
    config = finetune_config("audit_toy")
    config.data.train_per_class = config.data.eval_per_class = 0
    yield config
    unregister_task("audit_toy")


def test_eval_splits_are_sampled_with_the_eval_per_class_count(toy_config):
    """train_per_class 3 and eval_per_class 2: the test split keeps 2 of each class."""
    toy_config.data.train_per_class, toy_config.data.eval_per_class = 3, 2
    data = load_task_data(toy_config)
    counts = np.bincount([ex.label for ex in data.evals["test"]], minlength=3)
    assert counts.tolist() == [2, 2, 2]
    assert len(data.train) + len(data.validation) == 9


def test_a_single_unlabelled_row_in_a_reported_split_is_refused(toy_config):
    toy_config.data.unlabelled = (5,)
    with pytest.raises(UserError, match="test split has unlabelled"):
        load_task_data(toy_config)


def test_task_names_of_one_family_hold_that_family_only():
    assert task_names("glue") == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte",
                                  "wnli")
    assert set(task_names("study_b")) == {"ag_news", "dbpedia14", "fewrel"}


def test_register_with_replace_swaps_the_entry(toy_config):
    """replace=True replaces a registered task's entry (its metrics here)."""
    register_task(TaskEntry("audit_toy", "local", ("macro_f1",), _toy_loader), replace=True)
    assert get_task("AUDIT_TOY").metric_names == ("macro_f1",)
    with pytest.raises(ValueError, match="already registered"):
        register_task(TaskEntry("audit_toy", "local", ("accuracy",), _toy_loader))
