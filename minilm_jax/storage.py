"""Storage at the bottom of the package: run locations (local folders or object-store URLs such as
``gs://bucket/run``, through ``etils.epath``), atomic writes and file hashing.

Object stores have no rename and no append: whole objects are written at once (each write is
atomic there), and append-style files are rewritten whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

from etils import epath

RunPath = Union[Path, epath.Path]


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``gs://``, ``s3://``) rather than a local path."""
    return "://" in str(location)


def run_path(location: str | os.PathLike) -> RunPath:
    """A path object for ``location``: ``epath.Path`` for URLs (needs ``pip install
    minilm-jax[gcs]`` for ``gs://``), ``pathlib.Path`` otherwise."""
    return epath.Path(str(location)) if is_remote(location) else Path(location)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename (on an
    object store, ``gs://...``, one whole-object write, which is atomic there)."""
    if is_remote(path):
        remote = run_path(path)
        remote.parent.mkdir(parents=True, exist_ok=True)
        remote.write_bytes(data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
