"""What ``--help`` prints for the absl commands (``minilm-pretrain``, ``minilm-sweep``, ...), and
``--print_config``.

absl's own ``--help`` lists the key flags of the ``__main__`` module, which under a console script
is the installed wrapper: it printed only a usage line. Here the help is the command's module
docstring, then its own flags with their defaults, then (for a ``--config`` command) how to pick a
recipe and the recipe's fields; absl's flags stay behind ``--helpfull``.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from minilm_jax.settings import recipes

HELP_FLAGS = frozenset({"-h", "--help", "--helpshort", "-?"})
PRINT_CONFIG = "--print_config"
WIDTH = 100


def _own_flags(module_names: set[str]) -> list[Any]:
    """The flags the command's modules define (absl's, and other libraries', left out)."""
    from absl import flags

    seen, out = set(), []
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module in module_names or module.startswith("minilm_jax"):
            for flag in module_flags:
                if flag.name not in seen and "." not in flag.name:
                    seen.add(flag.name)
                    out.append(flag)
    return out


def _flag_line(flag: Any) -> str:
    default = flag.default
    shown = "" if default in (None, "", False) else f" (default: {flag.default_as_str})"
    if flag.name == "config":
        shown = ""
    text = f"--{flag.name}: {flag.help}{shown}"
    return textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="      ")


def _recipe_fields(spec: str) -> list[str]:
    """One wrapped line per section of the recipe ``spec``: its fields."""
    from minilm_jax.settings.recipes import load_config_file
    from minilm_jax.settings.command_line import flatten

    try:
        config = load_config_file(spec)
    except Exception:  # noqa: BLE001 -- a recipe that cannot load is reported when the command runs
        return []
    sections: dict[str, list[str]] = {}
    for field in flatten(config):
        head, _, rest = field.partition(".")
        sections.setdefault(head if rest else "", []).append(rest or head)
    lines = []
    for head, names in sorted(sections.items(), key=lambda item: item[0] != ""):
        label = f"{head}." if head else "(top level)"
        lines.append(textwrap.fill(f"{label} {', '.join(names)}", WIDTH, initial_indent="  ",
                                   subsequent_indent="      "))
    return lines


def _config_spec(argv: list[str], default: str) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return default


def command_help(main: Callable, argv: list[str], recipe: str | None) -> str:
    """The help of the command whose ``main`` is given (``recipe``: its default ``--config``)."""
    from absl import flags

    module = sys.modules.get(main.__module__)
    doc = inspect.cleandoc(getattr(module, "__doc__", None) or "")
    parts = [doc, "", "flags:"]
    # absl names the __main__ module by its path (sys.argv[0])
    parts += [_flag_line(flag) for flag in _own_flags({main.__module__, "__main__", sys.argv[0]})]
    if "config" in flags.FLAGS:
        parts += [
            textwrap.fill(f"{PRINT_CONFIG}: print the resolved config (recipe and overrides), "
                          "one field per line, and exit without running", WIDTH,
                          initial_indent="  ", subsequent_indent="      "), "",
            "recipes:",
            textwrap.fill(
                f"--config=NAME[:ARG] picks an installed recipe ({', '.join(recipes.RECIPES)}; "
                f"from any directory), --config=PATH.py[:ARG] a file of your own; "
                "--config.<field>=<value> overrides one field (repeat it: the last one wins).",
                WIDTH, initial_indent="  ", subsequent_indent="  "),
            f"  installed in {recipes.installed_dir()}"]
        spec = _config_spec(argv, recipe or "")
        fields = _recipe_fields(spec) if spec else []
        if fields:
            parts += ["", f"fields of --config={spec} (see {PRINT_CONFIG} for their values):",
                      *fields]
    parts += ["", "absl's own flags (--verbosity, --flagfile, ...): --helpfull"]
    return "\n".join(parts).strip() + "\n"


def config_lines(config: Any, argv: Sequence[str] = ()) -> str:
    """``field = value`` per line (JSON values), in the config's order. A fine-tuning config with
    ``init.checkpoint`` shows the checkpoint's model fields (what the run will build), except those
    given on the command line (``argv``), which override the checkpoint's."""
    from minilm_jax.settings.command_line import flatten

    flat = flatten(config)
    note = ""
    checkpoint = flat.get("init.checkpoint")
    saved_path = Path(str(checkpoint)) / "config.json" if checkpoint else None
    if saved_path is not None and "://" not in str(checkpoint) and saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError):
            saved = {}
        given = {a.split("=", 1)[0][len("--config."):] for a in argv
                 if a.startswith("--config.model.")}
        taken = {k: v for k, v in saved.items()
                 if k.startswith("model.") and k in flat and k not in given}
        if taken:
            flat.update(taken)
            note = (f"# model.* from the checkpoint {saved_path} (init.checkpoint); a "
                    "--config.model.<field> given here overrides it\n")
    return note + "".join(f"{field} = {json.dumps(value, default=str)}\n"
                          for field, value in flat.items())
