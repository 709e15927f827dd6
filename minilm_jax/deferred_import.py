"""Modules imported on first use: a command that never touches them (its ``--help``, an error
line, a tool that reads no checkpoint) does not pay for importing them. Orbax is ~0.25 of the
~1.4 CPU-seconds a command took to import before it ran."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class Deferred:
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"
