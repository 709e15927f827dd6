"""Run locations: local folders or object-store URLs (``gs://bucket/run``) through ``etils.epath``.

Object stores have no rename and no append: whole objects are written at once (each write is
atomic there), and append-style files are rewritten whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from etils import epath

RunPath = Union[Path, epath.Path]


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``gs://``, ``s3://``) rather than a local path."""
    return "://" in str(location)


def run_path(location: str | os.PathLike) -> RunPath:
    """A path object for ``location``: ``epath.Path`` for URLs (needs ``pip install
    minilm-jax[gcs]`` for ``gs://``), ``pathlib.Path`` otherwise."""
    return epath.Path(str(location)) if is_remote(location) else Path(location)
