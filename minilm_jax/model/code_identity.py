"""The code of a user's encoder as part of a run's identity: the source files of the user modules
its model is built from, by sha256. Which modules: those defining the class ``model.arch`` names
and its bases, every class of the built module tree (a ``layer_class``, ``feed_forward_class`` or
block defined in another module), the classes the encoder names as hooks, every user module
loaded while the encoder is built and traced (a module imported inside a layer's ``__call__``,
``importlib.import_module("mypkg.dynhelper")`` included: what was loaded, not only what import
statements name), and, transitively, every module those modules import; "user module": one
outside this library, the standard library and installed packages (a helper module beside the
variant). The PyTorch twin the encoder declares (``torch_twin``, for Hugging Face export) is
recorded too, under ``torch_twin:<name>``. A run records them (``model_code`` in
``config.json``); resuming it, or reading its checkpoint, with any of them changed is refused
naming the file now imported (a module shadowed by another file earlier on ``PYTHONPATH`` is
named by that file), unless ``MINILM_ACCEPT_CODE_CHANGE=1`` (then the change is recorded and
printed, and every output made under it says so). The library's own encoders are the library
version's: a registered built-in name records nothing."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Iterator

from minilm_jax.errors import UserError
from minilm_jax.model.registry import encoder_factory, installed_roots, is_library_encoder

ACCEPT_ENV = "MINILM_ACCEPT_CODE_CHANGE"
TWIN_ATTRIBUTE = "torch_twin"  # a custom encoder's PyTorch file (minilm_jax.interop.hf_twin)
TWIN_PREFIX = "torch_twin:"  # its key in ``model_code``: torch_twin:<file stem>
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


@contextlib.contextmanager
def _loading() -> Iterator[set[str]]:
    """The names of the modules loaded inside the block: those new in ``sys.modules`` after it,
    and every name ``importlib.import_module`` is asked for (loaded before or not)."""
    names: set[str] = set()
    before = set(sys.modules)
    original = importlib.import_module

    def recording(name: str, package: str | None = None) -> Any:
        module = original(name, package)
        names.add(getattr(module, "__name__", name))
        return module

    importlib.import_module = recording  # type: ignore[assignment]
    try:
        yield names
    finally:
        importlib.import_module = original  # type: ignore[assignment]
        names.update(set(sys.modules) - before)


def _built_and_traced(cfg: Any) -> list[type]:
    """The type of every module of the encoder ``cfg`` builds, built and called (training and
    evaluation) abstractly: nothing is initialised or computed, only traced."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from minilm_jax.model.registry import build_encoder

    found: list[type] = []

    def trace() -> None:
        encoder = build_encoder(cfg, nnx.Rngs(params=0, dropout=1))
        found.extend(type(module) for _, module in nnx.iter_modules(encoder))
        tokens = jnp.zeros((1, int(cfg.max_len)), jnp.int32)
        segments = jnp.ones_like(tokens)
        for train in (True, False):
            try:
                encoder(tokens, segments, None, dropout_key=jax.random.key(0) if train else None,
                        train=train)
            except Exception:  # noqa: BLE001 - a call that fails here fails where it is run
                pass

    try:
        jax.eval_shape(trace)
    except Exception:  # noqa: BLE001 - an encoder that does not build: refused where it is built
        pass
    return found


# Modules found loaded while an encoder was built and traced, per ``model.arch``: a module loaded
# once is in ``sys.modules`` from then on, so a later trace in this process does not load it again.
_LOADED: dict[str, set[str]] = {}


def _classes(arch: str, cfg: Any = None) -> tuple[list[type], set[str]]:
    """The classes the encoder ``arch`` is made of: its factory's MRO, the classes its classes
    name as attributes (hooks: ``layer_class``, ``attention_class``, ...), and, given ``cfg``,
    the type of every module of the encoder it builds; with the names of the modules loaded
    while it was built and traced (:func:`_built_and_traced`)."""
    factory = encoder_factory(arch)
    found: list[type] = []
    todo: list[Any] = [factory]
    loaded = _LOADED.setdefault(arch, set())
    if cfg is not None and isinstance(factory, type):
        with _loading() as names:
            todo += _built_and_traced(cfg)
        loaded.update(names)
    while todo:
        item = todo.pop()
        classes = item.__mro__ if isinstance(item, type) else (item,)
        for cls in classes:
            if cls in found or not hasattr(cls, "__module__"):
                continue
            found.append(cls)
            if isinstance(cls, type):
                todo += [v for v in vars(cls).values() if isinstance(v, type) and v not in found]
    return found, set(loaded)


def twin_file(arch: str) -> str | None:
    """The PyTorch twin file the custom encoder ``arch`` declares (``torch_twin``: absolute, or
    relative to the file of the module whose class declares it), when it is a user's file that
    exists; None otherwise (a built-in encoder, none declared, or not found: export says why)."""
    if is_library_encoder(arch):
        return None
    factory = encoder_factory(arch)
    declared = getattr(factory, TWIN_ATTRIBUTE, None)
    if not declared or not isinstance(declared, (str, os.PathLike)):
        return None
    path = os.fspath(declared)
    if not os.path.isabs(path):
        owners = factory.__mro__ if isinstance(factory, type) else (factory,)
        owner = next((k for k in owners if TWIN_ATTRIBUTE in vars(k)), factory)
        module_file = getattr(sys.modules.get(getattr(owner, "__module__", "")), "__file__", None)
        if not module_file:
            return None
        path = os.path.join(os.path.dirname(os.path.realpath(module_file)), path)
    if not path.endswith(".py") or not os.path.isfile(path):
        return None
    if os.path.realpath(path).startswith(installed_roots()):
        return None
    return path


def _entry(path: str) -> dict[str, str]:
    with open(path, "rb") as handle:
        return {"file": path, "sha256": hashlib.sha256(handle.read()).hexdigest()}


def arch_code(arch: str, cfg: Any = None) -> dict[str, dict[str, str]]:
    """``{module: {"file", "sha256"}}`` of the user modules the encoder ``arch`` (built and
    traced from ``cfg`` when given) is made of or loads, with every user module they import,
    transitively, and its PyTorch twin (``torch_twin:<stem>``, :func:`twin_file`); empty for
    the library's encoders."""
    if is_library_encoder(arch):
        return {}
    classes, loaded = _classes(arch, cfg)
    todo = [getattr(cls, "__module__", "") or "" for cls in classes] + sorted(loaded)
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
        out[name] = _entry(path)
        parents = [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]  # run first
        todo += [m for m in (*parents, *_imported(name, path)) if m not in seen]
    twin = twin_file(arch)
    if twin is not None:
        out[TWIN_PREFIX + os.path.splitext(os.path.basename(twin))[0]] = _entry(twin)
    return dict(sorted(out.items()))


def code_changes(recorded: dict[str, Any] | None, current: dict[str, dict[str, str]]
                 ) -> list[str]:
    """``module (file): sha256 a -> b`` for each recorded module whose source differs now (or is
    gone), named by the file imported now (a module now found in another file than the recorded
    one, e.g. shadowed by a file earlier on ``PYTHONPATH``, says both)."""
    changes = []
    for name, then in (recorded or {}).items():
        now = current.get(name)
        if now is not None and now["sha256"] == then.get("sha256"):
            continue
        was = then.get("file", "?")
        if now is None:
            where = was
        elif was not in ("?", now["file"]):
            where = f"{now['file']}, imported now in place of the recorded {was}"
        else:
            where = now["file"]
        changes.append(f"{name} ({where}): sha256 {then.get('sha256', '?')[:12]}"
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
