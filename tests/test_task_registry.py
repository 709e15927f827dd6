"""The task registry: adding a downstream task is one entry plus its loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_path

from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.model_fields import model_config_dict
from minilm_jax.tasks.base import Example, TaskSpec
from minilm_jax.tasks.loaders import TaskData
from minilm_jax.tasks.metrics import glue_score, task_metrics
from minilm_jax.tasks.registry import TaskEntry, get_task, register_task, task_names, unregister_task

POINT = "E32-H32-I128-L1-A2-V1010"
WORDS = ("red", "green", "blue", "apple", "river", "stone", "market", "music")


def toy_loader(task: str, data) -> TaskData:
    """Two classes: does the sentence mention a colour? Deterministic, in memory."""
    def sentence(i: int) -> Example:
        words = [WORDS[3 + (i * 7 + k) % 5] for k in range(6)]
        label = i % 2
        if label:
            words[i % 6] = WORDS[i % 3]
        return Example(" ".join(words), None, label, f"{task}/x/{i}")

    spec = TaskSpec(task, 2, ("plain", "colour"), ("accuracy", "f1"), ("train", "test"))
    return TaskData(spec, [sentence(i) for i in range(120)],
                    {"test": [sentence(i) for i in range(120, 180)]})


@pytest.fixture()
def toy_task():
    entry = register_task(TaskEntry("toy_colour", "local", ("accuracy", "f1"), toy_loader,
                                    {"train.epochs": 1, "data.eval_splits": ("test",),
                                     "optim.peak_lr": 1e-3}))
    yield entry
    unregister_task(entry.name)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece

    lines = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("tok") / "tok.model"
    path.write_bytes(train_sentencepiece(lines, 1000, "bpe"))
    return path


def test_a_registered_task_fine_tunes_end_to_end(toy_task, tokenizer_path, tmp_path):
    assert "toy_colour" in task_names("local")
    c = finetune_config("toy_colour")
    assert c.train.epochs == 1 and c.optim.peak_lr == 1e-3 and c.data.eval_splits == ("test",)
    c.init.mode = "random"
    c.point, c.model = POINT, model_config_dict(POINT)
    c.data.tokenizer, c.data.max_len = str(tokenizer_path), 32
    c.train.seeds, c.train.batch_size, c.train.progress = (0, 1), 16, False
    c.eval.batch_size = 32
    summary = Finetuner(c, tmp_path, "random").run()
    assert summary["task"] == "toy_colour" and summary["examples"]["test"] == 60
    member = summary["final"]["members"][0]
    assert {"accuracy", "f1", "score"} <= set(member)  # the entry's metrics, and their mean
    assert member["score"] == pytest.approx((member["accuracy"] + member["f1"]) / 2)
    assert task_metrics("toy_colour", [0, 1, 1], [0, 1, 0])["accuracy"] == pytest.approx(2 / 3)
    assert glue_score("toy_colour", {"accuracy": 0.5, "f1": 0.7}) == pytest.approx(0.6)


def test_unknown_and_duplicate_tasks_are_clear_errors(toy_task):
    with pytest.raises(ConfigError, match="unknown task 'toy_colr'; known tasks: .*toy_colour"):
        finetune_config("toy_colr")
    with pytest.raises(ValueError, match="already registered"):
        register_task(toy_task)
    with pytest.raises(ValueError, match="family"):
        TaskEntry("x", "mine", ("accuracy",), toy_loader)
    assert get_task("SST2").metric_names == ("accuracy",)
    assert get_task("stsb").metric_names == ("pearson", "spearman")
