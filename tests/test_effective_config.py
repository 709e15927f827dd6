"""A run does what its config asks, or refuses in one line before it writes anything: the MLM
per-sequence cap (``mlm.max_predictions``) never lowers the asked ``mlm.mask_prob`` (0: derived;
a binding explicit cap refused; the realised rate recorded), and the other settings one can cap
(batch vs data, evaluation cadence vs epochs, folds vs class sizes) do what was asked or refuse.
Every number is checked against scipy's binomial, a count over the shard files or the labels."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import shared_path
from minilm_jax.configs import finetune as finetune_recipe
from minilm_jax.configs.pretrain import get_config as pretrain_config
from minilm_jax.errors import UserError
from minilm_jax.settings.finetuning import validate_finetune_config
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.mlm_cap import MASK_CAP_TAIL, MASK_CAP_TOLERANCE, derived_max_predictions
from minilm_jax.settings.pretraining import validate_pretrain_config
from minilm_jax.tasks.base import Example, TaskDataError
from minilm_jax.tasks.sampling import fold_assignment
from minilm_jax.tasks.task_data import load_task_data
from minilm_jax.train.batches import BatchIndexer
from minilm_jax.train.masking import MaskingConfig, mask_tokens, maskable_positions, predicted
from minilm_jax.train.population import expand
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.pretrainer import Pretrainer
from minilm_jax.train.run_log import read_metrics

from test_pretrain import small_config
from test_workflow import run

NEVER = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk>: the recipe's mlm.never_mask_ids


# ------------------------------------------------------------------ the binomial, independently
def scipy_caps(mask_prob: float, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For every cap 0 .. max_len: the expected share of the selected positions past it and the
    probability that it binds, for max_len maskable positions (scipy's binomial pmf and sf)."""
    k = np.arange(max_len + 1)
    pmf = stats.binom.pmf(k, max_len, mask_prob)
    lost = np.array([np.sum(np.clip(k - cap, 0, None) * pmf) for cap in k]) / (max_len * mask_prob)
    return lost, stats.binom.sf(k, max_len, mask_prob)


def smallest_cap(lost: np.ndarray, share: float) -> int:
    return int(np.flatnonzero(lost <= share)[0])


@pytest.mark.parametrize("max_len", [16, 64, 128, 512])
def test_the_derived_cap_is_the_smallest_that_keeps_the_asked_rate(max_len):
    for mask_prob in (0.02, 0.15, 0.4, 0.5, 0.8, 0.98):
        lost, _ = scipy_caps(mask_prob, max_len)
        want = smallest_cap(lost, MASK_CAP_TAIL)
        assert derived_max_predictions(mask_prob, max_len) == want, (mask_prob, lost[want - 1:])
        assert lost[want] <= 1e-4 and (want == 0 or lost[want - 1] > 1e-4)


# ------------------------------------------------------------------ the jitted mask on real batches
def packed_batch(rows: int = 512, max_len: int = 128, vocab: int = 500, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Packed-shard-like rows: <s> ... </s> of 112 to 128 tokens, then padding (id 1)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab, size=(rows, max_len)).astype(np.int32)
    lengths = rng.integers(max_len - 16, max_len + 1, size=rows)
    tokens[:, 0] = 0
    tokens[np.arange(rows), lengths - 1] = 2
    segments = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
    return np.where(segments == 1, tokens, 1), segments


def text_batch(shards: Path) -> tuple[np.ndarray, np.ndarray]:
    """The word-level shards' 600 training rows of 64 tokens (real text, padded with id 1)."""
    tokens = np.load(shards / "train.npy").astype(np.int32)
    return tokens, (tokens != 1).astype(np.int32)


def logged_counts(tokens: np.ndarray, segments: np.ndarray, masking: MaskingConfig,
                  draws: int = 4) -> tuple[float, int]:
    """(predicted positions, maskable positions) over ``draws`` masks of the batch: the count the
    train step logs (the packed rows' weights, its loss's ``predictions``) through the jitted mask."""

    @jax.jit
    def count(key, tokens_bt, segments_bt):
        rows_n, targets_n, weights_n = predicted(mask_tokens(key, tokens_bt, segments_bt, masking),
                                                 masking)
        return jnp.sum(weights_n), jnp.sum(maskable_positions(tokens_bt, segments_bt, masking))

    predictions = maskable = 0
    for draw in range(draws):
        p, m = count(jax.random.key(draw), jnp.asarray(tokens), jnp.asarray(segments))
        predictions, maskable = predictions + float(p), maskable + int(m)
    # the maskable count, independently: real tokens that are not never-mask ids
    assert maskable == draws * int(np.sum((segments != 0) & ~np.isin(tokens, NEVER)))
    return predictions, maskable


