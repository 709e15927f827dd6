"""The README and docs/ stay true: every command they name exists, every flag they give a command is
one of its flags, every ``--config.`` field is a field of a recipe, every named recipe, launcher,
file and relative link exists, and every environment knob given to a launcher is one it reads."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from conftest import REPO
from minilm_jax import cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"(?:python -m (minilm_jax(?:\.\w+)+)|\b(minilm-(?!jax\b)[a-z][\w-]*))"
                     r"((?:\s+[^|;&<>`]*)?)")
FLAG = re.compile(r"(?<![\w-])--([a-z][\w-]*)")
ABSL_OWN = {"help", "helpfull", "helpshort", "helpxml", "verbosity", "flagfile", "logtostderr",
            "alsologtostderr", "log_dir", "v", "undefok"}


def code_lines(path: Path) -> list[str]:
    """The lines of a page's code blocks and inline code spans, continuations joined."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```[\w-]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```[\w-]*\n.*?```", "", text, flags=re.S)
    lines = []
    for block in blocks:
        lines += block.replace("\\\n", " ").splitlines()
    return lines + re.findall(r"`([^`\n]+)`", rest)


def named_commands() -> list[tuple[str, str, str]]:
    """(page, tool module or script, the rest of its command line) for every command named."""
    found = []
    for page in DOCS:
        for line in code_lines(page):
            for module, script, rest in COMMAND.findall(line):
                found.append((page.name, module or script, rest))
    return found


@cache
def scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def module_of(tool: str) -> str:
    """The module a command runs (a package's ``__main__``)."""
    if tool.startswith("minilm-"):
        return scripts()[tool].split(":")[0]
    spec = importlib.util.find_spec(tool)
    return f"{tool}.__main__" if spec.submodule_search_locations else tool


def _argparse_options(module: str) -> set[str]:
    """Every option of an argparse tool (and of its sub-commands), read from its parsers."""
    parsers: list[argparse.ArgumentParser] = []
    init = cli._ToolParser.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        parsers.append(self)

    cli._ToolParser.__init__ = recording_init
    try:
        try:
            importlib.import_module(module).main(["--help"])
        except SystemExit:
            pass
    finally:
        cli._ToolParser.__init__ = init
    options = {s.lstrip("-") for p in parsers for a in p._actions for s in a.option_strings}
    for p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                options |= {f"<sub>{name}" for name in action.choices}
    return options


def _absl_options(module: str) -> set[str]:
    """Every flag an absl command's ``--help`` lists (in a fresh interpreter: absl flags are
    global to a process)."""
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(re.findall(r"^\s+--(?:\[no\])?([a-z][\w-]*)", proc.stdout, re.M))


@cache
def tool_options() -> dict[str, set[str]]:
    modules = sorted({module_of(tool) for _, tool, _ in named_commands()
                      if tool.startswith("minilm_jax") or tool in scripts()})
    argparse_tools = [m for m in modules if "run_tool(main)" in _source(m)]
    absl_tools = [m for m in modules if m not in argparse_tools]
    with ThreadPoolExecutor(4) as pool:
        absl = dict(zip(absl_tools, pool.map(_absl_options, absl_tools)))
    return {**absl, **{m: _argparse_options(m) for m in argparse_tools}}


