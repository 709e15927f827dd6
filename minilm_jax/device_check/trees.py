"""The two trees measured (``baseline`` and ``now``): where their files are, and how a process
runs a tree's own code (its ``PYTHONPATH`` and ``minilm_jax.configs``)."""

from __future__ import annotations

import inspect
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from minilm_jax.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = dict(os.environ)  # what every measured process gets (this one may set more)


def map_configs(tree: str) -> None:
    """Import ``minilm_jax.configs`` from ``tree``'s ``configs/`` folder, as pyproject.toml's
    ``package-dir`` maps it, ahead of an installed mapping (an editable install names one tree)."""
    import importlib.abc
    import importlib.util
    import sys

    class TreeConfigs(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "minilm_jax.configs":
                return None
            return importlib.util.spec_from_file_location(
                name, f"{tree}/configs/__init__.py", submodule_search_locations=[f"{tree}/configs"])

    sys.meta_path.insert(0, TreeConfigs())


# python -c RUNNER TREE MODULE ARGS...: TREE's MODULE run as __main__, with TREE's configs.
RUNNER = inspect.getsource(map_configs) + """
import runpy, sys
tree, module = sys.argv[1:3]
map_configs(tree)
sys.path.insert(0, tree)
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Side:
    """A tree measured: ``baseline`` or ``now``, where its files are, how the table names it, its
    commit (the one checked out, or this tree's ``HEAD``; empty where unknown)."""
    name: str
    tree: Path
    label: str
    commit: str = ""


def git(*args: str) -> subprocess.CompletedProcess:
    """``git ARGS`` in this tree, its output captured."""
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def baseline_side(commit: str, scratch: Path) -> Side:
    """The baseline's tree: ``DEVICE_CHECK_BASELINE_TREE``, or ``commit`` checked out with
    ``git worktree add`` under ``scratch``."""
    given = os.environ.get("DEVICE_CHECK_BASELINE_TREE")
    if given:
        if not (Path(given) / "minilm_jax").is_dir():
            raise UserError(f"DEVICE_CHECK_BASELINE_TREE={given}: no minilm_jax/ there")
        return Side("baseline", Path(given).resolve(), f"{commit[:12]}, files at {given}")
    if shutil.which("git") is None:
        raise UserError("git not found: the baseline is checked out with git worktree "
                        "(or set DEVICE_CHECK_BASELINE_TREE to a folder of its files)")
    if git("rev-parse", "--git-dir").returncode:
        raise UserError(f"{REPO} is not a git checkout: set DEVICE_CHECK_BASELINE_TREE to a "
                        f"folder of the baseline's files (git archive {commit[:12]} | tar -x)")
    found = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if found.returncode:
        raise UserError(f"baseline commit {commit!r} is not in this repository")
    sha, tree = found.stdout.strip(), scratch / "baseline"
    added = git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    if added.returncode:
        raise UserError(f"git worktree add {tree} {sha[:12]}: "
                        f"{(added.stderr.strip().splitlines() or ['failed'])[-1]}")
    return Side("baseline", tree, sha[:12], sha)


def now_side() -> Side:
    """This tree, labelled with its commit and how many tracked files differ from it (a baseline
    of ``HEAD`` is that commit without them)."""
    head = git("rev-parse", "HEAD") if shutil.which("git") else None
    if head is None or head.returncode:
        return Side("now", REPO, "this tree")
    changed = len(git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no"
                      ).stdout.splitlines())
    sha = head.stdout.strip()
    return Side("now", REPO, sha[:12] + (f" + {changed} changed files" if changed else ""), sha)


def side_env(side: Side, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This command's environment, the side's tree first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(side.tree), CHILD_ENV.get("PYTHONPATH")) if p)
    return {**CHILD_ENV, "PYTHONUNBUFFERED": "1", **(extra or {}), "PYTHONPATH": path}


def side_args(side: Side) -> list[str]:
    """``DEVICE_CHECK_NOW_ARGS``: bench options for this tree's runs only (one it adds, say)."""
    return shlex.split(os.environ.get("DEVICE_CHECK_NOW_ARGS", "")) if side.name == "now" else []
