"""What the library knows of run configs: their shared sections, overrides, resumable fields, the
range of every pre-training field (:data:`PRETRAIN_RULES`, checked by
:func:`validate_pretrain_config` before a run writes anything) and the conversion into frozen, typed
objects.

The recipes themselves (every number of a run) are in ``configs/`` (``minilm_jax.configs``); model
fields come from the point grammar (:mod:`minilm_jax.model.sizes`) and are checked into a frozen
:class:`ModelConfig` before any model code sees them.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.count_check import check_declared_counts
from minilm_jax.model.registry import encoder_factory
from minilm_jax.model.sizes import point_fields


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


VARIANT_PREFIX = "model.extra."


def variant_fields(arch: str) -> dict[str, Any]:
    """The fields a variant's class declares (``config_fields``: name -> default)."""
    return dict(getattr(encoder_factory(arch), "config_fields", None) or {})


def undeclared_field(name: str, arch: str, declared: Mapping[str, Any]) -> ConfigError:
    """The error for ``model.extra.<name>`` that the variant ``arch`` does not declare."""
    return ConfigError(f"{VARIANT_PREFIX}{name}: model.arch={arch} declares no such field (its "
                       f"fields: {', '.join(sorted(declared)) or 'none'}; a variant declares them "
                       "as its class's config_fields)")


def apply_variant_fields(config: ml_collections.ConfigDict,
                         assignments: Sequence[tuple[str, str]] = ()) -> None:
    """``config.model.extra``: the fields ``config.model.arch`` declares at their defaults (kept
    where already set), then ``assignments`` (name, text) parsed by each default's type. A name
    the variant does not declare is one :class:`ConfigError`. A built-in encoder declares none:
    its config is left as it is (no ``extra``), so its identity does not change."""
    if "model" not in config:
        if assignments:
            raise ConfigError(f"{VARIANT_PREFIX}{assignments[0][0]}: this config has no model")
        return
    arch = str(config.model.arch)
    declared = variant_fields(arch)
    values = {**declared, **dict(config.model.get("extra", None) or {})}
    for name, text in assignments:
        if name not in declared:
            raise undeclared_field(name, arch, declared)
        try:
            values[name] = parse_value(text, declared[name])
        except (ValueError, SyntaxError) as err:
            raise ConfigError(f"{VARIANT_PREFIX}{name}={text}: {err}") from err
    if values:
        with config.unlocked():
            config.model.extra = ml_collections.ConfigDict(values)


def distributed_section() -> ml_collections.ConfigDict:
    """Multi-host fields (pre-training and fine-tuning): read by
    :func:`minilm_jax.train.distributed.maybe_initialize_distributed`."""
    c = ml_collections.ConfigDict()
    c.initialize = False  # call jax.distributed.initialize (TPU pods, multi-host GPU)
    c.coordinator_address = ""  # host:port of process 0; "": detected from the cluster
    c.num_processes = 0  # 0: detected
    c.process_id = -1  # -1: detected
    return c


def population_section() -> ml_collections.ConfigDict:
    """``config.population`` of the pre-training recipe (read by
    :mod:`minilm_jax.train.population`): empty lists train one run."""
    c = ml_collections.ConfigDict()
    c.seeds = ()  # e.g. (0, 1, 2): three pre-training seeds in one program
    c.peak_lr = ()  # per-member optim.peak_lr values (crossed with the other lists)
    c.warmup_steps = ()
    c.weight_decay = ()
    c.end_lr_fraction = ()
    c.mask_prob = ()
    c.schedule = ()
    c.dropout = ()  # sets model.hidden_dropout and model.attention_dropout
    c.members = "auto"  # how members run together: vmap | map | auto (map on CPU)
    return c


# The ``distributed`` fields: how a run is launched, never what it computes (a run may resume on
# another number of processes).
DISTRIBUTED_FIELDS = tuple(f"distributed.{k}" for k in distributed_section())


