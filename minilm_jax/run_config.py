"""What the library knows of run configs: their shared sections, overrides, resumable fields and
the conversion into frozen, typed objects.

The recipes themselves (every number of a run) are in ``configs/`` (``minilm_jax.configs``); model
fields come from the point grammar (:mod:`minilm_jax.model.sizes`) and are checked into a frozen
:class:`ModelConfig` before any model code sees them.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import ml_collections

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.sizes import point_fields


def model_config_dict(point: str) -> ml_collections.ConfigDict:
    """Every ModelConfig field, with the point's values filled in (so any field can be overridden)."""
    fields = ModelConfig().to_dict()
    fields.update(point_fields(point))
    return ml_collections.ConfigDict(fields)


def model_from_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The frozen model config of a run config (validated)."""
    return ModelConfig.from_mapping(config.model.to_dict())


def distributed_section() -> ml_collections.ConfigDict:
    """Multi-host fields (pre-training and fine-tuning): read by
    :func:`minilm_jax.train.distributed.maybe_initialize_distributed`."""
    c = ml_collections.ConfigDict()
    c.initialize = False  # call jax.distributed.initialize (TPU pods, multi-host GPU)
    c.coordinator_address = ""  # host:port of process 0; "": detected from the cluster
    c.num_processes = 0  # 0: detected
    c.process_id = -1  # -1: detected
    return c


# The ``distributed`` fields: how a run is launched, never what it computes (a run may resume on
# another number of processes).
DISTRIBUTED_FIELDS = tuple(f"distributed.{k}" for k in distributed_section())


# Fields that may change between a run and its resumption (run control, not the experiment).
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.progress", "train.peak_flops",
                    "eval.every_steps", "eval.per_decade", "eval.test_at_end", "checkpoint.every_steps",
                    "checkpoint.every_minutes", "checkpoint.keep", "checkpoint.keep_fractions",
                    "data.prefetch",
                    "data.verify_checksums", *DISTRIBUTED_FIELDS, "mesh.data", "mesh.fsdp",
                    "train.steps_per_dispatch")


def snapshot_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The steps of ``checkpoint.keep_fractions`` (round(f * num_steps), at least 1)."""
    total = int(config.train.num_steps)
    steps = []
    for f in config.checkpoint.keep_fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ConfigError(f"checkpoint.keep_fractions: {f} is not in (0, 1]")
        steps.append(max(1, round(float(f) * total)))
    k = int(config.train.steps_per_dispatch)
    bad = [s for s in steps if s % k and s != total]
    if bad:
        raise ConfigError(f"checkpoint.keep_fractions gives steps {bad}, not multiples of "
                          f"train.steps_per_dispatch={k}")
    return tuple(sorted(set(steps)))


def log_eval_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Steps round(10^(k/n)) >= 10 below ``train.num_steps`` for ``eval.per_decade`` = n (or ())."""
    per_decade = int(config.eval.get("per_decade", 0))
    total = int(config.train.num_steps)
    if per_decade < 0:
        raise ConfigError(f"eval.per_decade must be >= 0, got {per_decade}")
    if per_decade == 0:
        return ()
    steps, k = set(), per_decade  # k = n gives step 10
    while (step := round(10 ** (k / per_decade))) < total:
        steps.add(step)
        k += 1
    return tuple(sorted(steps))


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` view of a (nested) ConfigDict or dict."""
    items = config.items() if hasattr(config, "items") else []
    out: dict[str, Any] = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
    """Fields whose values differ between two flattened configs, ignoring run-control fields."""
    keys = (set(saved) | set(current)) - set(ignore)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def parse_value(text: str, current: Any) -> Any:
    """``text`` converted to the type of the field's current value."""
    text = text.strip()
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):  # an integer literal, as on the command line (no 1e3)
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}") from None
    if isinstance(current, float):
        return float(text)
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text) if text.startswith(("(", "[")) else tuple(
            parse_value(t, current[0] if current else "") for t in text.split(",") if t)
        return tuple(value)
    return text


# Fields a config argument sets and an override may not change: the model size comes from
# ``configs/pretrain.py:<point>`` (or ``--config.model.<field>``); ``point`` only labels it.
FIXED_FIELDS = {"point": "the size comes from the config argument (configs/pretrain.py:<point>) "
                         "or --config.model.<field>=...; point only labels it"}


def check_override(config: ml_collections.ConfigDict, field: str, text: str) -> Any:
    """The value ``text`` parsed for ``field`` of ``config`` (the one override parser, for the
    command line and for sweeps); a :class:`ConfigError` naming the field otherwise."""
    if field in FIXED_FIELDS:
        raise ConfigError(f"{field} cannot be overridden: {FIXED_FIELDS[field]}")
    valid = flatten(config)
    if field not in valid:
        raise ConfigError(f"unknown config field '{field}'")
    try:
        return parse_value(text, valid[field])
    except (ValueError, SyntaxError) as err:
        raise ConfigError(f"{field}={text}: {err}") from err


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> tuple[str, Any]:
    """Apply ``"a.b=value"`` to ``config`` (the field must exist); returns (field, parsed value)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form field=value")
    field, text = assignment.split("=", 1)
    field = field.strip()
    try:
        value = check_override(config, field, text)
    except ConfigError as err:
        raise ConfigError(f"override {assignment!r}: {err}") from err
    _set(config, field, value)
    return field, value


def _set(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def apply_recipe(config: ml_collections.ConfigDict, recipe: Mapping[str, Any], what: str) -> None:
    """Set ``{"a.b": value}`` fields of ``config`` in place; every field must exist already
    (``what`` names the recipe in the error, e.g. ``task sst2``)."""
    valid = flatten(config)
    for field, value in recipe.items():
        if field not in valid:
            raise ConfigError(f"{what}: recipe field {field!r} is not a field of the config")
        _set(config, field, value)
