"""A batch exactly as large as the data it is drawn from is accepted, one more is refused in one
line naming the count, in pre-training, a population, fine-tuning and cross-validation folds of
unequal size (the smallest fold decides); and fine-tuning evaluates at every ``eval.every_epochs``
and at its last epoch when that does not divide ``train.epochs``. Each count is taken here from
the shard file or the loaded examples; each run stops where its checks are done (nothing is built
or written)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import build_word_shards
from test_run_identity import labels_file

from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.configs.pretrain import get_config as pretrain_config
from minilm_jax.finetune import finetuner as finetuner_module
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.finetune.run import fold_runs
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.allowed import batch_over_data
from minilm_jax.settings.finetuning import check_batch_fits
from minilm_jax.tasks.task_data import load_task_data
from minilm_jax.train import population_trainer, pretrainer
from minilm_jax.train.population import expand


class Checked(Exception):
    """Raised where a trainer's checks are done: carries the trainer."""


def test_batch_over_data_at_its_boundary():
    assert batch_over_data(37, 37, "rows") is None and batch_over_data(1, 1, "rows") is None
    message = batch_over_data(38, 37, "rows")
    assert message.startswith("train.batch_size=38 is more than the 37 rows") and (
        f"{38 / 37:.2f} passes" in message and "--config.train.batch_size<=37" in message)


