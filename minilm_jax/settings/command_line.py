"""How a command line becomes a config: ``--config.<field>=<value>`` overrides parsed by the
field's type (:func:`parse_value`, one parser for the command line and for sweeps), checked
against the recipe's fields (:func:`check_overrides`: an unknown field is one line naming it), the
last of a repeated override winning (:func:`last_override_wins`), and a variant's own fields
(``--config.model.extra.<name>``) applied once ``model.arch`` is known
(:func:`take_variant_fields`, :func:`apply_variant_fields`). :func:`flatten` is the ``{"a.b":
value}`` view every config check and record uses."""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError

from . import recipes


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


VARIANT_PREFIX = "model.extra."


def variant_fields(arch: str) -> dict[str, Any]:
    """The fields a variant's class declares (``config_fields``: name -> default)."""
    from minilm_jax.model.registry import encoder_factory  # flax: not for --help

    return dict(getattr(encoder_factory(arch), "config_fields", None) or {})


def undeclared_field(name: str, arch: str, declared: Mapping[str, Any]) -> ConfigError:
    """The error for ``model.extra.<name>`` that the variant ``arch`` does not declare."""
    return ConfigError(f"{VARIANT_PREFIX}{name}: model.arch={arch} declares no such field (its "
                       f"fields: {', '.join(sorted(declared)) or 'none'}; a variant declares them "
                       "as its class's config_fields)")


def apply_variant_fields(config: ml_collections.ConfigDict,
                         assignments: Sequence[tuple[str, str]] = ()) -> None:
    """``config.model.extra``: the fields ``config.model.arch`` declares at their defaults (kept
    where already set; a fine-tuning config's defaults are its checkpoint's values, so only what is
    assigned is set), then ``assignments`` (name, text) parsed by each default's type. A name
    the variant does not declare is one :class:`ConfigError`. A built-in encoder declares none:
    its config is left as it is (no ``extra``), so its identity does not change."""
    if "model" not in config:
        if assignments:
            raise ConfigError(f"{VARIANT_PREFIX}{assignments[0][0]}: this config has no model")
        return
    arch = str(config.model.arch)
    finetuning = "init" in config  # a checkpoint's own values are the defaults there
    if not arch and assignments:
        raise ConfigError(f"{VARIANT_PREFIX}{assignments[0][0]}: name the variant whose field it "
                          "is (--config.model.arch=...); its fields then apply over the "
                          "checkpoint's")
    declared = variant_fields(arch) if arch else {}
    values = {**({} if finetuning else declared), **dict(config.model.get("extra", None) or {})}
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


