"""What the fine-tuning recipe's fields allow (:data:`FINETUNE_RULES`, checked by
:func:`validate_finetune_config` before a run writes anything, and a batch against the examples it
is drawn from: :func:`check_batch_fits`), the fields a resumed run may change
(:func:`resumable_fields`) and a run's columns in a results table (:func:`describe`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections

from .allowed import SHARED_RULES, Allowed, batch_over_data, raise_problems, range_problems
from .recipes import DISTRIBUTED_FIELDS


FINETUNE_RULES: dict[str, Allowed] = {
    **SHARED_RULES,
    "data.max_len": Allowed(">= 6", "tokens per example; a sentence pair takes 4 special tokens "
                                    "and one token of each text", integer=True),
    "data.max_train_examples": Allowed(">= 0", "0: all", integer=True),
    "data.max_eval_examples": Allowed(">= 0", "0: all", integer=True),
    "data.train_per_class": Allowed(">= 0", "0: no per-class sample", integer=True),
    "data.eval_per_class": Allowed(">= 0", "0: no per-class sample", integer=True),
    "data.sample_seed": Allowed(">= 0", "the sampling seed", integer=True),
    "data.holdout_fraction": Allowed("(0, 1)", "the share held out to report on, for a task "
                                               "without an evaluation split"),
    "data.cv_folds": Allowed(">= 0", "k-fold cross-validation of one labelled file (tasks table, "
                                     "table_regression); 0: the holdout instead", integer=True),
    "data.cv_fold": Allowed(">= -1", "the held-out fold of one fold run; -1: every fold",
                            integer=True),
    "data.cv_seed": Allowed(">= 0", "the fold partition's seed", integer=True),
    "data.validation_fraction": Allowed("(0, 1)", "the share of train carved out for model "
                                                  "selection"),
    "data.validation_seed": Allowed(">= 0", "the validation split's seed", integer=True),
    "data.pad_buckets": Allowed(">= 0", "0: always pad to data.max_len", integer=True),
    "train.seeds": Allowed(">= 0", "one member per seed", integer=True, each=True),
    "train.batch_size": Allowed(">= 1", "examples per step and member", integer=True),
    "train.epochs": Allowed(">= 1", "passes over the training examples", integer=True),
    "train.early_stopping_patience": Allowed(">= 0", "evaluations without improvement; 0: off",
                                             integer=True),
    "eval.batch_size": Allowed(">= 1", "examples per evaluation batch", integer=True),
    "eval.every_epochs": Allowed(">= 1", "epochs between evaluations", integer=True),
}


def validate_finetune_config(config: ml_collections.ConfigDict) -> None:
    """Check every field of a fine-tuning config for range (:data:`FINETUNE_RULES`; the model's
    fields when it is built, by :class:`ModelConfig`): one :class:`ConfigError` line listing every
    problem. Called before anything is written."""
    problems = range_problems(config, FINETUNE_RULES)
    seeds = tuple(config.train.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        problems.insert(0, f"train.seeds={seeds!r}: must be distinct and non-empty (one member per "
                           "seed)")
    epochs, every = config.train.get("epochs"), config.eval.get("every_epochs")
    if isinstance(epochs, int) and isinstance(every, int) and 1 <= epochs < every:
        problems.append(f"eval.every_epochs={every} is more than train.epochs={epochs}: the run "
                        "would be evaluated at its last epoch only (model selection from one "
                        f"epoch); pass --config.eval.every_epochs<={epochs}")
    raise_problems(problems)


def check_batch_fits(batch_size: int, runs: Sequence[tuple[str, int]]) -> None:
    """Refuse a ``train.batch_size`` over the training examples of any of ``runs`` (name, rows
    after sampling, filtering and the validation split): a batch would repeat examples and an
    epoch would be more than one pass over them. One :class:`ConfigError` line, before anything
    is written."""
    name, rows = min(runs, key=lambda run: run[1])
    problem = batch_over_data(batch_size, rows, "training examples"
                              + (f" of run {name}" if name else "")
                              + " (after sampling, filtering and the validation split)")
    if problem:
        raise_problems([problem])


# Fields that may change when a run resumes (run control, not the experiment).
RESUMABLE_FIELDS = ("train.log_every", "train.progress", "checkpoint.every_steps",
                    "checkpoint.every_minutes", "checkpoint.keep", "checkpoint.keep_finished",
                    "mesh.data", "mesh.fsdp", "train.steps_per_dispatch", "train.members", "eval.batch_size",
                    *DISTRIBUTED_FIELDS)


# A random-init run takes only its architecture and tokenizer from ``init.checkpoint``, and its
# identity records both (``model_built``, ``tokenizer_sha256``): which checkpoint supplied them is
# not part of the run (a sweep's runs of one architecture share one random-init twin).
RANDOM_INIT_SOURCE_FIELDS = ("init.checkpoint", "init.which")


def resumable_fields(init_mode: str) -> tuple[str, ...]:
    """Fields a run with ``init_mode`` may resume with changed: run control, and for random init
    the checkpoint that supplied its architecture and tokenizer."""
    return RESUMABLE_FIELDS + (RANDOM_INIT_SOURCE_FIELDS if init_mode == "random" else ())


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields a results table shows for a run."""
    return {"task": config.task, "init": config.init.mode, "checkpoint": config.init.checkpoint,
            "seeds": list(config.train.seeds), "epochs": config.train.epochs,
            "lr": config.optim.peak_lr, "vocab_filter": config.data.vocab_filter}