# Fields that may change between a run and its resumption (run control, not the experiment).
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.progress", "train.peak_flops",
                    "eval.every_steps", "eval.per_decade", "eval.test_at_end",
                    "eval.zero_shot_every", "checkpoint.every_steps",
                    "checkpoint.every_minutes", "checkpoint.keep", "checkpoint.keep_fractions",
                    "data.prefetch", "data.allow_vocab_mismatch",
                    "data.verify_checksums", *DISTRIBUTED_FIELDS, "mesh.data", "mesh.fsdp",
                    "mesh.members", "population.members",
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


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The values a numeric config field may take, written as the error message says them: an
    interval ``"(0, 1)"``, ``"[0, model.vocab_size)"`` (a bound may name another field of the same
    config) or a half-line ``">= 1"``, ``"> 0"``. ``why`` says what the field is, in a few words;
    ``integer`` is for counts, ids and seeds; ``also`` lists sentinel values outside the range
    (``-1``: detected); ``each`` checks every element of a sequence field. Non-finite values (nan,
    inf) are never allowed."""

    range: str
    why: str
    integer: bool = False
    also: tuple[Any, ...] = ()
    each: bool = False

    def _bounds(self, fields: Mapping[str, Any]) -> tuple[Any, bool, Any, bool]:
        """(low, low included, high, high included); a bound naming a field is its value."""
        text = self.range.strip()
        for op in (">=", "<=", ">", "<"):
            if text.startswith(op):
                bound = _bound(text[len(op):], fields)
                return ((bound, op == ">=", None, False) if op[0] == ">"
                        else (None, False, bound, op == "<="))
        low, high = text[1:-1].split(",")
        return _bound(low, fields), text[0] == "[", _bound(high, fields), text[-1] == "]"

    def admits(self, value: Any, fields: Mapping[str, Any]) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if (self.integer and not isinstance(value, int)) or not math.isfinite(value):
            return False
        low, low_in, high, high_in = self._bounds(fields)
        return ((low is None or value > low or (low_in and value == low))
                and (high is None or value < high or (high_in and value == high)))

    def describe(self, fields: Mapping[str, Any]) -> str:
        """``must be an integer in [0, model.vocab_size=19010)``, ``must be >= 0, or -1``."""
        shown = re.sub(r"[A-Za-z_][\w.]*", lambda m: f"{m.group(0)}={fields.get(m.group(0))}",
                       self.range)
        kind = "an integer " if self.integer else ""
        where = f"in {shown}" if shown[0] in "([" else shown
        also = "".join(f", or {v}" for v in self.also)
        return f"must be {kind}{where}{also}"

    def problem(self, field: str, fields: Mapping[str, Any]) -> str | None:
        """The one-line complaint about ``field``'s value, or None when it is allowed."""
        value = fields[field]
        if not self.each:
            if self.admits(value, fields):
                return None
            return f"{field}={_show(value)}: {self.describe(fields)} ({self.why})"
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value])
               if not self.admits(v, fields)]
        if not bad:
            return None
        return (f"{field}={_show(value)}: each {self.describe(fields)}, not {_show(bad[0])} "
                f"({self.why})")


def _bound(text: str, fields: Mapping[str, Any]) -> Any:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return fields[text]  # another field of the config (model.vocab_size)


def _show(value: Any) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)


