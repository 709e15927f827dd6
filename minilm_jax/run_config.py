"""ml-collections run configs and their conversion into frozen, typed objects.

Every number of the recipe is a field; model fields come from the point grammar
(:mod:`minilm_jax.model.sizes`) and are checked into a frozen :class:`ModelConfig` before any model code
sees them.
"""

from __future__ import annotations

import ast
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


def optim_section(**values: Any) -> ml_collections.ConfigDict:
    """AdamW + schedule fields; defaults are SPEC A4's pre-training recipe."""
    fields = dict(
        peak_lr=5e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.01,
        decay_mask=False,  # True: no decay on biases and LayerNorm parameters
        schedule="inverse_sqrt",  # inverse_sqrt (paper) | linear | cosine | constant
        warmup_steps=-1,  # -1: min(4000, 5% of total updates) (paper)
        end_lr_fraction=0.0,  # linear/cosine: final lr = peak * this
        clip_norm=0.0)  # global-norm clipping; 0 disables
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown optim fields {sorted(unknown)}")
    return ml_collections.ConfigDict({**fields, **values})


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


def pretrain_config(point: str = "paper-1.25m") -> ml_collections.ConfigDict:
    """SPEC A4's recipe for ``point``; every number is a field."""
    c = ml_collections.ConfigDict()
    c.point = point
    c.model = model_config_dict(point)
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.shards = ""  # token-shard directory (see minilm_jax.data.shards)
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.test_split = "test"
    c.data.prefetch = 4  # host batches prepared ahead of the device
    c.data.verify_checksums = False

    c.mlm = ml_collections.ConfigDict()
    c.mlm.mask_prob = 0.15
    c.mlm.max_predictions = 32  # static gathered positions per sequence (>= 99.9% of 15% of 128)
    c.mlm.replacement = "mask"  # "mask": all selected -> <mask> (paper); "bert": 80/10/10
    c.mlm.mask_id = 4
    c.mlm.never_mask_ids = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk>
    c.mlm.random_token_min_id = 5  # random replacements (bert mode) draw from [min_id, V)

    c.optim = optim_section()

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 256  # global sequences per optimizer step
    c.train.num_steps = 35475  # one epoch of the paper's corpus
    c.train.grad_accum = 1  # micro-batches per optimizer step
    c.train.steps_per_dispatch = 1  # optimizer steps per compiled call (lax.scan)
    c.train.log_every = 50
    c.train.peak_flops = 0.0  # device peak FLOP/s for MFU; 0: measure a matmul at start
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 1000
    # > 0: also evaluate at this many log-spaced steps per decade (10^(k/n), from step 10), so a
    # loss-vs-FLOPs frontier has points at small compute as well as on the cadence.
    c.eval.per_decade = 0
    c.eval.batch_size = 256
    c.eval.max_sequences = 0  # 0: the whole split
    c.eval.seed = 1234  # fixed evaluation masks
    c.eval.test_at_end = True

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.every_minutes = 30.0
    c.checkpoint.keep = 3
    c.checkpoint.keep_best = True
    # Snapshots kept for good at these fractions of train.num_steps (evaluated there too), e.g.
    # (0.4, 0.7, 1.0): one pre-training run gives several checkpoints to fine-tune from.
    c.checkpoint.keep_fractions = ()

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by other axes
    c.mesh.fsdp = 1

    c.distributed = distributed_section()
    return c


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
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    return field, value
