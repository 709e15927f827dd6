"""Model selection on a validation split carved from train (the reported split is scored once at the
end, final and selected), sample std over seeds, <unk> counts, the majority baseline, and
length-bucketed padding that changes no result."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from conftest import float32_tolerance, shared_path, trajectory_tolerance

from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.finetune.model_selection import (majority_baseline, mean_std, sample_std,
                                                 split_metrics, unk_counts, unk_warnings)
from minilm_jax.corpus.vocab import load_word_list
from minilm_jax.tasks.task_data import load_task_data
from minilm_jax.settings.model_fields import model_config_dict
from minilm_jax.tasks.base import Example
from minilm_jax.tasks.batching import bucket_length
from minilm_jax.tasks.vocab_filter import oov_words
from minilm_jax.tasks.sampling import split_off_fraction

POINT = "E32-H32-I128-L1-A2-V1010"


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    """A 1,000-piece SentencePiece model trained on the AG News training text."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece

    lines = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("tok") / "tok.model"
    path.write_bytes(train_sentencepiece(lines, 1000, "bpe"))
    return path


def tiny_config(tokenizer: Path, **fields) -> ml_collections.ConfigDict:
    """AG News, 200 training examples, a 1-layer model of width 32 from random init, on one device
    (what is checked here is selection, scoring and padding, not the mesh: 8 fake CPU devices cost
    a third more CPU for the same programs)."""
    c = finetune_config("ag_news")
    c.init.mode = "random"
    c.mesh.data = 1
    c.point = POINT
    c.model = model_config_dict(POINT)
    c.data.dir = str(shared_path("ag_news"))
    c.data.tokenizer = str(tokenizer)
    c.data.max_len = 128
    c.data.train_per_class = 0
    c.data.eval_per_class = 0
    c.data.max_train_examples = 200
    c.data.max_eval_examples = 96
    c.optim.peak_lr = 2e-3
    c.train.epochs = 2
    c.train.batch_size = 16
    c.train.seeds = (0, 1)
    c.train.progress = False
    c.eval.batch_size = 32
    for key, value in fields.items():
        section, field = key.split("__")
        c[section][field] = value
    c.model.max_len = max(c.model.max_len, c.data.max_len)
    return c


# ----------------------------------------------------------------------------- the validation split
def _examples(sizes: dict[int, int]) -> list[Example]:
    return [Example(f"text {label} {i}", None, label, f"t/train/{label}-{i}")
            for label, n in sizes.items() for i in range(n)]


def test_validation_split_is_stratified_disjoint_and_seeded():
    examples = _examples({0: 50, 1: 30, 2: 1, 3: 7})
    train, valid = split_off_fraction(examples, 0.1, seed=3)
    assert Counter(ex.label for ex in valid) == {0: 5, 1: 3, 3: 1}  # the one-example class stays
    assert not {ex.uid for ex in train} & {ex.uid for ex in valid}
    assert sorted(ex.uid for ex in train + valid) == sorted(ex.uid for ex in examples)
    assert split_off_fraction(examples, 0.1, seed=3) == (train, valid)
    assert split_off_fraction(examples, 0.1, seed=4)[1] != valid
    scores = [Example(f"s{i}", "t", float(i) / 7, f"s/train/{i}") for i in range(40)]
    rest, part = split_off_fraction(scores, 0.25, seed=0, stratified=False)
    assert len(part) == 10 and len(rest) == 30 and not set(rest) & set(part)
    with pytest.raises(ValueError, match="fraction"):
        split_off_fraction(examples, 1.0, seed=0)


def test_task_data_carves_validation_from_train(tokenizer_path):
    config = tiny_config(tokenizer_path)
    data = load_task_data(config)
    assert data.counts() == {"train": 180, "validation": 20, "test": 96}
    train_ids = {ex.uid for ex in data.train}
    assert all(ex.uid.startswith("ag_news/train/") for ex in data.validation)
    assert not train_ids & {ex.uid for ex in data.validation}
    assert all(ex.uid.startswith("ag_news/test/") for ex in data.evals["test"])
    whole = Counter(ex.label for ex in data.train + data.validation)
    held = Counter(ex.label for ex in data.validation)
    assert held == {label: round(0.1 * n) for label, n in whole.items()}
    config.data.validation_seed = 1
    assert {ex.uid for ex in load_task_data(config).validation} != {ex.uid for ex in data.validation}