# The sections both recipes share (optimizer, checkpoints, mesh, multi-host launch).
SHARED_RULES: dict[str, Allowed] = {
    "optim.peak_lr": Allowed("> 0", "the peak learning rate; 0 trains nothing"),
    "optim.b1": Allowed("[0, 1)", "Adam's first-moment decay"),
    "optim.b2": Allowed("[0, 1)", "Adam's second-moment decay"),
    "optim.eps": Allowed("> 0", "added to Adam's denominator; 0 divides 0 by 0 for a parameter "
                                "with no gradient"),
    "optim.weight_decay": Allowed(">= 0", "decoupled weight decay; 0: none"),
    "optim.warmup_steps": Allowed(">= 0", "-1: min(4000, 5% of the updates)", integer=True,
                                  also=(-1,)),
    "optim.end_lr_fraction": Allowed("[0, 1]", "the final learning rate as a fraction of the peak"),
    "optim.clip_norm": Allowed(">= 0", "global-norm clipping; 0: none"),
    "train.steps_per_dispatch": Allowed(">= 1", "optimizer steps per compiled call", integer=True),
    "train.log_every": Allowed(">= 1", "steps between log lines", integer=True),
    "checkpoint.every_steps": Allowed(">= 1", "steps between saves", integer=True),
    "checkpoint.every_minutes": Allowed("> 0", "minutes between saves; 0 would save at every "
                                               "dispatch"),
    "checkpoint.keep": Allowed(">= 1", "regular checkpoints kept; resuming needs one",
                               integer=True),
    "mesh.data": Allowed(">= 1", "devices on the data axis; -1: all not used by fsdp",
                         integer=True, also=(-1,)),
    "mesh.fsdp": Allowed(">= 1", "devices that shard the parameters", integer=True),
    "mesh.members": Allowed(">= 1", "devices a population's members are spread over",
                            integer=True),
    "distributed.num_processes": Allowed(">= 0", "0: detected", integer=True),
    "distributed.process_id": Allowed(">= 0", "-1: detected", integer=True, also=(-1,)),
}

PRETRAIN_RULES: dict[str, Allowed] = {
    **SHARED_RULES,
    "seed": Allowed(">= 0", "initialisation, data order and masks", integer=True),
    "data.prefetch": Allowed(">= 1", "host batches prepared ahead", integer=True),
    "mlm.mask_prob": Allowed("(0, 1)", "the share of tokens selected for prediction; at 0 "
                                       "nothing is predicted and perplexity reads 1"),
    "mlm.max_predictions": Allowed("[1, model.max_len]", "predicted positions per sequence",
                                   integer=True),
    "mlm.mask_id": Allowed("[0, model.vocab_size)", "the <mask> token", integer=True),
    "mlm.never_mask_ids": Allowed("[0, model.vocab_size)", "tokens never selected",
                                  integer=True, each=True),
    "mlm.random_token_min_id": Allowed("[0, model.vocab_size)", "bert replacements draw from "
                                                                "[this, vocab_size)", integer=True),
    "train.batch_size": Allowed(">= 1", "sequences per optimizer step", integer=True),
    "train.num_steps": Allowed(">= 1", "optimizer steps", integer=True),
    "train.grad_accum": Allowed(">= 1", "micro-batches per optimizer step", integer=True),
    "train.peak_flops": Allowed(">= 0", "device peak FLOP/s for MFU; 0: measured"),
    "eval.every_steps": Allowed(">= 1", "steps between evaluations", integer=True),
    "eval.per_decade": Allowed(">= 0", "log-spaced evaluations per decade; 0: none", integer=True),
    "eval.batch_size": Allowed(">= 1", "sequences per evaluation batch", integer=True),
    "eval.max_sequences": Allowed(">= 0", "0: the whole split", integer=True),
    "eval.seed": Allowed(">= 0", "the evaluation masks", integer=True),
    "eval.zero_shot_every": Allowed(">= 0", "steps between zero-shot evaluations; 0: at the "
                                    "snapshots and the final step only", integer=True),
    "checkpoint.keep_fractions": Allowed("(0, 1]", "fractions of train.num_steps kept as "
                                                   "snapshots", each=True),
    # A population's lists: each value as the field it sets (population.schedule: by name,
    # when the program is built)
    "population.seeds": Allowed(">= 0", "the members' seeds", integer=True, each=True),
    "population.peak_lr": Allowed("> 0", "the members' peak learning rates", each=True),
    "population.warmup_steps": Allowed(">= 0", "the members' warm-up steps; -1: min(4000, 5% "
                                               "of the updates)", integer=True, also=(-1,),
                                       each=True),
    "population.weight_decay": Allowed(">= 0", "the members' decoupled weight decay", each=True),
    "population.end_lr_fraction": Allowed("[0, 1]", "the members' final learning rates as "
                                                    "fractions of the peak", each=True),
    "population.mask_prob": Allowed("(0, 1)", "the members' shares of tokens selected for "
                                              "prediction", each=True),
    "population.dropout": Allowed("[0, 1)", "the members' dropout rates", each=True),
}


