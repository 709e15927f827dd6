"""The jitted programs this process has built, by what they were built from, so runs of one shape
share them: ``jax.jit`` caches its traces and executables per function object, and a run that
builds its functions afresh traces, lowers and compiles them again even when an earlier run in the
process built the very same program (a run resumed in the process that stopped it, a sweep's units
of one shape, the seeds of a fine-tuning)."""

from __future__ import annotations

import collections
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")


class BuiltPrograms:
    """The last ``keep`` values built by :meth:`get`, most recently used last."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._built: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value built for ``key``: built now by ``build()`` if this process has not kept one
        (``key`` must hold everything the value is built from)."""
        if key not in self._built:
            self._built[key] = build()
            while len(self._built) > self.keep:
                self._built.popitem(last=False)
        self._built.move_to_end(key)
        return self._built[key]

    def clear(self) -> None:
        """Forget every kept value (the next :meth:`get` of any key builds)."""
        self._built.clear()
