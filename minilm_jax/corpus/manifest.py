"""Stage manifests and atomic stage outputs.

Every stage writes its outputs into a temporary sibling folder and renames it into place when done, so
a later stage never sees a half-written output; the folder's name records its owner (host and pid), so
the next run into the same output removes the folders a killed run left behind. Each output folder has
a ``manifest.json`` recording the stage, its inputs (with checksums), parameters, counts and the sha256
of every output file; a later stage reads its input through :func:`read_stage_manifest`, which
re-checks those checksums.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.storage import atomic_write_json, file_sha256, owned_temp_dir, remove_stale_temps

STAGE_FORMAT = "minilm-jax-corpus-stage"
STAGE_VERSION = 1
MANIFEST = "manifest.json"
SEQUENCES_FILE = "sequences.jsonl"
CORPUS_STAGES = ("filter", "control")


def check_output_free(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; call before doing any work."""
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise CorpusError(f"output already exists: {out} (use --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output path exists and is not a folder: {out}")
    return out


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; rename it to ``out_dir`` if the block succeeds.

    First removes the temporary folders of earlier runs into ``out_dir`` that were killed (their
    process no longer runs); a run still writing keeps its folder."""
    out = check_output_free(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent, out.name, ("tmp", "old"))
    tmp = owned_temp_dir(out.parent, out.name, "tmp")
    try:
        yield tmp
        _default_permissions(tmp)
        if out.exists():
            old = owned_temp_dir(out.parent, out.name, "old")
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _default_permissions(root: Path) -> None:
    """Give a finished output the usual permissions (temporary files are created private)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_stage_manifest(out_dir: Path, stage: str, *, inputs: dict[str, Any], parameters: dict[str, Any],
                         counts: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` for a stage, hashing every other file in ``out_dir``."""
    outputs = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
               for p in sorted(out_dir.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": STAGE_FORMAT, "version": STAGE_VERSION, "stage": stage,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": inputs,
                "parameters": parameters, "counts": counts, "outputs": outputs, **(extra or {})}
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_stage_manifest(stage_dir: str | os.PathLike, stages: tuple[str, ...], *,
                        verify: bool = True) -> dict[str, Any]:
    """Read a stage's manifest, check its stage is one of ``stages`` and its outputs' checksums."""
    path = Path(stage_dir).expanduser()
    if not path.is_dir():
        raise CorpusError(f"not found: {path} (expected the output folder of `{' or '.join(stages)}`)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CorpusError(f"{path} has no {MANIFEST}: not the output of `{' or '.join(stages)}`") from None
    except json.JSONDecodeError as err:
        raise CorpusError(f"malformed manifest {path / MANIFEST}: {err}") from None
    if manifest.get("format") != STAGE_FORMAT or manifest.get("stage") not in stages:
        raise CorpusError(f"{path} is the output of stage {manifest.get('stage')!r}, "
                          f"expected {' or '.join(stages)}")
    if verify:
        for name, entry in manifest.get("outputs", {}).items():
            file = path / name
            if not file.is_file():
                raise CorpusError(f"{file} is missing (listed in its manifest)")
            if file_sha256(file) != entry["sha256"]:
                raise CorpusError(f"{file} does not match the checksum in its manifest "
                                  "(modified after it was written?)")
    return manifest


def corpus_sequences_file(stage_dir: str | os.PathLike) -> Path:
    """The verified ``sequences.jsonl`` of a ``filter``/``control`` output."""
    read_stage_manifest(stage_dir, CORPUS_STAGES)
    return Path(stage_dir).expanduser() / SEQUENCES_FILE


class JsonlWriter:
    """Append JSON lines to a file, counting lines, words and bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "w", encoding="utf-8")
        self.lines = 0
        self.words = 0

    def write(self, text: str, **fields: Any) -> None:
        self._handle.write(json.dumps({"text": text, **fields}, ensure_ascii=False) + "\n")
        self.lines += 1
        self.words += len(text.split())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
