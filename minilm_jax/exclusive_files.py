"""Small files that one process at a time may own (a sweep's claims), on a local or shared
filesystem or on Cloud Storage: create only if absent, refresh, replace or delete only if unchanged
since they were read.

- Local, NFS, Lustre, Filestore: a new file is written beside its name and hard-linked into place
  (``link`` fails when the name exists, and the file appears whole; where a filesystem has no hard
  links, an exclusive create, ``O_EXCL``, and then the write); a conditional delete (and so a
  replacement: delete, then create) looks and unlinks under the folder's ``flock`` (where the
  filesystem has none: moves the file aside, checks it, puts back one that changed). A file's
  version is the sha256 of its bytes; its age is that of its mtime.
- ``gs://``: every change is a write or delete conditioned on the object's generation
  (``ifGenerationMatch``; 0: the object must not exist), through ``google-cloud-storage`` (the
  ``gcs`` extra). A version is the generation; the age is the reader's clock minus the store's
  time of the last write. A refresh rewrites the object (a new generation).

A conditional write that is refused is read back: when the file holds our own bytes (unique to the
writer), the write went through and only its reply was lost (a retried request), so it is ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

import minilm_jax.held_folders as held_folders
from minilm_jax.storage import is_remote, make_folder

LOCK_FILE = ".exclusive.lock"


@dataclasses.dataclass(frozen=True)
class Held:
    """A file as read: its bytes, the version a conditional change compares, its age in seconds
    (the writer's clock against the reader's), and a stamp that changes whenever it is written or
    refreshed (what an observer compares over time, on its own clock)."""

    data: bytes
    version: str
    age: float
    stamp: str


def create(path: str | os.PathLike, data: bytes) -> str | None:
    """Create ``path`` holding ``data`` unless it exists: its version, or None (it exists)."""
    if is_remote(path):
        return _gcs_write(str(path), data, 0) or _ours(path, data)
    path = Path(path)
    make_folder(path.parent)  # a held root that is gone: nothing re-created at its path
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    with held_folders.gone_if_missing():
        tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    except FileExistsError:  # (or an NFS retry of a link that was made: see _ours)
        return _ours(path, data)
    except OSError:  # no hard links on this filesystem (some FUSE mounts): exclusive create
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return _ours(path, data)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def read(path: str | os.PathLike) -> Held | None:
    """``path`` with its version, age and stamp, or None when it does not exist."""
    if is_remote(path):
        blob = _gcs_blob(str(path), fetch=True)
        if blob is None:
            return None
        try:
            data = blob.download_as_bytes()  # of the generation just looked at
        except _gcs_errors().NotFound:
            return None
        return Held(data, str(blob.generation), time.time() - blob.updated.timestamp(),
                    str(blob.generation))
    try:
        data = Path(path).read_bytes()
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Held(data, hashlib.sha256(data).hexdigest(), time.time() - stat.st_mtime,
                str(stat.st_mtime_ns))


def refresh(path: str | os.PathLike, version: str) -> str | None:
    """Make ``path`` young again if it is still at ``version``: its (new) version, or None."""
    held = read(path)
    if held is None or held.version != version:
        return None
    if is_remote(path):
        return _gcs_write(str(path), held.data, int(version)) or _ours(path, held.data)
    try:
        os.utime(path)
    except FileNotFoundError:
        return None
    return version


def replace(path: str | os.PathLike, version: str, data: bytes) -> str | None:
    """Replace ``path`` with ``data`` if it is still at ``version``: the new version, or None (it
    changed or went; another process got there first)."""
    if is_remote(path):
        return _gcs_write(str(path), data, int(version)) or _ours(path, data)
    return create(path, data) if delete(path, version) else _ours(path, data)


def delete(path: str | os.PathLike, version: str) -> bool:
    """Delete ``path`` if it is still at ``version``: whether this call deleted it."""
    if is_remote(path):
        errors = _gcs_errors()
        blob = _gcs_blob(str(path), fetch=True)  # looked at first too: not every emulator
        if blob is None or str(blob.generation) != version:  # honours a delete's precondition
            return False
        try:
            blob.delete(if_generation_match=int(version))
        except (errors.NotFound, errors.PreconditionFailed):
            return False
        return True
    path = Path(path)
    with _folder_lock(path.parent) as locked:
        if locked:  # no other delete between the look and the unlink; creates need no name
            held = read(path)
            if held is None or held.version != version:
                return False
            path.unlink()
            return True
        return _delete_by_rename(path, version)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[bool]:
    """``flock`` on ``folder/.exclusive.lock`` (NFS: the server's locks) while deleting; yields
    False where the filesystem has no such locks (Lustre without ``-o flock``)."""
    try:
        handle = open(folder / LOCK_FILE, "a+b")
    except OSError:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _delete_by_rename(path: Path, version: str) -> bool:
    """Without folder locks: move the file aside (of two processes, one gets it), check it, put
    it back when it is not at ``version`` (the claim was renewed in between)."""
    held = read(path)
    if held is None or held.version != version:  # the common case, without moving anything
        return False
    aside = path.with_name(f".{path.name}.aside-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if hashlib.sha256(aside.read_bytes()).hexdigest() != version:
        try:
            os.link(aside, path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def _ours(path: str | os.PathLike, data: bytes) -> str | None:
    """After a conditional write was refused: the version of ``path`` if it holds ``data`` (our
    own bytes: the write went through and its reply was lost, then a retry found it done), else
    None."""
    held = read(path)
    return held.version if held is not None and held.data == data else None


def listing(folder: str | os.PathLike, suffix: str = ".json") -> dict[str, str]:
    """The files named ``*<suffix>`` directly in ``folder``, each with a stamp that changes when the
    file does (a change of the dict: a file was created, changed or deleted)."""
    if is_remote(folder):
        bucket, key = _gcs_split(str(folder).rstrip("/") + "/")
        blobs = _gcs_client().list_blobs(bucket, prefix=key, delimiter="/")
        return {b.name[len(key):]: f"{b.generation}" for b in blobs if b.name.endswith(suffix)}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    out = {}
    for entry in entries:
        if entry.name.endswith(suffix) and not entry.name.startswith("."):
            try:
                out[entry.name] = str(entry.stat().st_mtime_ns)
            except FileNotFoundError:
                continue
    return out


def _gcs_split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


@functools.cache
def _client_for(emulator: str | None) -> Any:
    from google.cloud import storage

    return storage.Client()


def _gcs_client() -> Any:
    """One client per process (and per ``STORAGE_EMULATOR_HOST``, which tests point elsewhere)."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST"))


def _gcs_errors() -> Any:
    from google.api_core import exceptions

    return exceptions


def _gcs_blob(uri: str, fetch: bool = False) -> Any:
    bucket, key = _gcs_split(uri)
    handle = _gcs_client().bucket(bucket)
    return handle.get_blob(key) if fetch else handle.blob(key)


def _gcs_write(uri: str, data: bytes, generation: int) -> str | None:
    """Write ``uri`` if its generation is ``generation`` (0: absent): the new one, or None."""
    errors = _gcs_errors()
    blob = _gcs_blob(uri)
    try:
        blob.upload_from_string(data, content_type="application/json",
                                if_generation_match=generation)
    except (errors.PreconditionFailed, errors.NotFound):
        return None
    return str(blob.generation)
