"""The prerequisites, checked before anything is measured: each tree's ``configs/``, JAX's version
and backend, the ``jax.experimental.pallas`` names the kernels of both trees use, and
``python -m minilm_jax.bench`` of both trees starting with the options the check passes."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from minilm_jax.device_check.trees import REPO, RUNNER, Side, side_env
from minilm_jax.errors import UserError

PALLAS = "jax.experimental.pallas"


def kernel_files(tree: Path) -> list[Path]:
    """The modules of ``tree``'s package that import Pallas."""
    uses = re.compile(r"^\s*(?:from|import)\s+jax\.experimental"
                      r"(?:\.pallas\b|\s+import\s.*\bpallas\b)", re.M)
    return sorted(p for p in (tree / "minilm_jax").rglob("*.py") if uses.search(p.read_text()))


def pallas_names(source: str) -> dict[str, int]:
    """Every ``jax.experimental.pallas`` name (dotted, aliases resolved) a module's source imports
    or reads, with the first line naming it."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    names: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound = [(a.asname or a.name.split(".")[0],
                      a.name if a.asname else a.name.split(".")[0], a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            bound = [(a.asname or a.name, f"{node.module}.{a.name}", f"{node.module}.{a.name}")
                     for a in node.names]
        else:
            continue
        for alias, value, full in bound:
            aliases[alias] = value
            if full == PALLAS or full.startswith(PALLAS + "."):
                names.setdefault(full, node.lineno)
    for node in ast.walk(tree):
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id in aliases:
            dotted = ".".join([aliases[node.id], *parts])
            if dotted.startswith(PALLAS + "."):
                names.setdefault(dotted, node.lineno)
    return names


def pallas_problem(dotted: str) -> str | None:
    """Why this JAX cannot give ``dotted`` (a ``jax.experimental.pallas`` name): ``missing``, or
    ``deprecated (...)`` (reached through a deprecation: gone in a later release); None if fine."""
    import importlib
    import warnings

    try:
        path, value = PALLAS, importlib.import_module(PALLAS)
    except Exception as err:
        return f"cannot import {PALLAS}: {err}"
    for part in dotted[len(PALLAS) + 1:].split(".") if dotted != PALLAS else []:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = getattr(value, part)
            except AttributeError:
                try:
                    value = importlib.import_module(f"{path}.{part}")
                except Exception:
                    return "missing"
        deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        if deprecated:
            return f"deprecated ({str(deprecated[0].message).split('. ')[0]})"
        path = f"{path}.{part}"
    return None


def probe(files: list[str]) -> dict[str, Any]:
    """This process's JAX (version, backend, first device) and what its Pallas lacks of the names
    ``files`` use (``file:line name: why``); run in a process of its own, so that the command's
    own process never holds the accelerator."""
    import jax

    lacking = [f"{file}:{line} {dotted}: {why}" for file in files
               for dotted, line in pallas_names(Path(file).read_text()).items()
               if (why := pallas_problem(dotted))]
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "pallas_lacks": lacking}


def jax_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lowest, first unsupported) jax version in pyproject.toml's dependencies."""
    spec = re.search(r'"jax>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text())
    return (tuple(map(int, spec[1].split("."))), tuple(map(int, spec[2].split(".")))) if spec \
        else ((0,), (999,))


def check_prerequisites(base: Side, now: Side, quick: bool, options: list[str],
                        now_options: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Raise a :class:`UserError` (one line) for the first prerequisite that fails; return the
    probe of this tree's JAX. ``options``: what both trees' bench must offer (``now_options``:
    this tree's too). The three processes (JAX, each tree's bench) run side by side."""
    for side in (base, now):
        for name in ("__init__.py", "pretrain.py", "sweep.py"):
            if not (side.tree / "configs" / name).is_file():
                raise UserError(f"the {side.name} tree ({side.label}) has no configs/{name}")
    files = [str(f) for side in (base, now) for f in kernel_files(side.tree)]
    commands = {"jax": (now, ["minilm_jax.device_check", "--probe", *files])} | {
        side.name: (side, ["minilm_jax.bench", "--help"]) for side in (base, now)}
    jobs = {name: subprocess.Popen([sys.executable, "-c", RUNNER, str(side.tree), *args],
                                   cwd=side.tree, env=side_env(side), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for name, (side, args) in commands.items()}
    try:
        done = {name: (*job.communicate(timeout=600), job.returncode) for name, job in jobs.items()}
    except subprocess.TimeoutExpired as err:
        raise UserError(f"python -m {err.cmd[4]} in {err.cmd[3]} did not finish in 600 s") from err
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
    for side in (base, now):
        out, err, code = done[side.name]
        if code:
            raise UserError(f"python -m minilm_jax.bench of the {side.name} tree ({side.label}) "
                            f"does not start: {(err.strip().splitlines() or [f'exit {code}'])[-1]}")
        wanted = [*options, *(now_options if side is now else ())]
        lacking = [o for o in wanted if not re.search(re.escape(o) + r"(?![\w-])", out)]
        if lacking:
            raise UserError(f"python -m minilm_jax.bench of the {side.name} tree ({side.label}) "
                            f"lacks {', '.join(lacking)}")
    out, err, code = done["jax"]
    if code:
        raise UserError(f"JAX does not start: {(err.strip().splitlines() or [f'exit {code}'])[-1]}")
    found = json.loads(out.strip().splitlines()[-1])
    lowest, beyond = jax_range()
    version = tuple(int(x) for x in re.findall(r"\d+", found["jax"])[:3])
    if version < lowest:
        raise UserError(f"jax {found['jax']} is older than pyproject.toml's range "
                        f"(>= {'.'.join(map(str, lowest))})")
    if version[:len(beyond)] >= beyond:
        print(f"note: jax {found['jax']} is newer than pyproject.toml's range; the Pallas and "
              f"import checks passed", file=sys.stderr)
    if found["backend"] != "gpu" and not quick:
        raise UserError(f"jax {found['jax']} runs on {found['backend']} ({found['device']}) here, "
                        f"not a GPU (DEVICE_CHECK_QUICK=1 runs the CPU smoke mode)")
    lacks = [p.replace(f"{side.tree}/", f"{side.name}:") for p in found["pallas_lacks"]
             for side in (base, now) if p.startswith(f"{side.tree}/")]
    # A deprecated name still works on this JAX: a note on the GPU, an error in the CPU check
    # that runs before it (the next JAX removes the name).
    fatal = [p for p in lacks if quick or p.endswith(": missing")]
    if fatal:
        raise UserError(f"jax {found['jax']}'s Pallas lacks what the kernels use: "
                        + "; ".join(fatal))
    for line in lacks:
        print(f"note: {line}", file=sys.stderr)
    return found
