"""Integrity and provenance of saved checkpoints.

After Orbax finishes a step directory (``checkpoints/<step>``, ``best/<step>``,
``snapshots/<step>``), process 0 writes ``seal.json`` into it: the sha256 of every file below it
and the identity of the run that wrote it (its flattened config). Reading a checkpoint back
checks the seal first:

- ``ok``: every file hashes as sealed;
- ``corrupt``: a file differs, is missing or was added (named in the reason);
- ``unsealed``: no seal, i.e. the process stopped between Orbax's final rename and the seal (or the
  checkpoint predates seals): nothing to check it against.

A corrupt directory is never read, reused or skipped over by a save: :func:`quarantine` moves it
to ``<workdir>/quarantine/`` where it can be inspected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

from minilm_jax.storage import RunPath, atomic_write_json, files_under, make_folder, run_path

SEAL_NAME = "seal.json"
QUARANTINE = "quarantine"


@dataclasses.dataclass(frozen=True)
class Verdict:
    state: str  # ok | corrupt | unsealed
    reason: str = ""
    identity: dict[str, Any] | None = None  # the sealed run identity (flattened config)

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def _files(step_dir: RunPath) -> dict[str, RunPath]:
    return {name: path for name, path in files_under(step_dir).items() if name != SEAL_NAME}


def _sha256(path: RunPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_digests(files: dict[str, RunPath]) -> dict[str, str]:
    """``{name: sha256}`` of ``files`` (name -> path), as a seal records them."""
    return {name: _sha256(path) for name, path in sorted(files.items())}


def write_seal(step_dir: RunPath, identity: dict[str, Any] | None) -> None:
    """Seal a finished step directory: per-file sha256 and the run identity."""
    files = file_digests(_files(step_dir))
    atomic_write_json(run_path(str(step_dir)) / SEAL_NAME,
                      {"format": 1, "files": files, "identity": identity, "sealed_at": time.time()})


def verify(step_dir: RunPath) -> Verdict:
    """Check ``step_dir`` against its seal (see the module docstring)."""
    seal_path = run_path(str(step_dir)) / SEAL_NAME
    if not seal_path.exists():
        return Verdict("unsealed", "no seal.json (the save was interrupted, or it predates seals)")
    try:
        seal = json.loads(seal_path.read_text())
        sealed: dict[str, str] = dict(seal["files"])
    except (ValueError, KeyError, TypeError) as err:
        return Verdict("corrupt", f"unreadable seal.json ({type(err).__name__})")
    present = _files(step_dir)
    missing = sorted(set(sealed) - set(present))
    if missing:
        return Verdict("corrupt", f"file {missing[0]} is missing", seal.get("identity"))
    added = sorted(set(present) - set(sealed))
    if added:
        return Verdict("corrupt", f"file {added[0]} was not there when sealed", seal.get("identity"))
    for name in sorted(sealed):
        if _sha256(present[name]) != sealed[name]:
            return Verdict("corrupt", f"file {name} changed since it was written (sha256 mismatch)",
                           seal.get("identity"))
    return Verdict("ok", "", seal.get("identity"))


def quarantine(step_dir: RunPath, workdir: RunPath) -> RunPath:
    """Move ``step_dir`` (``<workdir>/<kind>/<step>``) to ``<workdir>/quarantine/<kind>-<step>-<time>``."""
    step_dir = run_path(str(step_dir))
    target_dir = run_path(str(workdir)) / QUARANTINE
    make_folder(target_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = target_dir / f"{step_dir.parent.name}-{step_dir.name}-{stamp}"
    n = 1
    while target.exists():
        target = target_dir / f"{step_dir.parent.name}-{step_dir.name}-{stamp}.{n}"
        n += 1
    step_dir.rename(target)
    return target
