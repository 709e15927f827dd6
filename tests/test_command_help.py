"""``--help`` that helps and recipes from anywhere: every tool option has help text, the absl
commands' help starts with what they do and lists their flags and recipe fields (also under a
console script), ``--print_config`` shows the resolved config, and installed recipes are found by
name from a directory outside the checkout."""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from minilm_jax import cli
from minilm_jax.settings import recipes
from minilm_jax.errors import UserError

TOOLS = ["minilm_jax.committee", "minilm_jax.corpus.bench", "minilm_jax.corpus.__main__",
         "minilm_jax.interop.__main__", "minilm_jax.tasks.bbc", "minilm_jax.finetune.bench",
         "minilm_jax.analysis.finetune_tables", "minilm_jax.bench", "minilm_jax.latency",
         "minilm_jax.evals.bench", "minilm_jax.evals.__main__", "minilm_jax.points",
         "minilm_jax.xent_bench"]
SCRIPTS = Path(sys.executable).parent


def test_the_tool_list_is_every_tool():
    """Every module that runs through ``run_tool`` is in TOOLS (a new tool gets checked too)."""
    found = set()
    for path in (REPO / "minilm_jax").rglob("*.py"):
        if "run_tool(main)" in path.read_text(encoding="utf-8"):
            found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert found == set(TOOLS)


@pytest.mark.parametrize("module", TOOLS)
def test_every_tool_option_has_help(module, monkeypatch, capsys):
    parsers = []
    init = cli._ToolParser.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        parsers.append(self)

    monkeypatch.setattr(cli._ToolParser, "__init__", recording_init)
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0
    assert parsers and capsys.readouterr().out.strip()
    missing = [f"{parser.prog}: {'/'.join(action.option_strings) or action.dest}"
               for parser in parsers for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help and action.help.strip())]
    assert not missing, f"options without help text: {missing}"
    for parser in parsers:  # a default is shown next to the help
        for action in parser._actions:
            if action.option_strings and action.default not in (None, "", False,
                                                                argparse.SUPPRESS):
                if not isinstance(action, argparse._HelpAction):
                    assert "default" in parser._get_formatter()._get_help_string(action)


def script(name: str) -> str:
    path = SCRIPTS / name
    if not path.exists():
        pytest.skip(f"{name} is not installed beside this Python (pip install -e .)")
    return str(path)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=180,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("name, module, flags, fields", [
    ("minilm-pretrain", "minilm_jax.pretrain", ["--workdir:", "--config:"], ["model.", "optim."]),
    ("minilm-sweep", "minilm_jax.sweep.__main__", ["--root:", "--dry_run:"], ["(top level) "]),
    ("minilm-report", "minilm_jax.report.__main__", ["--results:", "--bootstrap:"], []),
])
def test_console_script_help_says_what_it_does_and_lists_its_flags(name, module, flags, fields,
                                                                    tmp_path):
    proc = run([script(name), "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = REPO / (module.replace(".", "/") + ".py")  # read, not imported: absl flags are global
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))).splitlines()[0]
    assert proc.stdout.splitlines()[0] == doc
    assert "Try --helpfull" not in proc.stdout
    for flag in flags:
        assert flag in proc.stdout
    for field in fields:
        assert f"\n  {field}" in proc.stdout
    if fields:
        assert "--print_config" in proc.stdout and "installed in" in proc.stdout


def test_print_config_from_another_directory_uses_the_installed_recipe(tmp_path):
    proc = run([script("minilm-pretrain"), "--config=pretrain:paper-1.25m",
                "--config.train.num_steps=7", "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert 'point = "paper-1.25m"' in lines and "train.num_steps = 7" in lines
    assert "model.vocab_size = 19010" in lines
    assert not list(tmp_path.iterdir())  # nothing written, nothing run


def test_a_missing_recipe_file_names_the_installed_ones(tmp_path):
    proc = run([sys.executable, "-m", "minilm_jax.pretrain",
                "--config=configs/pretrain.py:paper-1.25m", f"--workdir={tmp_path / 'w'}"],
               tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: config file not found: configs/pretrain.py")
    assert "--config=pretrain:paper-1.25m" in line and str(recipes.installed_dir()) in line
    assert not (tmp_path / "w").exists()


def test_resolve_names_files_and_two_argument_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    installed = recipes.installed_dir()
    assert (installed / "pretrain.py").is_file()
    assert recipes.resolve("pretrain:tiny") == f"{installed / 'pretrain'}.py:tiny"
    assert recipes.resolve("sweep") == f"{installed / 'sweep'}.py"
    (tmp_path / "mine.py").write_text("def get_config(): ...\n")
    assert recipes.resolve("mine.py:x") == "mine.py:x"
    assert recipes.resolve("mine:x") == "mine.py:x"  # a file of that name wins over a recipe
    with pytest.raises(UserError, match="no recipe named 'pretrian'"):
        recipes.resolve("pretrian:tiny")
    argv = ["--config", "pretrain:tiny", "--config.train.num_steps=3", "--", "--config=x"]
    assert recipes.resolve_args(argv) == [
        "--config", f"{installed / 'pretrain'}.py:tiny", "--config.train.num_steps=3", "--",
        "--config=x"]
    assert recipes.load_config_file("finetune:cola").task == "cola"


def test_tools_keep_absl_info_lines_out_unless_asked(tmp_path):
    program = ("from absl import logging\nfrom minilm_jax.cli import run_tool, tool_parser\n"
               "def main(argv):\n    tool_parser(prog='probe').parse_args(argv)\n"
               "    logging.info('an INFO line'); logging.warning('a WARNING line')\n"
               "run_tool(main)\n")
    quiet = run([sys.executable, "-c", program], tmp_path)
    asked = run([sys.executable, "-c", program, "--verbosity=0"], tmp_path)
    assert quiet.returncode == asked.returncode == 0, quiet.stderr + asked.stderr
    assert "an INFO line" not in quiet.stderr and "a WARNING line" in quiet.stderr
    assert "an INFO line" in asked.stderr


def test_commands_collect_garbage_at_the_project_thresholds(tmp_path):
    """A tool (``run_tool``) and a run's entry point (``run_main``) set the collector's thresholds
    before their ``main`` runs; the process started with CPython's default (700, 10, 10)."""
    for runner in ("run_tool", "run_main"):
        program = ("import gc\nprint(gc.get_threshold())\n"
                   f"from minilm_jax.cli import {runner}\n"
                   "def main(argv):\n    print(gc.get_threshold())\n"
                   f"{runner}(main)\n")
        proc = run([sys.executable, "-c", program], tmp_path)
        assert proc.returncode == 0, proc.stderr
        before, inside = proc.stdout.splitlines()
        assert before == "(700, 10, 10)" and inside == str(cli.COLLECTOR_THRESHOLDS), runner


def test_a_missing_optional_package_is_one_line_naming_its_extra(tmp_path):
    """A command that reaches an optional package which is not installed (here: hidden from the
    import system) says which extra installs it, in one line, exit 2."""
    program = ("import sys\nsys.modules['gcsfs'] = None  # as if not installed\n"
               "from minilm_jax.cli import run_tool, tool_parser\n"
               "def main(argv):\n    tool_parser(prog='probe').parse_args(argv)\n"
               "    import gcsfs\n"
               "run_tool(main)\n")
    proc = run([sys.executable, "-c", program], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: this needs the optional package gcsfs, which is not installed: "
        "pip install 'minilm-jax[gcs]'"]
    from minilm_jax.errors import one_line
    assert one_line(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None  # a bug