def check_overrides(argv: Sequence[str], flag: str = "config") -> list[str]:
    """Fail with one message naming an unknown ``--config.<field>`` and listing valid ones;
    ``argv`` with each list field given as ``a,b`` written as the literal ``('a', 'b')``
    (ml-collections would read ``linear,cosine`` as the one string ``'linear,cosine'``)."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    if spec is None:
        return list(argv)
    from minilm_jax.settings.command_line import FIXED_FIELDS, check_override, flatten

    config = recipes.load_config_file(spec)
    flat = flatten(config)
    valid = set(flat)
    prefix = f"--{flag}."
    out = []
    for arg in argv:
        out.append(arg)
        if not arg.startswith(prefix):
            continue
        field, has_value, text = arg[len(prefix):].partition("=")
        if field in valid and has_value:  # the value, by the parser sweeps use too
            value = check_override(config, field, text)
            if isinstance(flat[field], (tuple, list)) and not text.strip().startswith(("(", "[")):
                out[-1] = f"{prefix}{field}={tuple(value)!r}"
            continue
        if field in FIXED_FIELDS:
            check_override(config, field, text)
        if field in valid or any(v.startswith(field + ".") for v in valid):
            continue
        parent = field.rsplit(".", 1)[0] + "." if "." in field else ""
        siblings = sorted(v for v in valid if v.startswith(parent) and "." not in v[len(parent):])
        close = difflib.get_close_matches(field, sorted(valid), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown config field '{field}'{hint}; valid fields"
                        f"{' under ' + parent[:-1] if parent else ''}: {', '.join(siblings)}")
    return out


def last_override_wins(argv: Sequence[str], flag: str = "config") -> list[str]:
    """``argv`` with only the last of each repeated ``--<flag>.<field>`` override (``--flagfile``
    contents expanded first). ml-collections parses a tuple field as an absl multi-flag, so
    ``--config.train.seeds=0,1 --config.train.seeds=2,3`` would concatenate to ``(0, 1, 2, 3)``
    while a repeated scalar takes its last value: with this, both take the last value.

    An override is ``--<flag>.<field>=value``, ``--[no]<flag>.<field>`` (a boolean) or
    ``--<flag>.<field> value`` (the next argument, for a field that is not a boolean); nothing
    after ``--`` is a flag."""
    from absl import flags

    try:
        argv = flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False)
    except flags.Error:
        argv = list(argv)  # absl reports the bad --flagfile itself
    override = re.compile(rf"^--?(no)?{re.escape(flag)}\.([^=]+)(=.*)?$")
    end = argv.index("--") if "--" in argv else len(argv)
    booleans = None  # the config's boolean fields, read when a value might be the next argument
    groups: list[tuple[str | None, list[str]]] = []  # (field or None, its arguments)
    i = 0
    while i < end:
        match = override.match(argv[i])
        if match is None:
            groups.append((None, [argv[i]]))
            i += 1
            continue
        field, takes_next = match.group(2), False
        if match.group(3) is None and match.group(1) is None and i + 1 < end:
            if booleans is None:
                booleans = _boolean_fields(argv, flag)
            takes_next = field not in booleans  # absl takes the next argument, as it is
        groups.append((field, argv[i:i + 1 + takes_next]))
        i += 1 + takes_next
    last = {field: n for n, (field, _) in enumerate(groups) if field is not None}
    kept = [arg for n, (field, args) in enumerate(groups) if field is None or last[field] == n
            for arg in args]
    return kept + argv[end:]


def _boolean_fields(argv: Sequence[str], flag: str) -> set[str]:
    """The boolean fields of the config file ``--<flag>=`` names (none when it cannot be read:
    the command reports that itself)."""
    spec = None
    for i, arg in enumerate(argv):
        if arg.startswith((f"--{flag}=", f"-{flag}=")):
            spec = arg.split("=", 1)[1]
        elif arg in (f"--{flag}", f"-{flag}") and i + 1 < len(argv):
            spec = argv[i + 1]
    if spec is None:
        return set()
    from minilm_jax.settings.command_line import flatten

    try:
        config = recipes.load_config_file(spec)
    except Exception:  # a missing file or a bad argument: reported by the command
        return set()
    return {field for field, value in flatten(config).items() if isinstance(value, bool)}


# --config.model.extra.<name>=<value>: a variant's own fields, which the recipe cannot know: taken
# out of the arguments before ml-collections parses them, applied once the config (and so
# model.arch) is read (apply_variant_fields).
VARIANT_ASSIGNMENTS: list[tuple[str, str]] = []
_VARIANT_FLAG = re.compile(r"^--config\.model\.extra\.([A-Za-z_]\w*)=(.*)$")


def take_variant_fields(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--config.model.extra.<name>=<value>`` arguments, which go to
    :data:`VARIANT_ASSIGNMENTS` (nothing after ``--`` is a flag)."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = []
    VARIANT_ASSIGNMENTS.clear()  # this command's only
    for arg in argv[:end]:
        match = _VARIANT_FLAG.match(arg)
        if match:
            VARIANT_ASSIGNMENTS.append((match.group(1), match.group(2)))
        else:
            kept.append(arg)
    return kept + list(argv[end:])


def apply_recipe(config: ml_collections.ConfigDict, recipe: Mapping[str, Any], what: str) -> None:
    """Set ``{"a.b": value}`` fields of ``config`` in place; every field must exist already
    (``what`` names the recipe in the error, e.g. ``task sst2``)."""
    valid = flatten(config)
    for field, value in recipe.items():
        if field not in valid:
            raise ConfigError(f"{what}: recipe field {field!r} is not a field of the config")
        _set(config, field, value)