def _source(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")


@cache
def recipe_fields() -> set[str]:
    """Every field of every installed recipe (pretrain, finetune, sweep, ...), dotted."""
    fields: set[str] = set()

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            fields.add(name)
            if hasattr(value, "items"):
                walk(name + ".", value)

    for path in sorted((REPO / "configs").glob("*.py")):
        module = importlib.import_module(f"minilm_jax.configs.{path.stem}")
        if hasattr(module, "get_config"):
            try:
                walk("", module.get_config())
            except TypeError:  # a recipe that needs its name: its default one
                walk("", module.get_config(None))
    # fields only some tasks have (a labelled file's cross-validation)
    walk("", importlib.import_module("minilm_jax.configs.finetune").get_config("table"))
    return fields


def test_every_command_named_exists():
    missing = []
    for page, tool, _ in named_commands():
        if tool.startswith("minilm-"):
            if tool not in scripts():
                missing.append(f"{page}: {tool} (no such console script in pyproject.toml)")
        elif importlib.util.find_spec(tool) is None:
            missing.append(f"{page}: python -m {tool} (no such module)")
    assert not missing, "\n".join(missing)
    assert len({tool for _, tool, _ in named_commands()}) >= 20  # the pages were read


def test_every_flag_named_is_a_flag_of_its_command():
    options, wrong = tool_options(), []
    for page, tool, rest in named_commands():
        known = options[module_of(tool)]
        words = rest.split()
        subs = {o[5:] for o in known if o.startswith("<sub>")}
        if subs and words and not words[0].startswith("-") and words[0] not in subs \
                and re.fullmatch(r"[a-z_]+", words[0]):
            wrong.append(f"{page}: {tool} {words[0]} (sub-commands: {', '.join(sorted(subs))})")
        for flag in FLAG.findall(rest):
            name = flag.split("=")[0]
            if name.startswith("config.") or name in ABSL_OWN:
                continue
            if name not in known:
                wrong.append(f"{page}: {tool} --{name}")
    assert not wrong, "flags the docs give that the commands do not have:\n" + "\n".join(wrong)


def test_every_config_field_named_is_a_recipe_field():
    fields, wrong = recipe_fields(), []
    for page in DOCS:
        for line in code_lines(page):
            for field in re.findall(r"--config\.([\w.]+)", line):
                if field.startswith("model.extra."):  # a variant's own field, not a recipe's
                    continue
                if field.rstrip(".") not in fields:
                    wrong.append(f"{page.name}: --config.{field}")
    assert not wrong, "fields no recipe has:\n" + "\n".join(wrong)


def test_every_recipe_launcher_file_and_link_named_exists():
    missing = []
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for script in set(re.findall(r"\blaunch/[\w-]+\.sh\b", text)):
            if not (REPO / script).is_file():
                missing.append(f"{page.name}: {script}")
        for stem, name in set(re.findall(r"\bconfigs/(\w+)\.py(?::([\w.-]+))?", text)):
            if not (REPO / "configs" / f"{stem}.py").is_file():
                missing.append(f"{page.name}: configs/{stem}.py")
            elif name and not _recipe_exists(stem, name):
                missing.append(f"{page.name}: configs/{stem}.py:{name}")
        for target in re.findall(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)]*)?\)", text):
            if not (page.parent / target).exists():
                missing.append(f"{page.name}: link to {target}")
    assert not missing, "\n".join(missing)


def _recipe_exists(stem: str, name: str) -> bool:
    from minilm_jax.errors import UserError

    module = importlib.import_module(f"minilm_jax.configs.{stem}")
    if name in {"NAME", "POINT", "SIZE", "RECIPE", "TASK"}:  # a placeholder
        return True
    try:
        module.get_config(name)
    except (UserError, KeyError, ValueError):
        return False
    return True


def test_every_launcher_knob_named_is_read_by_its_launcher():
    wrong = []
    for page in DOCS:
        for line in code_lines(page):
            for knobs, script in re.findall(r"((?:\b[A-Z][A-Z0-9_]+=\S*\s+)+)bash (launch/[\w-]+\.sh)",
                                            line):
                source = _launcher_source(REPO / script)
                for knob in re.findall(r"\b([A-Z][A-Z0-9_]+)=", knobs):
                    if knob not in source and knob not in {"CI", "XLA_FLAGS", "JAX_PLATFORMS",
                                                           "CUDA_VISIBLE_DEVICES"}:
                        wrong.append(f"{page.name}: {knob}=... bash {script}")
    assert not wrong, "\n".join(wrong)


def _launcher_source(path: Path) -> str:
    """A launcher's text and that of the launchers it runs or sources."""
    text = path.read_text(encoding="utf-8")
    for other in set(re.findall(r"launch/[\w-]+\.sh", text)):
        if (REPO / other).is_file() and REPO / other != path:
            text += (REPO / other).read_text(encoding="utf-8")
    return text


@pytest.mark.parametrize("line, expected", [
    ("python -m minilm_jax.corpus shards --out x", ("minilm_jax.corpus", " shards --out x")),
    ("minilm-pretrain --config=pretrain:tiny | tee log", ("minilm-pretrain",
                                                          " --config=pretrain:tiny ")),
])
def test_the_command_pattern_reads_what_a_page_writes(line, expected):
    module, script, rest = COMMAND.findall(line)[0]
    assert (module or script, rest) == expected
