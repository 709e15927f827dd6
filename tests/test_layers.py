"""The package's layering: no module imports from a layer above its own.

0 errors, storage (and exclusive files), text normalisation -> 1 model, data, corpus, tasks, tokenizer, the recipes (configs/)
-> 2 the engine (train, finetune, runs) -> 3 evaluations (evals: minimal pairs) -> 4 studies (analysis,
sweeps, report, committee, latency, interop, compile checks, benches) -> 5 entry points
(``__main__`` modules and commands).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "minilm_jax"
CONFIGS = REPO / "configs"  # the package minilm_jax.configs (pyproject.toml maps it)

LAYERS = {  # module or package prefix -> layer; the longest matching prefix decides
    "minilm_jax.errors": 0, "minilm_jax.storage": 0, "minilm_jax.exclusive_files": 0,
    "minilm_jax.held_folders": 0,  # the roots a command holds while it writes under them
    "minilm_jax.text_norm": 0, "minilm_jax.deferred_import": 0,
    "minilm_jax.model": 1,
    "minilm_jax.settings": 1, "minilm_jax.run_identity": 1, "minilm_jax.tokenizer": 1, "minilm_jax.data": 1,
    "minilm_jax.corpus": 1, "minilm_jax.tasks": 1, "minilm_jax.cli": 1,
    "minilm_jax.command_help": 1,  # command-line plumbing, beside cli
    "minilm_jax.configs": 1,  # the recipes (configs/, installed as minilm_jax.configs)
    "minilm_jax.train": 2, "minilm_jax.finetune": 2,
    "minilm_jax.runs": 2,  # reading runs (what fine-tuning, evals, export, latency start from)
    "minilm_jax.evals": 3,  # evaluations of trained models (minimal pairs): above the engine
    "minilm_jax.analysis": 4, "minilm_jax.sweep": 4, "minilm_jax.report": 4,
    "minilm_jax.committee": 4, "minilm_jax.latency": 4,
    "minilm_jax.interop": 1,  # the RoBERTa mapping and tokenizer files: beside the model
    "minilm_jax.interop.workdir": 4,  # exporting a trained workdir
    "minilm_jax.aot": 4, "minilm_jax.bench": 4, "minilm_jax.hlo_kernels": 4, "minilm_jax.xent_bench": 4,
    "minilm_jax.bench_steps": 4,  # what the bench command measures
    "minilm_jax.kernel_profile": 4,
    "minilm_jax.gpu_targets": 4,  # compile-only GPU devices (aot --target=cuda:<card>)
    "minilm_jax.device_check": 4,
    "minilm_jax.pretrain": 5, "minilm_jax.points": 5, "minilm_jax.own_data_estimate": 5,
    "minilm_jax.report.study_b": 5,  # the study B report command
}
ENTRY = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "configs":
        parts.insert(0, "minilm_jax")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    if module.endswith(".__main__"):
        return ENTRY
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len,
               default=None)
    if best is None:
        raise KeyError(f"{module} has no layer: add it to LAYERS in tests/test_layers.py")
    return LAYERS[best]


def imports_of(path: Path, module: str) -> set[str]:
    """Project modules imported by ``path`` (absolute and relative imports, at any depth)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # ``from minilm_jax.model import accounting``: a module
                candidate = f"{target}.{alias.name}"
                if (REPO / (candidate.replace(".", "/") + ".py")).exists() or \
                        (REPO / candidate.replace(".", "/")).is_dir():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "minilm_jax" or m.startswith("minilm_jax.")}


MODULES = sorted((module_name(p), p) for p in [*PACKAGE.rglob("*.py"), *CONFIGS.glob("*.py")])


def test_every_module_has_a_layer():
    for module, _ in MODULES:
        if module != "minilm_jax":
            layer_of(module)


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_module_imports_from_a_layer_above(module, path):
    if module == "minilm_jax":
        return
    own = layer_of(module)
    upward = sorted(f"{t} (layer {layer_of(t)})" for t in imports_of(path, module)
                    if t != "minilm_jax" and layer_of(t) > own)
    assert not upward, f"{module} (layer {own}) imports from above: {', '.join(upward)}"


def defines_flags(path: Path) -> bool:
    """Whether importing ``path`` defines absl flags (a command module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # module level only: a flag defined inside main() is not imported
        for call in ast.walk(node) if isinstance(node, (ast.Assign, ast.Expr)) else ():
            if isinstance(call, ast.Call):
                name = getattr(call.func, "attr", getattr(call.func, "id", ""))
                if name.startswith("DEFINE_") or name == "define_run_flags":
                    return True
    return False


def test_tests_import_at_most_one_command_module():
    """Two command modules in one pytest process define the same absl flag (``--config``) and the
    second import fails with DuplicateFlagError, whichever test happens to run second."""
    commands = {m for m, p in MODULES if defines_flags(p)}
    assert {"minilm_jax.pretrain", "minilm_jax.aot"} <= commands  # the scan sees them
    imported = {}
    for test in sorted((REPO / "tests").glob("*.py")):
        for target in imports_of(test, "tests." + test.stem) & commands:
            imported.setdefault(target, []).append(test.name)
    assert len(imported) <= 1, f"tests import several command modules: {imported}; import the " \
        "library function from a module without flags, or run the command in a subprocess"


def test_no_import_circles():
    """No two modules import each other, directly or through others (an import inside a function
    counts: it is a dependency all the same)."""
    known = {m for m, _ in MODULES}
    graph = {m: {t for t in imports_of(p, m) if t in known and t != m} for m, p in MODULES}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"