def masking_of(mask_prob: float, max_predictions: int) -> MaskingConfig:
    config = pretrain_config("paper-1.25m")
    config.mlm.mask_prob, config.mlm.max_predictions = mask_prob, max_predictions
    return MaskingConfig.from_config(config.mlm, 500)


def assert_asked_rate(predictions: float, maskable: int, mask_prob: float) -> None:
    low, high = stats.binom.interval(0.999, maskable, mask_prob)
    assert low <= predictions <= high, (
        f"realised {predictions / maskable:.4f} for mask_prob {mask_prob}: {predictions:.0f} of "
        f"{maskable} maskable positions, outside the binomial 99.9% interval [{low:.0f}, {high:.0f}]")


# An explicit cap that keeps the rate at each length: the recipes' (32 at 15% of 128, 64 at 40%,
# 16 at 15% of 64: study_b) and generous ones elsewhere; 0: derived.
EXPLICIT = {128: {0.15: 32, 0.4: 64, 0.5: 80, 0.8: 120}, 64: {0.15: 16, 0.4: 40, 0.5: 48, 0.8: 64}}


@pytest.mark.parametrize("batch", ["packed128", "text64"])
@pytest.mark.parametrize("mask_prob", [0.15, 0.4, 0.5, 0.8])
@pytest.mark.parametrize("cap", ["derived", "explicit"])
def test_the_jitted_mask_predicts_the_asked_share_of_maskable_tokens(word_shards, batch, mask_prob,
                                                                     cap):
    tokens, segments = packed_batch() if batch == "packed128" else text_batch(word_shards)
    max_len = tokens.shape[1]
    config = pretrain_config("paper-1.25m")
    config.model.max_len, config.mlm.mask_prob = max_len, mask_prob
    config.mlm.max_predictions = 0 if cap == "derived" else EXPLICIT[max_len][mask_prob]
    validate_pretrain_config(config)  # accepted
    masking = MaskingConfig.from_config(config.mlm, 500)
    assert_asked_rate(*logged_counts(tokens, segments, masking), mask_prob)


@pytest.mark.parametrize("mask_prob", [0.15, 0.4, 0.5, 0.8])
def test_the_recipe_cap_keeps_the_asked_rate_or_is_refused(mask_prob):
    """The recipe's 32 per 128-token sequence: at 15% it keeps the rate; at 40%, 50% and 80% it
    would cut it to about 25% (32 / 128), so the config is refused, with scipy's numbers."""
    config = pretrain_config("paper-1.25m")
    config.mlm.mask_prob = mask_prob
    lost, binds = scipy_caps(mask_prob, 128)
    try:
        validate_pretrain_config(config)
        refusal = None
    except ConfigError as err:
        refusal = str(err)
    if refusal is None:  # accepted: the mask must then predict the asked share
        tokens, segments = packed_batch()
        assert_asked_rate(*logged_counts(tokens, segments, masking_of(mask_prob, 32)), mask_prob)
    assert (refusal is not None) == (lost[32] > MASK_CAP_TOLERANCE)
    if refusal is not None:
        check_refusal(refusal, "mlm.max_predictions=32 caps mlm.mask_prob=", mask_prob, 32, 128)


REFUSAL = re.compile(r"at model\.max_len=(\d+) to an expected ([\d.]+)% \(the cap binds in "
                     r"([\d.e+-]+)% of sequences; .*\): pass --config\.mlm\.max_predictions=0 "
                     r"\(derived: (\d+)\) or >= (\d+)$")


def check_refusal(line: str, start: str, mask_prob: float, cap: int, max_len: int) -> None:
    """One line, naming the fields, with scipy's expected rate, binding share, derived cap and
    smallest accepted cap."""
    assert "\n" not in line and line.startswith(f"{start}{mask_prob}"), line
    found = REFUSAL.search(line)
    assert found, line
    lost, binds = scipy_caps(mask_prob, max_len)
    assert int(found[1]) == max_len
    assert float(found[2]) == pytest.approx(100 * mask_prob * (1 - lost[cap]), abs=0.006)
    assert float(found[3]) == pytest.approx(100 * binds[cap], rel=2e-3)
    assert int(found[4]) == smallest_cap(lost, MASK_CAP_TAIL)
    assert int(found[5]) == smallest_cap(lost, MASK_CAP_TOLERANCE)


