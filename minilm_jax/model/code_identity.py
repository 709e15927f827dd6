"""The code of a user's encoder as part of a run's identity: the source files of the modules that
define the class ``model.arch`` names (its own module and every base class's, outside this
library and its dependencies), by sha256. A run records them (``model_code`` in ``config.json``);
resuming it, or reading its checkpoint, with any of them changed is refused naming the file, unless
``MINILM_ACCEPT_CODE_CHANGE=1`` (then the change is recorded and printed). The library's own
encoders are the library version's: a registered built-in name records nothing."""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from typing import Any

from minilm_jax.errors import UserError
from minilm_jax.model.registry import encoder_factory

ACCEPT_ENV = "MINILM_ACCEPT_CODE_CHANGE"
LIBRARIES = ("minilm_jax", "flax", "jax", "builtins", "abc", "typing")


def arch_code(arch: str) -> dict[str, dict[str, str]]:
    """``{module: {"file", "sha256"}}`` of the user modules defining the encoder ``arch`` names
    (empty for the library's encoders)."""
    factory = encoder_factory(arch)
    classes = factory.__mro__ if isinstance(factory, type) else (factory,)
    out: dict[str, dict[str, str]] = {}
    for cls in classes:
        name = getattr(cls, "__module__", "") or ""
        if not name or name.split(".")[0] in LIBRARIES or name in out:
            continue
        module = sys.modules.get(name)
        try:
            path = inspect.getsourcefile(module) if module else None
        except TypeError:  # a built-in or C module
            path = None
        if path and os.path.isfile(path):
            with open(path, "rb") as handle:
                out[name] = {"file": path, "sha256": hashlib.sha256(handle.read()).hexdigest()}
    return out


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


def check_code(recorded: dict[str, Any] | None, arch: str, where: str) -> list[str]:
    """Refuse (one line naming the files) the encoder code of ``arch`` when it differs from what
    ``where`` recorded, unless accepted (:data:`ACCEPT_ENV`): then the changes, printed once."""
    if not recorded:  # a built-in encoder, or a run recorded before code was: nothing to hold
        return []
    changes = code_changes(recorded, arch_code(arch))
    if changes and not accepted():
        raise UserError(f"the code of model.arch={arch} changed since {where} was recorded: "
                        f"{'; '.join(changes)}; restore it, use a new workdir, or set "
                        f"{ACCEPT_ENV}=1 to go on with the new code (recorded)")
    if changes:
        print(f"warning: {ACCEPT_ENV}=1: {where} goes on with changed encoder code: "
              f"{'; '.join(changes)}", flush=True)
    return changes
