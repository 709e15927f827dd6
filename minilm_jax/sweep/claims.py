"""Which worker runs which unit of a sweep: one claim file per unit folder under ``<root>/claims``.

A worker claims a unit (a pre-training run or population, a zero-shot evaluation, a fine-tuning
job or population) by creating the claim file of each of its folders only if it is absent (of two
workers, one wins), and keeps it fresh while the unit runs (the heartbeat, every ``heartbeat``
seconds). A claim is stale, and taken over by the next worker that wants the unit, when its process
is gone or its last write is older than ``stale_after`` (same host: a hung worker, or a pid reused
by a process that is no worker), or (another host: a SLURM node or TPU host that was preempted) when this
worker has seen it unchanged for ``stale_after`` seconds, or for three heartbeats when its last
write is also older than ``stale_after`` by the clocks (so a host whose clock is off can neither
take over a live claim nor wait long for a dead one). The unit then resumes from its checkpoint;
the gone worker's workdir locks are taken over too (:func:`minilm_jax.storage.mark_gone`). The
sweep root is a filesystem every worker sees (a local disk, NFS, Lustre, a Filestore mount) or a
``gs://`` bucket: the conditional creates, replacements and deletes of
:mod:`minilm_jax.exclusive_files` make the claims safe on both.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Sequence

import minilm_jax.exclusive_files as exclusive_files
import minilm_jax.held_folders as held_folders
from minilm_jax.errors import UserError
from minilm_jax.storage import (RunPath, is_remote, make_folder, mark_gone, process_alive,
                                relative_location, run_path)

HEARTBEAT_SECONDS = 20.0
STALE_AFTER_SECONDS = 300.0
# Environment variables that change them for every worker started with them (a cluster that
# preempts often may want a dead worker's units back sooner; keep stale >> heartbeat).
HEARTBEAT_VARIABLE, STALE_VARIABLE = "MINILM_CLAIM_HEARTBEAT_SECONDS", "MINILM_CLAIM_STALE_SECONDS"


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, or ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"{name}={text!r}: must be a positive number of seconds")
    return value


def worker_id() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Set by a launcher for the workers it starts together: the time of that launch (seconds since the
# epoch). A worker does not retry a unit that failed after its launch (sweep.worker_loop).
LAUNCHED_AT_ENV = "MINILM_SWEEP_LAUNCHED_AT"
LOST_EXIT_STATUS = 75  # EX_TEMPFAIL: this worker stopped; its unit goes on under another


ROOT_GONE_EXIT_STATUS = 2  # the sweep root was moved or deleted: a user's error, one line


def stop_root_gone(line: str) -> None:
    """What a worker does when its sweep root is gone (moved or deleted while it ran): say so in
    one line and stop at once, writing nothing more (a claim that vanished with the root was not
    taken over by anyone)."""
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(ROOT_GONE_EXIT_STATUS)


def stop_at_once(path: RunPath) -> None:
    """What a worker does when its claim was taken over (it was judged gone: its heartbeat could
    not be written for ``stale_after`` seconds, e.g. a store out of reach or a frozen process):
    stop at once, as if killed, so that the unit is never trained by two workers (the next owner
    resumes from a checkpoint, which a kill at any moment leaves usable)."""
    print(f"error: claim {path} was taken over by another worker (this one was judged gone); "
          "stopping at once so that its unit runs once", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(LOST_EXIT_STATUS)


class Claim:
    """Held claims on one unit's folders (path -> version), kept fresh by a heartbeat thread until
    released; ``on_lost`` is called with a claim found taken over (default: :func:`stop_at_once`)."""

    def __init__(self, held: dict[RunPath, str], heartbeat: float,
                 on_lost: Callable[[RunPath], None] = stop_at_once):
        self.held, self.on_lost = held, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    @property
    def paths(self) -> list[RunPath]:
        return list(self.held)

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            for path, version in list(self.held.items()):
                try:
                    fresh = exclusive_files.refresh(path, version)
                except Exception as err:  # a store that does not answer now may answer next time
                    print(f"warning: heartbeat of claim {path} failed: {err}", flush=True)
                    continue
                if fresh is None:
                    gone = held_folders.gone()
                    if gone is not None:  # the root moved away: no other worker took it
                        stop_root_gone(gone)
                    del self.held[path]
                    self.on_lost(path)
                else:
                    self.held[path] = fresh

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if held_folders.gone() is not None:  # the root moved away: nothing to release there
            return
        for path, version in self.held.items():
            try:
                exclusive_files.delete(path, version)
            except Exception as err:  # left behind: stale once this process is gone
                print(f"warning: could not release claim {path}: {err}", flush=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class ClaimBoard:
    """The claims of the sweep root whose claims folder is ``folder``."""

    def __init__(self, folder: str | os.PathLike, root: str | os.PathLike,
                 stale_after: float | None = None, heartbeat: float | None = None):
        self.folder, self.root = run_path(str(folder)), run_path(str(root))
        self.stale_after = stale_after if stale_after is not None else seconds_from_env(
            STALE_VARIABLE, STALE_AFTER_SECONDS)
        self.heartbeat = heartbeat if heartbeat is not None else seconds_from_env(
            HEARTBEAT_VARIABLE, HEARTBEAT_SECONDS)
        if (stale_after is None or heartbeat is None) and self.stale_after < 3 * self.heartbeat:
            raise UserError(f"{STALE_VARIABLE}={self.stale_after:g} with {HEARTBEAT_VARIABLE}="
                            f"{self.heartbeat:g}: a claim must stay silent for at least three "
                            f"heartbeats ({3 * self.heartbeat:g} s) before it is taken over, or a "
                            "live worker's unit would be trained twice")
        self._seen: dict[str, tuple[str, float]] = {}  # claim -> (stamp, when first seen so)
        self.on_lost: Callable[[RunPath], None] = stop_at_once

    def path_of(self, workdir: str | os.PathLike) -> RunPath:
        relative = relative_location(workdir, self.root)
        return self.folder / (hashlib.sha256(relative.encode()).hexdigest()[:20] + ".json")

    def holder(self, workdir: str | os.PathLike) -> dict[str, Any] | None:
        """The live claim on ``workdir`` (None: unclaimed, or its claim looks stale: also when its
        last write is older than ``stale_after`` by the clocks, as a one-time look can tell)."""
        path = self.path_of(workdir)
        return self._live(path, exclusive_files.read(path))

    def holders(self) -> dict[str, dict[str, Any]]:
        """Every live claim (as :meth:`holder` judges it): its folder (relative to the root) ->
        owner, with ``silent_for``: seconds since its last heartbeat when more than three of its
        worker's heartbeats were missed (a worker of another host that may be gone; its claim is
        taken over once it stays so for ``stale_after``), else 0."""
        return {unit: owner for unit, owner in self.claims().items()
                if owner["verdict"] in ("held", "silent")}

    def claims(self) -> dict[str, dict[str, Any]]:
        """Every claim as one look at it judges it: its folder (relative to the root) -> owner,
        with ``verdict`` (``held``; ``silent``: more than three heartbeats missed, not yet the
        stale time; ``stale``: its process lives on this host but has not refreshed it for
        ``stale_after`` (stopped or hung), or another host's not refreshed for that long;
        ``gone``: its process no longer runs on this host), ``note`` (what that verdict says of
        its process, :meth:`note`, for a stale or gone one) and ``silent_for`` (seconds since its
        last heartbeat when it is not held fresh, else 0)."""
        out = {}
        for name in sorted(exclusive_files.listing(self.folder)):
            held = exclusive_files.read(self.folder / name)
            owner = _owner(held)
            if owner is None:  # released since the listing, or a young partial write
                continue
            beat = float(owner.get("heartbeat") or self.heartbeat)
            if self._live(self.folder / name, held) is not None:
                verdict = "silent" if held.age > 3 * beat else "held"
            else:
                verdict = "gone" if self._process_gone(owner) else "stale"
            owner.update(verdict=verdict, silent_for=held.age if verdict != "held" else 0.0,
                         note=self.note(owner, held.age) if verdict in ("stale", "gone") else "")
            out[owner["unit"]] = owner
        return out

    def _live(self, path: RunPath, held: exclusive_files.Held | None) -> dict[str, Any] | None:
        """The owner of the claim ``held`` at ``path`` unless it looks stale (see :meth:`holder`)."""
        owner = _owner(held)
        if owner is None or self._stale(path, owner, held) or held.age > self.stale_after:
            return None
        return owner

    @staticmethod
    def _process_gone(owner: dict[str, Any]) -> bool:
        """Whether the claim's process is known not to run: on this host, its pid (a process of
        another host cannot be looked at)."""
        return (owner.get("host") == socket.gethostname()
                and not process_alive(int(owner.get("pid", -1))))

    @classmethod
    def note(cls, owner: dict[str, Any], silent_for: float) -> str:
        """What a stale claim, not refreshed for ``silent_for`` seconds, says of its process:
        ``gone: pid P not running`` (this host), ``stale: pid P alive, silent for N s`` (this
        host: stopped or hung), or ``stale: silent for N s on host H`` (another host, whose
        processes cannot be looked at from here)."""
        pid = owner.get("pid")
        if owner.get("host") != socket.gethostname():
            return f"stale: silent for {silent_for:.0f} s on host {owner.get('host')}"
        if cls._process_gone(owner):
            return f"gone: pid {pid} not running"
        return f"stale: pid {pid} alive, silent for {silent_for:.0f} s"

    def try_claim(self, workdirs: Sequence[str | os.PathLike], stage: str) -> Claim | None:
        """Claim every folder of a unit, or none of them (None: another worker holds one)."""
        if not is_remote(self.folder):  # a root moved away while this worker waited: its line,
            make_folder(self.folder)     # and no claims folder made there
        made: dict[RunPath, str] = {}
        try:
            for workdir in sorted(set(map(str, workdirs))):
                path = self.path_of(workdir)
                owner = {"worker": worker_id(), "host": socket.gethostname(), "pid": os.getpid(),
                         "since": time.time(), "heartbeat": self.heartbeat, "stage": stage,
                         "unit": relative_location(workdir, self.root)}
                data = json.dumps(owner).encode()
                version = exclusive_files.create(path, data) or self._take_over(path, data)
                if version is None:
                    break
                made[path] = version
            else:
                return Claim(made, self.heartbeat, self.on_lost)
        except BaseException:
            self._give_back(made)
            raise
        self._give_back(made)
        return None

    @staticmethod
    def _give_back(made: dict[RunPath, str]) -> None:
        """Release the part of a unit that was claimed (another worker holds the rest)."""
        for path, version in made.items():
            try:
                exclusive_files.delete(path, version)
            except Exception as err:  # left behind: stale once this process is gone
                print(f"warning: could not release claim {path}: {err}", flush=True)

    def snapshot(self, folders: Sequence[str | os.PathLike] = ()) -> tuple:
        """The claims by name (a heartbeat is no change) and the files of ``folders`` by stamp: what
        :meth:`wait_for_change` compares with."""
        return (tuple(sorted(exclusive_files.listing(self.folder))),
                *(tuple(sorted(exclusive_files.listing(f).items())) for f in folders))

    def wait_for_change(self, timeout: float, folders: Sequence[str | os.PathLike] = (),
                        since: tuple | None = None) -> None:
        """Return when a claim is made or released, a file of ``folders`` changes, or the process
        holding a claim on this host ends (killed: its unit is free at once), or after ``timeout``
        seconds (a stale claim of another host is noticed by the next look). ``since``: the
        :meth:`snapshot` taken when the caller last looked (at once if anything changed since:
        a claim released between that look and this call is not missed); default, now. A local
        root is looked at every 0.2 s, a bucket every 2 s."""
        every = 2.0 if is_remote(self.folder) else 0.2
        before = self.snapshot(folders) if since is None else since
        end = time.monotonic() + timeout
        local = self._local_holders()
        while time.monotonic() < end and self.snapshot(folders) == before:
            if any(not process_alive(pid) for pid in local):
                return
            time.sleep(every)

    def _local_holders(self) -> list[int]:
        """The pids of the processes on this host that hold a claim of this root now."""
        me, pids = socket.gethostname(), []
        for name in exclusive_files.listing(self.folder):
            owner = _owner(exclusive_files.read(self.folder / name))
            if owner and owner.get("host") == me and owner.get("pid") != os.getpid():
                pids.append(int(owner.get("pid", -1)))
        return pids

    def _stale(self, path: RunPath, owner: dict[str, Any], held: exclusive_files.Held) -> bool:
        """Whether the claim ``held`` at ``path`` is stale (see the module docstring)."""
        if owner.get("host") == socket.gethostname():
            # this host's clock wrote the claim: its age is exact. A live pid whose claim went
            # unrefreshed for stale_after is a hung worker, or not a worker at all (a reused pid)
            pid = int(owner.get("pid", -1))
            if pid == os.getpid():
                return False  # this process's own claim (another thread's unit)
            return not process_alive(pid) or held.age > self.stale_after
        now = time.monotonic()
        stamp, since = self._seen.get(str(path), (None, now))
        if stamp != held.stamp:
            since = now
            self._seen[str(path)] = (held.stamp, now)
        unchanged = now - since
        return unchanged >= self.stale_after or (held.age > self.stale_after
                                                 and unchanged >= 3 * self.heartbeat)

    def _take_over(self, path: RunPath, data: bytes) -> str | None:
        """Replace a stale claim with ours (of two workers taking it over, one wins): our version,
        or None (the claim is live, or another worker got there first)."""
        held = exclusive_files.read(path)
        owner = _owner(held)
        if held is None:  # released since we looked
            return exclusive_files.create(path, data)
        if owner is None and held.age <= self.stale_after:  # unreadable: a young partial write
            return None
        if owner is not None and not self._stale(path, owner, held):
            return None
        owner = owner or {}
        # what this worker saw: the claim's age, or (another host's clock) how long it watched it
        seen = self._seen.get(str(path))
        silent_for = max(held.age, time.monotonic() - seen[1] if seen else 0.0)
        version = exclusive_files.replace(path, held.version, data)
        if version is not None:
            if owner.get("host") and owner.get("pid") is not None:
                mark_gone(str(owner["host"]), int(owner["pid"]))
            state = self.note(owner, silent_for) if owner else "unreadable"
            print(f"note: taking over {owner.get('stage')} of {owner.get('unit')} from worker "
                  f"{owner.get('worker')} ({state})", flush=True)
        return version


def _owner(held: exclusive_files.Held | None) -> dict[str, Any] | None:
    """The owner record of a claim as read (None: absent or unreadable)."""
    if held is None:
        return None
    try:
        owner = json.loads(held.data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None
