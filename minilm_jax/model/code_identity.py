"""The code of a user's encoder as part of a run's identity: the source files of the user modules
its model is built from, by sha256. Which modules: those defining the class ``model.arch`` names
and its bases, every class of the built module tree (a ``layer_class``, ``feed_forward_class`` or
block defined in another module), the classes the encoder names as hooks, and, transitively, every
module those modules import that lies outside this library, the standard library and installed
packages (a helper module beside the variant). A run records them (``model_code`` in
``config.json``); resuming it, or reading its checkpoint, with any of them changed is refused
naming the file, unless ``MINILM_ACCEPT_CODE_CHANGE=1`` (then the change is recorded and printed,
and every output made under it says so). The library's own encoders are the library version's: a
registered built-in name records nothing."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Iterator

from minilm_jax.errors import UserError
from minilm_jax.model.registry import encoder_factory, installed_roots, is_library_encoder

ACCEPT_ENV = "MINILM_ACCEPT_CODE_CHANGE"
LIBRARIES = ("minilm_jax", "flax", "jax", "jaxlib", "builtins", "abc", "typing", "numpy",
             "optax", "chex")


def _user_file(name: str) -> str | None:
    """The source file of module ``name`` when it is the user's (see the module docstring)."""
    if not name or name.split(".")[0] in LIBRARIES or name in sys.builtin_module_names:
        return None
    module = sys.modules.get(name)
    path = None
    try:
        if module is not None:
            path = inspect.getsourcefile(module)
        else:
            spec = importlib.util.find_spec(name)
            path = spec.origin if spec is not None else None
    except (TypeError, ValueError, ImportError):  # a built-in, a namespace, an unfindable name
        return None
    if not path or not path.endswith(".py") or not os.path.isfile(path):
        return None
    real = os.path.realpath(path)
    if real.startswith(installed_roots()):
        return None
    return path


def _imported(name: str, path: str) -> Iterator[str]:
    """The modules ``path`` (module ``name``) imports, at any depth of its code."""
    try:
        with open(path, "rb") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return
    package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target:
                yield target
                for alias in node.names:  # ``from pkg import module``
                    yield f"{target}.{alias.name}"


def _classes(arch: str, cfg: Any = None) -> list[type]:
    """The classes the encoder ``arch`` is made of: its factory's MRO, the classes its classes
    name as attributes (hooks: ``layer_class``, ``attention_class``, ...), and, given ``cfg``,
    the type of every module of the encoder it builds (abstractly: nothing is initialised)."""
    factory = encoder_factory(arch)
    found: list[type] = []
    todo: list[Any] = [factory]
    if cfg is not None and isinstance(factory, type):
        from flax import nnx

        from minilm_jax.model.registry import build_encoder

        try:
            encoder = nnx.eval_shape(lambda: build_encoder(cfg, nnx.Rngs(params=0)))
            todo += [type(module) for _, module in nnx.iter_modules(encoder)]
        except Exception:  # an encoder that does not build: refused where it is built
            pass
    while todo:
        item = todo.pop()
        classes = item.__mro__ if isinstance(item, type) else (item,)
        for cls in classes:
            if cls in found or not hasattr(cls, "__module__"):
                continue
            found.append(cls)
            if isinstance(cls, type):
                todo += [v for v in vars(cls).values() if isinstance(v, type) and v not in found]
    return found


def arch_code(arch: str, cfg: Any = None) -> dict[str, dict[str, str]]:
    """``{module: {"file", "sha256"}}`` of the user modules the encoder ``arch`` (built from
    ``cfg`` when given) is made of, with every user module they import, transitively (empty for
    the library's encoders)."""
    if is_library_encoder(arch):
        return {}
    todo = [getattr(cls, "__module__", "") or "" for cls in _classes(arch, cfg)]
    out: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = _user_file(name)
        if path is None:
            continue
        with open(path, "rb") as handle:
            out[name] = {"file": path, "sha256": hashlib.sha256(handle.read()).hexdigest()}
        todo += [m for m in _imported(name, path) if m not in seen]
    return dict(sorted(out.items()))


def code_changes(recorded: dict[str, Any] | None, current: dict[str, dict[str, str]]
                 ) -> list[str]:
    """``module (file): sha256 a -> b`` for each recorded module whose source differs now (or is
    gone)."""
    changes = []
    for name, then in (recorded or {}).items():
        now = current.get(name)
        if now is None or now["sha256"] != then.get("sha256"):
            changes.append(f"{name} ({then.get('file', '?')}): sha256 {then.get('sha256', '?')[:12]}"
                           f" -> {now['sha256'][:12] if now else 'gone'}")
    return changes


def accepted() -> bool:
    return os.environ.get(ACCEPT_ENV, "") not in ("", "0")


def check_code(recorded: dict[str, Any] | None, arch: str, where: str, cfg: Any = None
               ) -> list[str]:
    """Refuse (one line naming the files) the encoder code of ``arch`` when it differs from what
    ``where`` recorded, unless accepted (:data:`ACCEPT_ENV`): then the changes, printed once."""
    if not recorded:  # a built-in encoder, or a run recorded before code was: nothing to hold
        return []
    changes = code_changes(recorded, arch_code(arch, cfg))
    if changes and not accepted():
        raise UserError(f"the code of model.arch={arch} changed since {where} was recorded: "
                        f"{'; '.join(changes)}; restore it, use a new workdir, or set "
                        f"{ACCEPT_ENV}=1 to go on with the new code (recorded)")
    if changes:
        print(f"warning: {ACCEPT_ENV}=1: {where} goes on with changed encoder code: "
              f"{'; '.join(changes)}", flush=True)
    return changes
