"""Where a ``--config`` spec points: an installed recipe by name, or a file of the user's.

The recipes in the checkout's ``configs/`` are installed as the package ``minilm_jax.configs``
(in a wheel and in an editable install), so they are found from any directory:

    --config=pretrain:paper-1.25m          the installed recipe ``pretrain.py``, argument paper-1.25m
    --config=configs/pretrain.py:tiny      a file (relative to the current directory) and argument
    --config=my_lab/recipe.py              a file of the user's, its ``get_config()`` default

A name is an installed recipe when no file of that name exists in the current directory.

What a recipe sets is the recipe's file (``configs/``); here are the sections both recipes share
(:func:`distributed_section`; the pre-training :func:`population_section`)
(:func:`~minilm_jax.settings.command_line.apply_recipe` sets a task's recipe on the fine-tuning
config).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import ml_collections

from minilm_jax.errors import UserError

RECIPES = ("pretrain", "finetune", "sweep")  # the recipes a command takes with --config


@functools.cache
def installed_dir() -> Path:
    """The folder holding the installed recipes (``minilm_jax/configs``, or the checkout's
    ``configs/`` under an editable install)."""
    spec = importlib.util.find_spec("minilm_jax.configs")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the installed recipes (minilm_jax.configs) are missing: reinstall "
                        "minilm-jax")
    return Path(next(iter(spec.submodule_search_locations)))


def split_spec(spec: str) -> tuple[str, str]:
    """``(path or name, argument)`` of ``path.py[:arg]`` or ``name[:arg]`` (argument ``""`` when
    none)."""
    if ".py:" in spec:
        path, _, arg = spec.partition(".py:")
        return path + ".py", arg
    if spec.endswith(".py"):
        return spec, ""
    name, _, arg = spec.partition(":")
    return name, arg


def resolve(spec: str) -> str:
    """``spec`` as ``path.py[:arg]`` with the path of an existing file; one line naming the
    installed recipes when it names neither a file nor one of them."""
    where, arg = split_spec(spec)
    suffix = f":{arg}" if arg else ""
    if where.endswith(".py"):
        if Path(where).is_file():
            return spec
        raise UserError(f"config file not found: {where}{_installed_hint(arg)}")
    if Path(where + ".py").is_file():
        return f"{where}.py{suffix}"
    if "/" not in where and (installed_dir() / f"{where}.py").is_file():
        return f"{installed_dir() / where}.py{suffix}"
    raise UserError(f"--config={spec}: no recipe named {where!r} and no file {where}.py"
                    f"{_installed_hint(arg)}")


def _installed_hint(arg: str) -> str:
    example = f"pretrain:{arg or '<point>'}"
    return (f" (the installed recipes, usable from any directory: {', '.join(RECIPES)}, e.g. "
            f"--config={example}; they live in {installed_dir()})")


def resolve_args(argv: list[str], flag: str = "config") -> list[str]:
    """``argv`` with each ``--<flag>=SPEC`` / ``--<flag> SPEC`` resolved by :func:`resolve` (the
    fields ``--<flag>.<field>`` untouched; nothing after ``--``)."""
    out, i = [], 0
    end = argv.index("--") if "--" in argv else len(argv)
    while i < end:
        arg = argv[i]
        for prefix in (f"--{flag}=", f"-{flag}="):
            if arg.startswith(prefix):
                arg = prefix + resolve(arg[len(prefix):])
        if arg in (f"--{flag}", f"-{flag}") and i + 1 < end:
            out += [arg, resolve(argv[i + 1])]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out + argv[end:]


def load_config_file(spec: str) -> "ml_collections.ConfigDict":
    """Load ``path.py[:arg]`` or an installed recipe ``name[:arg]`` (see the module doc)
    the way ``config_flags`` does (``get_config(arg)``)."""
    path, arg = split_spec(resolve(spec))
    module_spec = importlib.util.spec_from_file_location("_minilm_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        return module.get_config(arg) if arg else module.get_config()
    except (ValueError, KeyError) as err:  # an unknown name: the config file's own message
        raise UserError(f"--config={spec}: {err.args[0] if err.args else err}") from err


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
