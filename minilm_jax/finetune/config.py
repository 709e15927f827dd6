"""What the engine knows of fine-tuning configs beyond their recipe (``configs/finetune.py``):
the fields a resumed run may change, a run's table columns and the model overrides.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.run_config import DISTRIBUTED_FIELDS, model_config_dict, parse_value


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