def range_problems(config: ml_collections.ConfigDict, rules: Mapping[str, Allowed]) -> list[str]:
    """One line per field of ``config`` outside its rule's range (fields a config lacks are
    skipped), then the rules that tie shared fields together."""
    fields = flatten(config)
    problems = [p for field, rule in rules.items() if field in fields
                if (p := rule.problem(field, fields)) is not None]
    if (fields.get("optim.schedule") == "inverse_sqrt" and fields.get("optim.warmup_steps") == 0):
        problems.append("optim.warmup_steps=0: must be >= 1, or -1, with optim.schedule="
                        "inverse_sqrt (peak * min(s/W, sqrt(W/s)) is 0 at every step for W=0)")
    processes = fields.get("distributed.num_processes")
    process = fields.get("distributed.process_id")
    if isinstance(processes, int) and isinstance(process, int) and 0 <= processes <= process:
        problems.append(f"distributed.process_id={process}: must be below "
                        f"distributed.num_processes={processes} (or -1: detected)")
    return problems


def raise_problems(problems: list[str]) -> None:
    """One :class:`ConfigError` (one line) listing every problem; nothing when there is none."""
    if problems:
        raise ConfigError("; ".join(problems))


def validate_pretrain_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The run's model config, after checking every field of a pre-training config for range
    (:data:`PRETRAIN_RULES`; the model's fields by :class:`ModelConfig`) and the snapshot steps.
    Called before anything is written; device-dependent checks (mesh, batch divisibility) and
    the shards' come later, still before anything is written."""
    model = model_from_config(config)
    raise_problems(range_problems(config, PRETRAIN_RULES))
    snapshot_steps(config)
    check_declared_counts(model)  # a variant's counts against its tree and XLA's (built-in: none)
    return model


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


# Fields added after runs were recorded, at a value that changes nothing: a record without them
# has that value (and a run at that value records none, so its config.json stays as it was).
QUIET_DEFAULTS: dict[str, Any] = {"init.partial": False}


def recorded_value(flat: dict[str, Any], key: str) -> Any:
    """``flat[key]``, or for a field of :data:`QUIET_DEFAULTS` missing from it, its default."""
    return flat.get(key, QUIET_DEFAULTS.get(key))


def without_quiet_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` without the :data:`QUIET_DEFAULTS` fields at their default."""
    return {k: v for k, v in flat.items() if k not in QUIET_DEFAULTS or v != QUIET_DEFAULTS[k]}


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
    """Fields whose values differ between two flattened configs, ignoring run-control fields."""
    keys = (set(saved) | set(current)) - set(ignore)
    return sorted(k for k in keys if recorded_value(saved, k) != recorded_value(current, k))


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
            parse_value(t, current[0]) if current else _literal(t)
            for t in text.split(",") if t.strip())
        return tuple(value)
    return text


def _literal(text: str) -> Any:
    """An element of a list given as ``a,b`` whose field has no example element: a number where
    it reads as one, else the text."""
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


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
    """Apply ``"a.b=value"`` to ``config`` (the field must exist, or be a field the variant
    ``model.arch`` names declares: ``model.extra.<name>``); returns (field, parsed value)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form field=value")
    field, text = assignment.split("=", 1)
    field = field.strip()
    if field.startswith(VARIANT_PREFIX):
        try:
            apply_variant_fields(config, [(field[len(VARIANT_PREFIX):], text)])
        except ConfigError as err:
            raise ConfigError(f"override {assignment!r}: {err}") from err
        return field, config.model.extra[field[len(VARIANT_PREFIX):]]
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
