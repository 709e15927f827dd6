"""Token-shard format: the contract between the corpus pipeline and the pre-training engine.

A shard directory holds, per split, one ``<split>.npy`` file (int32, shape ``[num_sequences, seq_len]``,
padded with ``pad_id``; memory-mapped on read) and one ``manifest.json`` describing all splits::

    {
      "format": "minilm-jax-shards", "version": 1,
      "seq_len": 128, "pad_id": 1,
      "tokenizer": {"sha256": "...", "vocab_size": 19000, "path": "..."},
      "splits": {"train": {"file": "train.npy", "num_sequences": 1000, "num_tokens": 97000,
                           "sha256": "..."}, ...},
      "source": {...free-form provenance...}
    }

Packed sequences may carry an optional ``<split>.segments.npy`` (int32, same shape, 0 at padding,
1, 2, ... per packed document) so that documents in one row never attend to each other.

Files are written to a temporary name and renamed, so a reader never sees a half-written shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "minilm-jax-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ShardError(ValueError):
    """Raised for missing, empty, malformed or mismatched shards."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
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


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npy")
    os.close(fd)
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """Identity of the tokenizer that produced a shard set."""

    sha256: str
    vocab_size: int
    path: str = ""


def write_shards(
    out_dir: str | os.PathLike,
    splits: dict[str, np.ndarray],
    *,
    pad_id: int,
    tokenizer: TokenizerInfo,
    segments: dict[str, np.ndarray] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write token arrays (one ``[N, T]`` int array per split) and the manifest; return the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not splits:
        raise ShardError("write_shards: no splits given")
    seq_lens = {name: arr.shape[1] for name, arr in splits.items() if arr.ndim == 2}
    if len(seq_lens) != len(splits) or len(set(seq_lens.values())) != 1:
        raise ShardError(f"write_shards: every split must be a 2-D array of one length, got "
                         f"{ {k: v.shape for k, v in splits.items()} }")
    seq_len = next(iter(seq_lens.values()))
    manifest_splits: dict[str, Any] = {}
    for name, arr in splits.items():
        if arr.shape[0] == 0:
            raise ShardError(f"write_shards: split '{name}' is empty")
        arr = np.ascontiguousarray(arr, dtype=np.int32)
        path = out / f"{name}.npy"
        _atomic_save_npy(path, arr)
        entry = {
            "file": path.name,
            "num_sequences": int(arr.shape[0]),
            "num_tokens": int((arr != pad_id).sum()),
            "sha256": file_sha256(path),
        }
        if segments is not None and name in segments:
            seg = np.ascontiguousarray(segments[name], dtype=np.int32)
            if seg.shape != arr.shape:
                raise ShardError(f"write_shards: segments of '{name}' have shape {seg.shape}, "
                                 f"tokens {arr.shape}")
            seg_path = out / f"{name}.segments.npy"
            _atomic_save_npy(seg_path, seg)
            entry["segments_file"] = seg_path.name
        manifest_splits[name] = entry
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "seq_len": int(seq_len),
        "pad_id": int(pad_id),
        "tokenizer": dataclasses.asdict(tokenizer),
        "splits": manifest_splits,
        "source": source or {},
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


@dataclasses.dataclass(frozen=True)
class ShardSplit:
    """One split of a shard set, memory-mapped."""

    tokens: np.ndarray  # [N, T] int32
    segments: np.ndarray | None  # [N, T] int32 or None (then: 1 at real tokens, 0 at padding)

    @property
    def num_sequences(self) -> int:
        return int(self.tokens.shape[0])


def read_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a shard set's manifest."""
    path = Path(shard_dir) / MANIFEST
    if not Path(shard_dir).is_dir():
        raise ShardError(f"shard directory not found: {shard_dir}")
    if not path.is_file():
        raise ShardError(f"no {MANIFEST} in {shard_dir}: not a token-shard directory "
                         "(build one with `python -m minilm_jax.corpus shards ...`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardError(f"malformed manifest {path}: {err}") from err
    if manifest.get("format") != FORMAT_NAME:
        raise ShardError(f"{path} is not a {FORMAT_NAME} manifest (format={manifest.get('format')!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(f"{path}: unsupported shard format version {manifest.get('version')}")
    return manifest


def open_split(shard_dir: str | os.PathLike, split: str, *, verify: bool = False) -> ShardSplit:
    """Memory-map one split; ``verify`` re-hashes the file against the manifest."""
    manifest = read_manifest(shard_dir)
    splits = manifest["splits"]
    if split not in splits:
        raise ShardError(f"split '{split}' not in {shard_dir} (has: {sorted(splits)})")
    entry = splits[split]
    path = Path(shard_dir) / entry["file"]
    if not path.is_file():
        raise ShardError(f"shard file missing: {path}")
    if verify and file_sha256(path) != entry["sha256"]:
        raise ShardError(f"shard file {path} does not match the checksum in its manifest")
    tokens = np.load(path, mmap_mode="r")
    if tokens.ndim != 2 or tokens.shape[1] != manifest["seq_len"]:
        raise ShardError(f"{path}: shape {tokens.shape} disagrees with seq_len {manifest['seq_len']}")
    if tokens.shape[0] == 0:
        raise ShardError(f"{path}: split '{split}' is empty")
    segments = None
    if "segments_file" in entry:
        segments = np.load(Path(shard_dir) / entry["segments_file"], mmap_mode="r")
    return ShardSplit(tokens=tokens, segments=segments)