def test_the_smallest_run_decides_a_fine_tuning_batch():
    runs = [("s0-fold0", 30), ("s0-fold1", 28), ("s0-fold2", 29)]
    check_batch_fits(28, runs)  # the smallest run's examples, exactly
    with pytest.raises(ConfigError, match=r"^train\.batch_size=29 is more than the 28 training "
                                          r"examples of run s0-fold1 \("):
        check_batch_fits(29, runs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_word_shards(tmp_path_factory.mktemp("batch_shards"),
                             splits=(("train", 40), ("validation", 20), ("test", 20)))


def pretraining(shards, batch: int):
    config = pretrain_config("E16-H16-I32-L1-A2-V500")
    config.model.max_len, config.data.shards, config.mesh.data = 64, str(shards), 1
    config.train.batch_size, config.train.progress = batch, False
    config.mlm.max_predictions = 16
    return config


def stop_at(monkeypatch, module) -> None:
    """``module``'s trainer stops with :class:`Checked` where it would make its mesh."""
    def reached(*args, **kwargs):
        raise Checked()
    monkeypatch.setattr(module, "make_mesh", reached)


def test_a_pretraining_batch_of_every_train_sequence_is_accepted_one_more_refused(
        shards, tmp_path, monkeypatch):
    sequences = len(np.load(shards / "train.npy"))
    assert sequences == 40
    stop_at(monkeypatch, pretrainer)
    with pytest.raises(Checked):
        pretrainer.Pretrainer(pretraining(shards, sequences), tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"^train\.batch_size={sequences + 1} is more than the "
                                          rf"{sequences} sequences of the 'train' split"):
        pretrainer.Pretrainer(pretraining(shards, sequences + 1), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_population_batch_of_every_train_sequence_is_accepted_one_more_refused(
        shards, tmp_path, monkeypatch):
    sequences = len(np.load(shards / "train.npy"))
    stop_at(monkeypatch, population_trainer)
    for batch in (sequences, sequences + 1):
        config = pretraining(shards, batch)
        config.population.seeds = (0, 1)
        members = expand(config, tmp_path / "pop")
        assert len(members) == 2
        if batch == sequences:
            with pytest.raises(Checked):
                population_trainer.PopulationTrainer(members, tmp_path / "pop", "map")
        else:
            with pytest.raises(ConfigError, match=rf"^train\.batch_size={batch} is more than the "
                                                  rf"{sequences} sequences of the 'train'"):
                population_trainer.PopulationTrainer(members, tmp_path / "pop", "map")
    assert not (tmp_path / "pop").exists()


@pytest.fixture
def table(tmp_path):
    """A random-init fine-tuning config of a 4-class labelled file (11 rows a class) and a
    word-piece vocabulary."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]", "the", "a", "of",
                                "to", "in"]) + "\n")
    config = finetune_config("table")
    config.init.mode, config.data.tokenizer = "random", str(vocab)
    config.data.dir, config.data.max_len = str(labels_file(tmp_path / "labels.csv", 11)), 32
    config.data.cv_folds, config.data.pad_buckets = 0, 0
    config.train.seeds, config.train.epochs, config.train.progress = (0,), 1, False
    config.eval.batch_size, config.mesh.data = 8, 1
    return config


def planned(monkeypatch, config, workdir, runs=()) -> Finetuner:
    """The fine-tuner of ``config`` once it planned its steps (it stops there)."""
    plan = Finetuner._plan

    def plan_then_stop(self):
        plan(self)
        raise Checked(self)

    monkeypatch.setattr(Finetuner, "_plan", plan_then_stop)
    with pytest.raises(Checked) as stopped:
        Finetuner(config, workdir, "random", runs=runs)
    monkeypatch.setattr(Finetuner, "_plan", plan)
    return stopped.value.args[0]


def test_a_fine_tuning_batch_of_every_training_example_is_accepted_one_more_refused(
        table, tmp_path, monkeypatch):
    rows = len(load_task_data(table).train)
    table.train.batch_size = rows
    tuner = planned(monkeypatch, table, tmp_path / "ft")
    assert tuner.steps_per_epoch == 1
    table.train.batch_size = rows + 1
    with pytest.raises(ConfigError, match=rf"^train\.batch_size={rows + 1} is more than the "
                                          rf"{rows} training examples \(after"):
        Finetuner(table, tmp_path / "ft", "random")
    assert not (tmp_path / "ft").exists()


def test_folds_of_unequal_size_take_the_smallest_folds_batch(table, tmp_path, monkeypatch):
    table.data.cv_folds = 3  # 44 rows, 15, 15 and 14 held out: 25, 25 and 26 to train
    runs = fold_runs(table, tmp_path / "cv")
    sizes = {name: len(load_task_data(config).train) for name, config, _ in runs}
    smallest = min(sizes, key=sizes.get)
    assert len(set(sizes.values())) > 1 and max(sizes.values()) > sizes[smallest], sizes
    table.train.batch_size = sizes[smallest]
    for _, config, _ in runs:
        config.train.batch_size = sizes[smallest]
    tuner = planned(monkeypatch, table, tmp_path / "cv", runs)
    assert tuner.steps_per_epoch == 2  # the longest fold: one full batch and a part
    for _, config, _ in runs:
        config.train.batch_size = sizes[smallest] + 1
    table.train.batch_size = sizes[smallest] + 1
    with pytest.raises(ConfigError, match=rf"^train\.batch_size={sizes[smallest] + 1} is more "
                                          rf"than the {sizes[smallest]} training examples of run "
                                          rf"{smallest} \("):
        Finetuner(table, tmp_path / "cv", "random", runs=runs)
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("epochs, every, evaluated", [(3, 2, [2, 3]), (4, 2, [2, 4]),
                                                      (3, 1, [1, 2, 3]), (5, 3, [3, 5])])
def test_the_last_epoch_is_evaluated_whatever_the_cadence(table, tmp_path, monkeypatch, epochs,
                                                          every, evaluated):
    rows = len(load_task_data(table).train)
    table.train.batch_size, table.train.epochs, table.eval.every_epochs = 8, epochs, every
    tuner = planned(monkeypatch, table, tmp_path / "ft")
    per_epoch = math.ceil(rows / 8)
    assert tuner.steps_per_epoch == per_epoch and tuner.total_steps == epochs * per_epoch
    assert tuner.eval_steps == [e * per_epoch for e in evaluated]
