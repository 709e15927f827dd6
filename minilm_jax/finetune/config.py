"""Fine-tuning configs: generic defaults plus each task's recipe from the task registry.

Every number is a config field; ``configs/finetune.py:<task>`` returns :func:`finetune_config`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.run_config import (DISTRIBUTED_FIELDS, distributed_section, model_config_dict,
                                   optim_section, parse_value)
from minilm_jax.tasks.registry import UnknownTask, get_task


def finetune_config(task: str = "sst2") -> ml_collections.ConfigDict:
    """The default fine-tuning config of ``task``: generic defaults, then the task's recipe from the
    registry (``minilm_jax.tasks.registry``)."""
    try:
        entry = get_task(task)
    except UnknownTask as err:
        raise ConfigError(str(err)) from None
    task = entry.name
    c = ml_collections.ConfigDict()
    c.task = task

    c.init = ml_collections.ConfigDict()
    c.init.checkpoint = ""  # a pre-training workdir; its best checkpoint (else the newest) is used
    c.init.which = "best"  # best | latest
    c.init.mode = "pretrained"  # pretrained | random (same architecture) | both (two sub-runs)

    # Architecture when no checkpoint is given (with a checkpoint, the checkpoint's model is used).
    # model_overrides ("pooler=weighted_sum", "hidden_dropout=0.0", ...) then apply to either;
    # fields that change parameter shapes cannot be combined with a checkpoint.
    c.model_overrides = ()
    c.point = "paper-1.25m"
    c.model = model_config_dict(c.point)

    c.data = ml_collections.ConfigDict()
    c.data.source = "tsv"  # tsv (glue_data layout) | tfds | csv (AG News / DBpedia) | json (FewRel)
    c.data.dir = ""  # glue_data folder, AG News / DBpedia folder, FewRel JSON file, class folders
    c.data.tokenizer = ""  # "" -> the tokenizer recorded in the checkpoint's shard manifest
    c.data.max_len = 128
    c.data.vocab_filter = ""  # "" | "aochildes" | path of a word list: SPEC A6 vocabulary filter
    c.data.train_split = "train"
    c.data.eval_splits = ("dev",)
    c.data.max_train_examples = 0  # 0: all (a seeded subset otherwise)
    c.data.max_eval_examples = 0
    c.data.train_per_class = 0  # > 0: balanced per-class sample (study B)
    c.data.eval_per_class = 0
    c.data.sample_seed = 0
    c.data.holdout_fraction = 0.2  # tasks without an evaluation split: seeded per-class holdout
    # Model selection (per-epoch evaluation, early stopping, each seed's selected epoch) reads only
    # a seeded per-class share of the training examples (a plain share for regression), never a
    # reported split (GLUE dev, test, holdout): those are scored once, at the end of the run.
    c.data.validation_fraction = 0.1
    c.data.validation_seed = 0
    # Remove the punctuation and symbols the tokenizer can only encode as <unk> (e.g. when the
    # pre-training text had none) from every task text; the summary lists them.
    c.data.drop_unknown_chars = False
    c.data.pad_buckets = 16  # pad each batch to the next multiple of this (<= max_len); 0: max_len
    c.data.text_mode = "join"  # AG News / DBpedia: "join" title and body, or "pair"

    # AdamW with linear decay and no warmup (SPEC A6); beta2 0.999 (not stated: the AdamW default).
    c.optim = optim_section(peak_lr=2e-4, b2=0.999, weight_decay=0.0, schedule="linear",
                            warmup_steps=0)

    c.train = ml_collections.ConfigDict()
    c.train.seeds = (0,)  # one member per seed, trained together in one compiled program
    # How the members run in that program: vmap (batched) | map (one after another; about 2x
    # faster on CPUs for tiny models) | auto (map on CPU, vmap on GPUs/TPUs). Same results.
    c.train.members = "auto"
    c.train.batch_size = 32
    c.train.epochs = 5
    c.train.early_stopping_patience = 0  # epochs without improvement on any seed; 0: off
    c.train.steps_per_dispatch = 1
    c.train.log_every = 50
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 128
    c.eval.every_epochs = 1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.every_minutes = 30.0
    c.checkpoint.keep = 2

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1

    # Multi-host runs (TPU pods, several GPU hosts): the pre-training fields; every process runs the
    # same command and feeds its share of each batch, process 0 writes the run's files.
    c.distributed = distributed_section()

    for field, value in entry.recipe.items():
        *parents, leaf = field.split(".")
        node = c
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"task {task}: recipe field {field!r} is not a fine-tuning config field")
        node[leaf] = value
    return c


# Fields that may change when a run resumes (run control, not the experiment).
RESUMABLE_FIELDS = ("train.log_every", "train.progress", "checkpoint.every_steps",
                    "checkpoint.every_minutes", "checkpoint.keep", "mesh.data", "mesh.fsdp",
                    "train.steps_per_dispatch", "train.members", "eval.batch_size",
                    *DISTRIBUTED_FIELDS)


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields a results table shows for a run."""
    return {"task": config.task, "init": config.init.mode, "checkpoint": config.init.checkpoint,
            "seeds": list(config.train.seeds), "epochs": config.train.epochs,
            "lr": config.optim.peak_lr, "vocab_filter": config.data.vocab_filter}


def with_overrides(cfg: ModelConfig, overrides: tuple[str, ...]) -> ModelConfig:
    """``cfg`` with ``("field=value", ...)`` applied (values parsed by the field's type)."""
    fields = cfg.to_dict()
    for assignment in overrides:
        name, _, text = assignment.partition("=")
        if name.strip() not in fields or not _:
            raise UserError(f"model_overrides: {assignment!r} is not field=value with a ModelConfig "
                            f"field (fields: {', '.join(sorted(fields))})")
        fields[name.strip()] = parse_value(text, fields[name.strip()])
    return ModelConfig.from_mapping(fields)


def changed_model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The ``model.*`` fields set away from the recipe's (``--config.model.pooler=weighted_sum``):
    with a checkpoint they apply on top of the checkpoint's model, like ``model_overrides``."""
    recipe = model_config_dict(config.point)
    return {k: v for k, v in config.model.to_dict().items() if recipe.get(k) != v}
