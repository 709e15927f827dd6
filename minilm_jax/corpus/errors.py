"""The one exception type for user errors in the corpus pipeline."""

from __future__ import annotations

from minilm_jax.errors import UserError


class CorpusError(UserError):
    """A user-facing error (bad input, missing file, mismatched stage): printed as one line by the CLI."""