def test_a_binding_cap_is_one_error_line_before_a_workdir_is_written(tmp_path):
    """The reported case: 0.5 with the recipe's 32 per 128 tokens trained at ~25%."""
    proc = run("minilm_jax.pretrain", "--config=configs/pretrain.py:paper-1.25m",
               f"--workdir={tmp_path / 'w'}", "--config.mlm.mask_prob=0.5")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    check_refusal(lines[0], "error: mlm.max_predictions=32 caps mlm.mask_prob=", 0.5, 32, 128)
    assert "expected 25.00%" in lines[0]  # scipy: 0.5 x (1 - 0.5) of the selected kept
    assert not (tmp_path / "w").exists()


def test_each_population_mask_prob_is_checked_before_anything_is_written(tmp_path):
    config = pretrain_config("paper-1.25m")
    config.population.mask_prob = (0.15, 0.4)
    with pytest.raises(UserError) as err:
        expand(config, tmp_path / "pop")
    message = str(err.value)
    assert message.startswith("population.mask_prob=(0.15, 0.4): mlm.max_predictions=32 caps the "
                              "member's mask_prob=0.4"), message
    check_refusal(message[message.index("mlm.max_predictions"):].replace(
        "the member's mask_prob=", "mlm.mask_prob="), "mlm.max_predictions=32 caps mlm.mask_prob=",
        0.4, 32, 128)
    assert "mask_prob=0.15" not in message  # 32 keeps 15% of 128 (scipy: 1.0e-4 lost)
    config.mlm.max_predictions = 0
    assert len(expand(config, tmp_path / "pop")) == 2
    assert not (tmp_path / "pop").exists()


# ------------------------------------------------------------------ the realised rate of a run
def test_a_runs_summary_records_the_realised_mask_rate(word_shards, tmp_path):
    """A short run at 50% with the derived cap: its summary's realised rate is the predicted /
    maskable positions of its metrics.jsonl; the maskable positions equal a count over the shard
    rows its batches hold; the rate is the asked one within the binomial 99.9% interval."""
    # training rows only: no validation split (no evaluation program) and no best checkpoint
    config = small_config(word_shards, **{"train.num_steps": 6, "train.log_every": 2,
                                          "eval.every_steps": 6, "checkpoint.every_steps": 6,
                                          "mlm.mask_prob": 0.5, "mlm.max_predictions": 0,
                                          "data.eval_split": "", "checkpoint.keep_best": False})
    Pretrainer(config, tmp_path / "run").run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [2, 4, 6]
    predictions = sum(r["predictions"] for r in rows)
    maskable = sum(r["maskable"] for r in rows)
    rate = summary["mask_rate"]
    assert rate["realised"] == pytest.approx(predictions / maskable, rel=1e-12)
    assert (rate["predictions"], rate["maskable"], rate["asked"]) == (predictions, maskable, 0.5)
    tokens = np.load(word_shards / "train.npy")
    indexer = BatchIndexer(config.seed, len(tokens), 16)
    seen = tokens[np.concatenate([indexer.indices(step) for step in range(6)])]
    assert maskable == np.sum((seen != 1) & ~np.isin(seen, NEVER))
    assert_asked_rate(predictions, int(maskable), 0.5)
    lost, _ = scipy_caps(0.5, 64)
    assert rate["max_predictions"] == smallest_cap(lost, MASK_CAP_TAIL) and rate["derived"]
    assert summary["epochs"] == pytest.approx(6 * 16 / len(tokens))


def test_each_population_members_summary_records_its_realised_mask_rate(word_shards, tmp_path):
    """Two members at 15% and 50% with the derived cap (each its own: 20 and 43 of 64 tokens)."""
    config = small_config(word_shards, **{"train.num_steps": 4, "train.log_every": 2,
                                          "eval.every_steps": 4, "checkpoint.every_steps": 4,
                                          "mlm.max_predictions": 0, "data.eval_split": "",
                                          "checkpoint.keep_best": False})  # training rows only
    config.population.mask_prob = (0.15, 0.5)
    members = expand(config, tmp_path / "pop")
    PopulationTrainer(members, tmp_path / "pop", "map").run()
    tokens = np.load(word_shards / "train.npy")
    indexer = BatchIndexer(config.seed, len(tokens), 16)
    seen = tokens[np.concatenate([indexer.indices(step) for step in range(4)])]
    for member, mask_prob in zip(members, (0.15, 0.5)):
        rate = json.loads((member.workdir / "summary.json").read_text())["mask_rate"]
        rows = [r for r in read_metrics(member.workdir / "metrics.jsonl") if r["split"] == "train"]
        predictions = sum(r["predictions"] for r in rows)
        maskable = sum(r["maskable"] for r in rows)
        assert maskable == np.sum((seen != 1) & ~np.isin(seen, NEVER))
        assert rate["realised"] == pytest.approx(predictions / maskable, rel=1e-12)
        assert rate["asked"] == mask_prob and rate["derived"]
        assert rate["max_predictions"] == smallest_cap(scipy_caps(mask_prob, 64)[0],
                                                       MASK_CAP_TAIL)
        assert_asked_rate(predictions, int(maskable), mask_prob)


