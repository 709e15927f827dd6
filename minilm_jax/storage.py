"""Storage at the bottom of the package: run locations (local folders or object-store URLs such as
``gs://bucket/run``, through ``etils.epath``), atomic writes and file hashing.

Object stores have no rename and no append: whole objects are written at once (each write is
atomic there), and append-style files are rewritten whole. ``gs://`` goes through fsspec / gcsfs
(``etils.epath``; ``tf.io.gfile`` where TensorFlow is installed) while Orbax writes arrays through
TensorStore, behind gcsfs's back: gcsfs's listings cache is therefore turned off (see
:func:`run_path`), else a listing made before a save would hide the files the save wrote.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from etils import epath

import minilm_jax.held_folders as held_folders
from minilm_jax.errors import UserError

RunPath = Union[Path, epath.Path]


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``gs://``, ``s3://``) rather than a local path."""
    return "://" in str(location)


def run_path(location: str | os.PathLike) -> RunPath:
    """A path object for ``location``: ``epath.Path`` for URLs (needs ``pip install
    minilm-jax[gcs]`` for ``gs://``), ``pathlib.Path`` otherwise."""
    if not is_remote(location):
        return Path(location)
    _uncached_listings()
    return epath.Path(str(location))


@functools.cache
def _uncached_listings() -> None:
    """fsspec object stores list afresh each time (``use_listings_cache=False`` unless configured
    otherwise, e.g. ``FSSPEC_GCS_USE_LISTINGS_CACHE``): TensorStore's writes do not invalidate
    gcsfs's cache. Takes effect for filesystems created from now on (run before the first use)."""
    try:
        import fsspec.config
    except ImportError:  # no fsspec: epath uses tf.io.gfile, or gs:// fails with its own message
        return
    for protocol in ("gs", "gcs", "s3"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)


def relative_location(location: str | os.PathLike, root: str | os.PathLike) -> str:
    """``location`` relative to the folder ``root`` (``/``-separated; local paths or URLs)."""
    location, root = str(location), str(root).rstrip("/")
    if is_remote(root) or is_remote(location):
        if not location.startswith(root + "/"):
            raise ValueError(f"{location} is not inside {root}")
        return location[len(root) + 1:]
    return Path(os.path.relpath(location, root)).as_posix()


