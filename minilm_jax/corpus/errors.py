"""The one exception type for user errors in the corpus pipeline."""

from __future__ import annotations


class CorpusError(Exception):
    """A user-facing error (bad input, missing file, mismatched stage): printed as one line by the CLI."""
