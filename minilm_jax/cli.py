"""Command-line plumbing shared by the entry points: absl + ml-collections ``config_flags`` with
override checking, and one-line errors with a non-zero exit for user mistakes."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Sequence

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.run_config import flatten

# Every layer's user-facing error derives from UserError (minilm_jax.errors).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Load ``path.py[:arg]`` the way ``config_flags`` does (``get_config(arg)``)."""
    path, _, arg = spec.partition(".py:")
    path = path if path.endswith(".py") else path + ".py"
    if not Path(path).is_file():
        raise UserError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("_minilm_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def check_overrides(argv: Sequence[str], flag: str = "config") -> None:
    """Fail with one message naming an unknown ``--config.<field>`` and listing valid ones."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    if spec is None:
        return
    config = load_config_file(spec)
    valid = set(flatten(config))
    prefix = f"--{flag}."
    for arg in argv:
        if not arg.startswith(prefix):
            continue
        field = arg[len(prefix):].split("=", 1)[0]
        if field in valid or any(v.startswith(field + ".") for v in valid):
            continue
        parent = field.rsplit(".", 1)[0] + "." if "." in field else ""
        siblings = sorted(v for v in valid if v.startswith(parent) and "." not in v[len(parent):])
        close = difflib.get_close_matches(field, sorted(valid), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown config field '{field}'{hint}; valid fields"
                        f"{' under ' + parent[:-1] if parent else ''}: {', '.join(siblings)}")


def define_run_flags(what: str, spec: str) -> Callable[[], tuple[ml_collections.ConfigDict, str]]:
    """Define ``--config`` (a config file, ``spec``) and ``--workdir`` for a run's entry point.

    Returns a function that gives (config, workdir) inside ``main``, or raises a UserError naming
    both flags when either is missing.
    """
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, f"{what} config: {spec}")
    workdir = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, summary)")

    def values() -> tuple[ml_collections.ConfigDict, str]:
        if config.value is None or not workdir.value:
            raise UserError(f"both --config={spec} and --workdir=DIR are required")
        return config.value, workdir.value

    return values


def run_main(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with override checking and one-line user errors."""
    from absl import app

    try:
        check_overrides(sys.argv[1:])
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    def guarded(argv: list[str]) -> None:
        from absl import flags, logging

        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
        try:
            main(argv)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