def test_sample_sizes_count_examples_after_the_vocabulary_filter():
    """max_train_examples caps the *filtered* set: a filtered SST-2 run trains on that many."""
    config = finetune_config("sst2")
    config.data.dir = str(shared_path("glue"))
    config.data.max_train_examples = 300
    config.data.max_eval_examples = 50
    vocabulary = frozenset(load_word_list(shared_path("vocab", "AOChildes_word_frequency.csv")))
    data = load_task_data(config, vocabulary)
    assert data.counts() == {"train": 270, "validation": 30, "dev": 50}
    assert data.filter_report.rate("train") < 0.5  # most of SST-2 train was dropped first
    for ex in data.train + data.validation + data.evals["dev"]:
        assert not oov_words(ex, vocabulary)


def test_characters_the_tokenizer_cannot_encode_are_dropped(tokenizer_path):
    """data.drop_unknown_chars: a character the tokenizer only knows as <unk> leaves every split."""
    import dataclasses

    from minilm_jax.tasks.task_data import drop_unknown_chars
    from minilm_jax.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(tokenizer_path)
    assert tokenizer.unknown_chars(["snow ☃ man", "plain text"]) == ["☃"]
    data = load_task_data(tiny_config(tokenizer_path))
    letters = {c for ex in data.train for c in ex.text_a if c.isalnum()}
    unknown_letters = [c for c in tokenizer.unknown_chars(sorted(letters)) if c.isalnum()]
    data.train[0] = dataclasses.replace(data.train[0], text_a="☃ " + data.train[0].text_a)
    data.evals["test"][0] = dataclasses.replace(data.evals["test"][0],
                                                text_a=data.evals["test"][0].text_a + " ☃☃")
    before = [ex.text_a for ex in data.train[1:]]
    dropped = drop_unknown_chars(data, tokenizer)
    assert "☃" in dropped and all(tokenizer.unk_id in tokenizer.encode(c) for c in dropped)
    assert not set(unknown_letters) & set(dropped)  # letters and digits stay (as <unk>)
    texts = [ex.text_a for split in (data.train, data.validation, data.evals["test"]) for ex in split]
    assert not any(c in t for t in texts for c in dropped)
    table = str.maketrans("", "", "".join(dropped))  # other texts lose those characters only
    assert [ex.text_a for ex in data.train[1:]] == [" ".join(t.translate(table).split())
                                                    for t in before]
    assert tokenizer.unk_id not in tokenizer.encode(data.train[0].text_a)


# ----------------------------------------------------------------------------- summary pieces
def test_sample_std_with_n():
    members = [{"accuracy": 80.0, "score": 80.0}, {"accuracy": 84.0, "score": 84.0},
               {"accuracy": 86.0, "score": 86.0}]
    out = mean_std(members)
    assert out["n"] == 3 and out["std_ddof"] == 1
    assert out["mean"]["score"] == pytest.approx(250.0 / 3)
    assert out["std"]["score"] == pytest.approx(np.sqrt(((80 - 250 / 3) ** 2 + (84 - 250 / 3) ** 2
                                                         + (86 - 250 / 3) ** 2) / 2))
    assert out["std"]["score"] != pytest.approx(float(np.std([80.0, 84.0, 86.0])))
    assert sample_std([5.0]) == 0.0 and mean_std(members[:1])["n"] == 1


class _Specials:
    pad_id, bos_id, eos_id, unk_id, mask_id = 1, 0, 2, 3, 4


def test_unk_counts_on_hand_made_rows():
    # <s> a <unk> b </s> <pad> | <s> <unk> </s></s> <unk> </s>  -> 5 real tokens, 3 of them <unk>
    tokens = np.array([[0, 7, 3, 8, 2, 1], [0, 3, 2, 2, 3, 2]])
    segments = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    counts = unk_counts({"tokens": tokens, "segments": segments}, _Specials())
    assert counts == {"tokens": 5, "unk": 3, "rate": 0.6}
    lines = unk_warnings({"train": counts, "test": {"tokens": 1000, "unk": 10, "rate": 0.01}})
    assert len(lines) == 1 and lines[0].startswith("warning: train: 60.0%")


