"""The bottom of the package: the error every layer's user-facing errors derive from.

A :class:`UserError` is a problem with the user's input or environment (a missing file, a bad
config value, malformed data), not a bug: entry points print it as one ``error: ...`` line and
exit non-zero. Each layer subclasses it (``ConfigError``, ``ShardError``, ``CorpusError``,
``TokenizerError``, ``TaskDataError``, ...) so that no layer imports an error from a layer above.
"""

from __future__ import annotations


class UserError(RuntimeError):
    """A problem with the user's input (not a bug): reported as one line with a non-zero exit."""