def files_under(root: RunPath) -> dict[str, RunPath]:
    """Every file below the folder ``root``, by its ``/``-separated path relative to ``root``.
    On an object store the folders are listed one by one (``epath`` refuses ``**`` globs there)."""
    root = run_path(str(root))
    if isinstance(root, Path):
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    out: dict[str, RunPath] = {}
    bare = str(root).split("://", 1)[1].rstrip("/")  # epath's walk yields folders without gs://
    for folder, _, names in root.walk():
        rel = posixpath.relpath(str(folder).split("://", 1)[-1], bare)
        for name in names:
            key = name if rel == "." else f"{rel}/{name}"
            out[key] = root / key
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def make_folder(path: str | os.PathLike) -> None:
    """Create the folder ``path`` and any missing parents. Under a held folder
    (:mod:`minilm_jax.held_folders`) the missing levels are made one at a time below it, never the
    held folder itself: one moved or deleted meanwhile, even after the check, is its one line
    (:class:`~minilm_jax.held_folders.FolderGone`), not a folder re-created at its path."""
    if is_remote(path):
        run_path(path).mkdir(parents=True, exist_ok=True)
        return
    held_folders.check()
    root = held_folders.holder(path)
    if root is None:
        Path(path).mkdir(parents=True, exist_ok=True)
        return
    level = Path(root)
    for part in Path(os.path.abspath(path)).relative_to(root).parts:
        level = level / part
        with held_folders.gone_if_missing(), contextlib.suppress(FileExistsError):
            level.mkdir()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename (on an
    object store, ``gs://...``, one whole-object write, which is atomic there). A held folder
    that is gone (:mod:`minilm_jax.held_folders`) stops it before anything is created."""
    if is_remote(path):
        held_folders.check()
        remote = run_path(path)
        remote.parent.mkdir(parents=True, exist_ok=True)
        remote.write_bytes(data)
        return
    path = Path(path)
    make_folder(path.parent)  # the held folders checked first
    with held_folders.gone_if_missing():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() honours the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a folder and everything in it, on a local disk or an object store."""
    if is_remote(path):
        run_path(path).rmtree()
    else:
        shutil.rmtree(path)


def _umask() -> int:
    """The process umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _host_tag() -> str:
    """This host's name as it appears in a temporary name: no dot (the separator before a tag)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def owned_temp_dir(parent: str | os.PathLike, name: str, tag: str) -> Path:
    """A new private folder ``parent/.<name>.<tag>-<host>-<pid>-<8 hex>``, for this process to fill
    and rename into place (or onto ``name``). The owner in the name lets a later run tell a folder
    left by a killed process (:func:`remove_stale_temps`) from one that a live process is writing."""
    parent = Path(parent)
    while True:
        path = parent / f".{name}.{tag}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue


def remove_stale_temps(parent: str | os.PathLike, name: str, tags: Sequence[str]) -> list[Path]:
    """Remove the folders that :func:`owned_temp_dir` made for ``name`` in ``parent`` (with one of
    ``tags``) on this host for a process that no longer runs: what a killed run left behind. Those
    of live processes (a run writing the same output now) and of other hosts are kept. Folders named
    by the earlier ``tempfile.mkdtemp`` scheme (``.<name>.<tag>-XXXXXXXX``) name no owner: they are
    kept, with a note on stderr. Returns the removed paths (each named in a note on stderr)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    alternatives = "|".join(re.escape(t) for t in tags)
    owned = re.compile(rf"\.{re.escape(name)}\.(?:{alternatives})-(?P<host>[A-Za-z0-9_-]+)-"
                       r"(?P<pid>\d+)-[0-9a-f]{8}")
    legacy = re.compile(rf"\.{re.escape(name)}\.(?:{alternatives})-[a-z0-9_]{{8}}")
    removed, unknown = [], []
    for path in sorted(parent.iterdir()):
        match = owned.fullmatch(path.name)
        if match is None:
            if legacy.fullmatch(path.name) and path.is_dir():
                unknown.append(path)
            continue
        pid = int(match["pid"])
        if match["host"] != _host_tag() or pid == os.getpid() or process_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(path)
            print(f"note: removed {path}, left by process {pid} (no longer running)",
                  file=sys.stderr, flush=True)
    for path in unknown:
        print(f"note: {path} is a temporary folder of an earlier version, which does not record "
              f"its owner: delete it if no command is writing {parent / name}", file=sys.stderr,
              flush=True)
    return removed


LOCK_NAME = ".lock"
_GONE: set[tuple[str, int]] = set()  # (host, pid) of processes known to have stopped


def mark_gone(host: str, pid: int) -> None:
    """Record that process ``pid`` on ``host`` no longer runs (a sweep worker on another host
    whose claim went stale): its workdir locks are then taken over like a dead local process's."""
    _GONE.add((host, int(pid)))


class WorkdirLock:
    """One live process per run directory: ``<dir>/.lock`` holds the owner's host and pid.

    A second process gets :class:`~minilm_jax.errors.UserError` naming the owner. A lock left by a
    process that no longer runs on this host is stale and taken over (with a note); one from another
    host cannot be checked and is refused with the way out (delete the file). The owning process
    may take its own lock again (re-entrant). On an object store the check and the write are not
    atomic (no exclusive create there): it catches the common mistake, not a race.
    """

    def __init__(self, directory: str | os.PathLike, what: str = "workdir"):
        self.path = run_path(directory) / LOCK_NAME
        self.what = what
        self.held = False

    @staticmethod
    def _me() -> dict[str, Any]:
        import socket
        import time
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            return None

    def acquire(self) -> "WorkdirLock":
        me = self._me()
        owner = self._owner()
        if owner is not None and (owner.get("host"), owner.get("pid")) != (me["host"], me["pid"]):
            gone = (owner.get("host"), owner.get("pid")) in _GONE
            if owner.get("host") != me["host"] and not gone:
                raise UserError(f"{self.what} {self.path.parent} is in use by process "
                                f"{owner.get('pid')} on host {owner.get('host')}; if that process "
                                f"is gone, delete {self.path}")
            if not gone and process_alive(int(owner.get("pid", -1))):
                raise UserError(f"{self.what} {self.path.parent} is in use by process "
                                f"{owner.get('pid')} (this host); wait for it, stop it, or use "
                                "another directory")
            print(f"note: taking over the stale lock of process {owner.get('pid')} on "
                  f"{owner.get('host')} (no longer running) in {self.path.parent}", flush=True)
        atomic_write_json(self.path, me)
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host: one that exited but was not yet reaped by
    its parent (a zombie, e.g. a killed sweep worker whose launcher waits on another) is not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie (Linux ``/proc``; elsewhere: assumed not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'
    fields = stat[stat.rfind(")") + 1:].split()
    return bool(fields) and fields[0] in ("Z", "X")