def test_majority_baseline_on_hand_made_labels():
    train = np.array([2, 1, 1, 0, 1, 2])  # majority class 1
    out = majority_baseline("ag_news", train, {"test": np.array([1, 1, 0, 2, 1, 3])}, False)
    assert out["test"]["accuracy"] == pytest.approx(50.0) and out["test"]["score"] == pytest.approx(50.0)
    assert out["test"]["prediction"] == 1
    mrpc = majority_baseline("mrpc", np.array([1, 1, 0]), {"dev": np.array([1, 0, 0, 1])}, False)
    assert mrpc["dev"]["accuracy"] == pytest.approx(50.0)
    assert mrpc["dev"]["f1"] == pytest.approx(100.0 * 2 * 2 / (2 * 2 + 2))
    cola = majority_baseline("cola", np.array([1, 1, 0]), {"dev": np.array([1, 0, 1])}, False)
    assert cola["dev"]["mcc"] == 0.0
    mnli = majority_baseline("mnli", np.array([2, 2, 0]),
                             {"dev_matched": np.array([2, 1]), "dev_mismatched": np.array([0, 1])},
                             False)
    assert mnli["dev_matched"]["accuracy_m"] == pytest.approx(50.0)
    assert mnli["dev_mismatched"]["accuracy_mm"] == 0.0
    # MNLI's validation split (carved from train) is scored by plain accuracy, its dev splits as m/mm.
    assert split_metrics("mnli", {"validation": np.array([0, 1])}, {"validation": np.array([0, 0])}) \
        == {"accuracy": 50.0, "score": 50.0}
    both = split_metrics("mnli", {"dev_matched": np.array([0, 1]), "dev_mismatched": np.array([2])},
                         {"dev_matched": np.array([0, 0]), "dev_mismatched": np.array([2])})
    assert both == {"accuracy_m": 50.0, "accuracy_mm": 100.0, "score": 75.0}
    stsb = majority_baseline("stsb", np.array([1.0, 2.0, 4.5]), {"dev": np.array([0.0, 5.0])}, True)
    assert stsb["dev"] == {"pearson": None, "spearman": None, "score": None, "prediction": 2.5}


# ----------------------------------------------------------------------------- the loop
def test_test_split_is_scored_once_at_the_end(tokenizer_path, tmp_path, monkeypatch):
    """Study B: per-epoch evaluation reads only the validation split; the test split is predicted
    exactly twice, after training (final and selected parameters)."""
    calls: list[tuple[str, str]] = []
    original = Finetuner.predict_split

    def counting(self, split, which="final", arrays=None):
        calls.append((split, which))
        return original(self, split, which, arrays)

    monkeypatch.setattr(Finetuner, "predict_split", counting)
    # 64 tokens (not 128): what is checked is which splits are scored when, not the texts' ends
    config = tiny_config(tokenizer_path, train__epochs=3, train__seeds=(0, 1, 2),
                         data__max_len=64)
    summary = Finetuner(config, tmp_path, "random").run()

    assert calls == [("validation", "final")] * 3 + [("test", "final"), ("test", "selected")]
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["split"] for h in history] == ["validation"] * 3
    assert all(set(m) == {"accuracy", "score"} for h in history for m in h["members"])
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {m["split"] for m in metrics} == {"train", "validation"}

    # Each member's selected epoch is its best validation epoch (the first, on ties).
    scores = np.array([[m["score"] for m in h["members"]] for h in history])
    assert summary["selected"]["epochs"] == [float(e + 1) for e in scores.argmax(axis=0)]
    assert summary["validation"]["epochs"] == summary["selected"]["epochs"]
    assert [m["score"] for m in summary["validation"]["members"]] == list(scores.max(axis=0))
    assert summary["final"]["epochs"] == [3.0] * 3
    final = np.load(tmp_path / "predictions" / "test.final.npy")
    selected = np.load(tmp_path / "predictions" / "test.selected.npy")
    assert final.shape == selected.shape == (3, 96, 4)
    for s, epoch in enumerate(summary["selected"]["epochs"]):
        assert np.array_equal(final[s], selected[s]) == (epoch == 3.0)
    labels = np.load(tmp_path / "predictions" / "test.labels.npy")
    accuracy = [100.0 * float(np.mean(selected[s].argmax(-1) == labels)) for s in range(3)]
    assert [m["accuracy"] for m in summary["selected"]["members"]] == pytest.approx(accuracy)

    assert "best" not in summary and summary["seeds"] == [0, 1, 2]
    for which in ("final", "selected", "validation"):
        part = summary[which]
        assert part["n"] == 3 and part["std_ddof"] == 1
        assert part["std"]["score"] == pytest.approx(np.std([m["score"] for m in part["members"]],
                                                            ddof=1))
    assert summary["examples"] == {"train": 180, "validation": 20, "test": 96}
    assert set(summary["unk"]) == {"train", "validation", "test"}
    assert all(u["tokens"] > 0 and 0.0 <= u["rate"] <= 1.0 for u in summary["unk"].values())
    assert set(summary["majority"]) == {"validation", "test"}
    test_labels = Counter(labels.tolist())
    train_majority = summary["majority"]["test"]["prediction"]
    assert summary["majority"]["test"]["accuracy"] == pytest.approx(
        100.0 * test_labels[train_majority] / 96)


