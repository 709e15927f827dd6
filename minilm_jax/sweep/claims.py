"""Which worker runs which unit of a sweep: one claim file per unit folder under ``<root>/claims``.

A worker claims a unit (a pre-training run or population, a zero-shot evaluation, a fine-tuning
job or population) by creating the claim file of each of its folders exclusively (``O_EXCL``: of two
workers, one wins), and keeps it fresh while the unit runs (its mtime is the heartbeat). A claim is
stale, and taken over by the next worker that wants the unit, when its process is gone (same host)
or its heartbeat is older than ``stale_after`` seconds (any host: a SLURM node or TPU host that was
preempted); the unit then resumes from its checkpoint. The sweep root must be a filesystem every
worker sees (a local disk, NFS, Lustre, a Filestore mount): exclusive create and rename are what
make the claims safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from minilm_jax.storage import process_alive

HEARTBEAT_SECONDS = 20.0
STALE_AFTER_SECONDS = 300.0


def worker_id() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Claim:
    """Held claims on one unit's folders, kept fresh by a heartbeat thread until released."""

    def __init__(self, paths: list[Path], heartbeat: float):
        self.paths = paths
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            for path in self.paths:
                try:
                    os.utime(path)
                except OSError:
                    pass

    def release(self) -> None:
        self._stop.set()
        mine = worker_id()
        for path in self.paths:
            try:
                if json.loads(path.read_text()).get("worker") == mine:
                    path.unlink()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class ClaimBoard:
    """The claims of the sweep root whose claims folder is ``folder``."""

    def __init__(self, folder: Path, root: Path, stale_after: float = STALE_AFTER_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS):
        self.folder, self.root = Path(folder), Path(root)
        self.stale_after, self.heartbeat = stale_after, heartbeat

    def path_of(self, workdir: Path) -> Path:
        relative = os.path.relpath(workdir, self.root)
        return self.folder / (hashlib.sha256(relative.encode()).hexdigest()[:20] + ".json")

    def holder(self, workdir: Path) -> dict[str, Any] | None:
        """The live claim on ``workdir`` (None: unclaimed, or its claim is stale)."""
        owner = self._read(self.path_of(workdir))
        return None if owner is None or self._stale(self.path_of(workdir), owner) else owner

    def holders(self) -> dict[str, dict[str, Any]]:
        """Every live claim: its folder (relative to the root) -> owner."""
        out = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            owner = self._read(path)
            if owner is not None and not self._stale(path, owner):
                out[owner["unit"]] = owner
        return out

    def try_claim(self, workdirs: Sequence[Path], stage: str) -> Claim | None:
        """Claim every folder of a unit, or none of them (None: another worker holds one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        made: list[Path] = []
        for workdir in sorted(set(workdirs)):
            path = self.path_of(workdir)
            owner = {"worker": worker_id(), "host": socket.gethostname(), "pid": os.getpid(),
                     "since": time.time(), "stage": stage,
                     "unit": os.path.relpath(workdir, self.root)}
            if not self._create(path, owner) and not (self._take_over(path)
                                                      and self._create(path, owner)):
                for held in made:
                    held.unlink(missing_ok=True)
                return None
            made.append(path)
        return Claim(made, self.heartbeat)

    def wait_for_change(self, timeout: float, extra: Sequence[Path] = ()) -> None:
        """Return when a claim is released or taken, or one of ``extra`` changes (or after
        ``timeout`` seconds: a stale claim is noticed by the next look)."""
        def snapshot() -> tuple:
            names = tuple(sorted(p.name for p in self.folder.glob("*.json"))) \
                if self.folder.is_dir() else ()
            stamps = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in extra)
            return names, stamps
        before, end = snapshot(), time.monotonic() + timeout
        while time.monotonic() < end and snapshot() == before:
            time.sleep(0.2)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _create(path: Path, owner: dict[str, Any]) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        return True

    def _stale(self, path: Path, owner: dict[str, Any]) -> bool:
        if owner.get("host") == socket.gethostname():
            return not process_alive(int(owner.get("pid", -1)))
        try:
            return time.time() - path.stat().st_mtime > self.stale_after
        except FileNotFoundError:
            return True

    def _take_over(self, path: Path) -> bool:
        """Move a stale claim aside (rename: of two workers taking it over, one wins)."""
        owner = self._read(path)
        if owner is None:  # being written this instant, or just released
            return False
        if not self._stale(path, owner):
            return False
        aside = path.with_suffix(f".stale-{os.getpid()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if self._read(aside) != owner:  # another worker replaced it in between: put it back
            try:
                os.link(aside, path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        print(f"note: taking over {owner.get('stage')} of {owner.get('unit')} from worker "
              f"{owner.get('worker')} (gone)", flush=True)
        return True
