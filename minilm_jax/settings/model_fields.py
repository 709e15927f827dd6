"""A run config's model: every :class:`ModelConfig` field from a point (:func:`model_config_dict`),
the frozen model of a config (:func:`model_from_config`, a variant's fields checked), and at
fine-tuning the model built over a checkpoint's: its architecture resolved or held to the
checkpoint's (:func:`take_checkpoint_arch`), the ``model.*`` fields set away from the recipe
(:func:`changed_model_fields`) and ``model_overrides`` (:func:`with_overrides`)."""

from __future__ import annotations

from typing import Any

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.sizes import point_fields

from .command_line import parse_value, undeclared_field, variant_fields


def model_config_dict(point: str) -> ml_collections.ConfigDict:
    """Every ModelConfig field, with the point's values filled in (so any field can be overridden)."""
    fields = ModelConfig().to_dict()
    fields.update(point_fields(point))
    return ml_collections.ConfigDict(fields)


def model_from_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The frozen model config of a run config (validated; a variant's fields must be its own)."""
    model = ModelConfig.from_mapping(config.model.to_dict())
    if not model.extra:  # nothing to check (and no import of the encoder's module)
        return model
    declared = variant_fields(model.arch)
    for name, _ in model.extra:
        if name not in declared:
            raise undeclared_field(name, model.arch, declared)
    return model


def with_overrides(cfg: ModelConfig, overrides: tuple[str, ...]) -> ModelConfig:
    """``cfg`` with ``("field=value", ...)`` applied (values parsed by the field's type; a
    variant's field as ``extra.<name>=value``, by its declared default's)."""
    fields = cfg.to_dict()
    extra = dict(cfg.extra)
    declared = variant_fields(cfg.arch)
    for assignment in overrides:
        name, _, text = assignment.partition("=")
        name = name.strip()
        if name.startswith("extra.") and _ and name[len("extra."):] in declared:
            field = name[len("extra."):]
            extra[field] = parse_value(text, extra.get(field, declared[field]))
            continue
        if name not in fields or name == "extra" or not _:
            raise UserError(f"model_overrides: {assignment!r} is not field=value with a ModelConfig "
                            f"field (fields: {', '.join(sorted(set(fields) - {'extra'}))}"
                            + (f"; this variant's: {', '.join(f'extra.{n}' for n in declared)}"
                               if declared else "") + ")")
        fields[name] = parse_value(text, fields[name])
    if extra:
        fields["extra"] = extra
    return ModelConfig.from_mapping(fields)


def changed_model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The ``model.*`` fields set away from the recipe's (``--config.model.pooler=weighted_sum``):
    with a checkpoint they apply on top of the checkpoint's model, like ``model_overrides``. The
    architecture is not among them (:func:`take_checkpoint_arch` resolves it); a variant's fields
    (``extra``) apply one by one over the checkpoint's."""
    recipe = model_config_dict(config.point)
    return {k: v for k, v in config.model.to_dict().items()
            if k != "arch" and recipe.get(k, {} if k == "extra" else None) != v}


def take_checkpoint_arch(config: ml_collections.ConfigDict, arch: str | None) -> str | None:
    """Resolve the run's ``model.arch``: the recipe's ``""`` means the architecture of the
    checkpoint it starts from (``arch``; with none, the point's), so its ``config.json`` names
    the encoder it really trained (a variant's checkpoint is not recorded as ``roberta``; a
    built-in encoder's runs record the point's, as runs written before did, so their roots stay
    resumable). Returns the architecture the command asked for (``--config.model.arch=...``,
    then held against the checkpoint's, never dropped), or None when it left it to the
    checkpoint."""
    from minilm_jax.model.registry import is_library_encoder  # flax: not for --help

    asked = str(config.model.arch)
    if asked:
        return asked if arch is not None else None
    resolved = arch if arch and not is_library_encoder(arch) else point_arch(config.point)
    with config.unlocked():
        config.model.arch = resolved
    return None


def point_arch(point: str) -> str:
    """The architecture of a model point (``roberta`` for study A's, ``bert`` for study B's)."""
    return str(model_config_dict(point).arch)