def test_bucketed_padding_changes_no_logits(tokenizer_path, tmp_path):
    """Batches cut to 16-token buckets give the logits of max_len padding, in evaluation and (with
    dropout off, whose masks depend on the padded shape) after training."""
    overrides = ("hidden_dropout=0.0", "attention_dropout=0.0")
    runs = {}
    for buckets in (16, 0):
        config = tiny_config(tokenizer_path, train__epochs=1, data__pad_buckets=buckets,
                             data__max_len=128, train__batch_size=8, eval__batch_size=8,
                             data__max_train_examples=100)  # 12 steps, each of its own width
        config.model_overrides = overrides
        runner = Finetuner(config, tmp_path / str(buckets), "random")
        before = runner.predict_split("test")
        runner.run()
        runs[buckets] = (before, np.load(tmp_path / str(buckets) / "predictions" / "test.final.npy"))
    lengths = runner.eval_arrays["test"]["segments"].sum(axis=1)
    cut = [bucket_length(lengths[i:i + 8].max(), 128, 16) for i in range(0, len(lengths), 8)]
    assert min(cut) < 128 and len(set(cut)) > 1  # the buckets really cut, to several lengths
    # one layer's hidden and ffn widths (32 + 128), attention over up to 128 positions
    scale = float(np.max(np.abs(runs[0][0])))
    np.testing.assert_allclose(runs[16][0], runs[0][0], rtol=0,
                               atol=float32_tolerance(scale, 32 + 128 + 128))
    # after training: the run's steps, each summing over 8 x 128 positions, the widths above
    steps = json.loads((tmp_path / "0" / "history.json").read_text())[-1]["step"]
    tol = trajectory_tolerance(float(np.max(np.abs(runs[0][1]))), 8 * 128 + 32 + 128 + 128 + 4,
                               steps + 1)
    np.testing.assert_allclose(runs[16][1], runs[0][1], rtol=0, atol=tol)
    assert not np.allclose(runs[0][0], runs[0][1])  # training changed the model


def test_training_batches_are_cut_to_the_members_longest(tokenizer_path, tmp_path):
    """Every member's sequences fit; what is cut is padding in all of them."""
    config = tiny_config(tokenizer_path, train__epochs=1, train__batch_size=8, data__max_len=256)
    runner = Finetuner(config, tmp_path, "random")
    arrays = runner.train_arrays
    lengths = arrays["segments"].sum(axis=1)
    widths = []
    for step in range(0, runner.steps_per_epoch - 1, 2):  # two steps per dispatch
        batch = runner.host_batch(step, 2)
        rows = np.stack([[ix.indices(step + k) for ix in runner.indexers] for k in range(2)])
        width = batch["tokens"].shape[-1]
        assert batch["tokens"].shape == (2, 2, 8, width) and batch["labels"].shape == (2, 2, 8)
        assert width == min(256, -(-int(lengths[rows].max()) // 16) * 16)
        for name in ("tokens", "segments", "token_types"):
            assert np.array_equal(batch[name], arrays[name][rows][..., :width])
        assert np.all(arrays["segments"][rows][..., width:] == 0)
        widths.append(width)
    assert len(set(widths)) > 1