# ------------------------------------------------------------------ the other caps
def test_a_pretraining_batch_over_the_train_split_is_refused_before_a_workdir(word_shards,
                                                                            tmp_path):
    sequences = len(np.load(word_shards / "train.npy"))
    config = small_config(word_shards, **{"train.batch_size": sequences + 8})
    with pytest.raises(ConfigError) as err:
        Pretrainer(config, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"train.batch_size={sequences + 8} is more than the {sequences:,} sequences of the 'train' "
        f"split of {word_shards}"), message
    assert f"{(sequences + 8) / sequences:.2f} passes" in message
    assert f"--config.train.batch_size<={sequences}" in message
    assert not (tmp_path / "run").exists()


def test_a_fine_tuning_batch_over_the_training_examples_is_refused_before_a_workdir(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]", "the", "a", "film",
                                "good", "bad"]) + "\n")
    fields = {"init.mode": "random", "data.tokenizer": str(vocab),
              "data.dir": str(shared_path("glue")), "data.max_train_examples": 40,
              "data.max_eval_examples": 20, "train.progress": False, "train.batch_size": 64,
              "mesh.data": 1}
    proc = run("minilm_jax.finetune", "--config=configs/finetune.py:sst2",
               f"--workdir={tmp_path / 'w'}", *(f"--config.{k}={v}" for k, v in fields.items()))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    # the 40 examples less the validation split: round(10%) of each class, at least 1
    config = finetune_recipe.get_config("sst2")
    for key, value in fields.items():
        section, name = key.split(".")
        config[section][name] = value
    data = load_task_data(config)
    per_class = Counter(ex.label for ex in data.train + data.validation)
    rows = sum(n - min(max(1, round(0.1 * n)), n - 1) for n in per_class.values())
    assert sum(per_class.values()) == 40 and rows == len(data.train)
    assert lines[0].startswith(f"error: train.batch_size=64 is more than the {rows} training "
                               "examples (after sampling, filtering and the validation split)")
    assert f"{64 / rows:.2f} passes" in lines[0]
    assert not (tmp_path / "w").exists()


def test_evaluations_less_often_than_the_epochs_are_refused():
    config = finetune_recipe.get_config("sst2")
    config.train.epochs, config.eval.every_epochs = 3, 5
    with pytest.raises(ConfigError, match=r"^eval\.every_epochs=5 is more than train\.epochs=3: .*"
                                          r"pass --config\.eval\.every_epochs<=3$"):
        validate_finetune_config(config)
    config.eval.every_epochs = 3  # evaluated at epoch 3 as asked
    validate_finetune_config(config)


def test_a_class_too_small_for_the_folds_is_named_by_its_label():
    names = ("business", "sports", "world")
    sizes = {0: 7, 1: 5, 2: 2}
    examples = [Example(f"text {label} {i}", None, label, f"t/all/{label}-{i}")
                for label, n in sizes.items() for i in range(n)]
    smallest = Counter(ex.label for ex in examples)[2]
    with pytest.raises(TaskDataError) as err:
        fold_assignment(examples, 3, seed=0, label_names=names)
    assert str(err.value) == (f"class 'world' has {smallest} examples, fewer than the 3 folds "
                              f"(data.cv_folds): lower it to {smallest} or less, or give that "
                              "class more rows")
    folds = fold_assignment(examples, smallest, seed=0, label_names=names)
    for label, n in sizes.items():  # every class in every fold: n / folds (+-1) rows each
        counts = Counter(f for f, ex in zip(folds, examples) if ex.label == label)
        assert sorted(counts) == [0, 1] and max(counts.values()) - min(counts.values()) <= 1
