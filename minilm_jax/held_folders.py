"""Folders a command writes under, held by their identity for as long as it runs.

A sweep worker holds its sweep root (:func:`hold`): the root's device and inode, taken when the
worker starts. Every write that could create folders (:func:`minilm_jax.storage.atomic_write_bytes`,
:func:`minilm_jax.exclusive_files.create`, a checkpoint, a metrics record) first calls
:func:`check`: a held folder that is gone (moved, renamed or deleted while the command runs, or
replaced by another folder at its path) is one :class:`FolderGone` line, and nothing is written at
the old path (no folder re-created there, no half-written checkpoint). Folders under a held one
are made by :func:`minilm_jax.storage.make_folder`, a level at a time below it and never the held
folder itself, so a move between a check and a write re-creates nothing. A location in an object
store (``gs://``) has no identity to hold: it is not checked.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from minilm_jax.errors import StorageError

_HELD: dict[str, tuple[int, int, str]] = {}  # path -> (device, inode, what it is)
_LOCK = threading.Lock()


class FolderGone(StorageError):
    """A folder this command holds was moved or deleted while it ran: it stops, writing nothing
    more there (a :class:`StorageError`: the command exits at once after its line)."""


def hold(path: str | os.PathLike, what: str) -> None:
    """Hold the existing local folder ``path`` (``what`` names it in the error line)."""
    text = str(path)
    if "://" in text:
        return
    stat = os.stat(text)
    with _LOCK:
        _HELD[os.path.abspath(text)] = (stat.st_dev, stat.st_ino, what)


def holder(path: str | os.PathLike) -> str | None:
    """The innermost held folder that ``path`` is or lies in (absolute), or None."""
    text = os.path.abspath(str(path))
    with _LOCK:
        held = [p for p in _HELD if text == p or text.startswith(p.rstrip(os.sep) + os.sep)]
    return max(held, key=len) if held else None


def release(path: str | os.PathLike) -> None:
    """Stop holding ``path``."""
    with _LOCK:
        _HELD.pop(os.path.abspath(str(path)), None)


def gone() -> str | None:
    """The error line of the first held folder that is gone, or None when every one is there."""
    with _LOCK:
        held = list(_HELD.items())
    for path, (device, inode, what) in held:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            how = "moved or deleted"
        else:
            if (stat.st_dev, stat.st_ino) == (device, inode):
                continue
            how = "moved or deleted, and another folder now stands at its path"
        return (f"{what} {path} is gone ({how} while this command ran): stopping; nothing more "
                "is written there")
    return None


@contextlib.contextmanager
def gone_if_missing() -> Iterator[None]:
    """A file or folder missing inside the block, whose held folder went away after its check,
    is that folder's :class:`FolderGone` line; any other missing path stays the error it was."""
    try:
        yield
    except FileNotFoundError:
        check()
        raise


def check() -> None:
    """Raise :class:`FolderGone` if a held folder is gone (called before each write)."""
    line = gone()
    if line is not None:
        raise FolderGone(line)
