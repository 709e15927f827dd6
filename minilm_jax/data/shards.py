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

Files are written to a temporary name and renamed, so a reader never sees a half-written shard;
:class:`ShardWriter` writes a shard set in chunks of rows (bounded memory), ``write_shards`` from
whole arrays (the same files, byte for byte).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.storage import atomic_write_json, file_sha256
from minilm_jax.tokenizer import TokenizerInfo

FORMAT_NAME = "minilm-jax-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ShardError(UserError, ValueError):
    """Raised for missing, empty, malformed or mismatched shards."""


ROW_DTYPE = np.dtype("<i4")


class NpyRowWriter:
    """Append int32 rows of one length to a ``.npy`` file whose row count is known only at the end.

    Rows go to a temporary file (same folder) after a header for zero rows; :meth:`commit` rewrites
    the header with the final count, hashes the file and renames it into place. numpy pads the header
    so that its length does not depend on the count: the file is byte-identical to ``np.save`` of the
    whole array. The sha256 takes one sequential read of the finished file, since the header (which
    holds the count) comes first and is final only at the end. Memory: the rows of one :meth:`append`.
    """

    def __init__(self, path: str | os.PathLike, row_len: int) -> None:
        self.path, self.row_len, self.rows = Path(path), int(row_len), 0
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._handle = os.fdopen(fd, "wb")
        self._data_offset = self._write_header()

    def _write_header(self) -> int:
        """Write the header for the rows so far at the start of the file; return its length."""
        self._handle.seek(0)
        header = {"descr": np.lib.format.dtype_to_descr(ROW_DTYPE), "fortran_order": False,
                  "shape": (self.rows, self.row_len)}
        np.lib.format.write_array_header_1_0(self._handle, header)
        return self._handle.tell()

    def append(self, rows: np.ndarray) -> None:
        """Append ``[n, row_len]`` rows (converted to little-endian int32)."""
        if rows.ndim != 2 or rows.shape[1] != self.row_len:
            raise ShardError(f"{self.path.name}: rows of shape {rows.shape}, expected [n, {self.row_len}]")
        self._handle.write(np.ascontiguousarray(rows, dtype=ROW_DTYPE))  # buffer protocol: no copy
        self.rows += int(rows.shape[0])

    def commit(self) -> str:
        """Write the final header, rename the file into place; return its sha256."""
        self._handle.flush()
        if self._write_header() != self._data_offset:
            raise ShardError(f"{self.path.name}: the .npy header changed length")  # numpy pads it: not expected
        self._handle.close()
        digest = file_sha256(self._tmp)
        os.replace(self._tmp, self.path)
        return digest

    def discard(self) -> None:
        """Close and delete the temporary file (nothing is renamed)."""
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


@dataclasses.dataclass
class _SplitFiles:
    tokens: NpyRowWriter
    segments: NpyRowWriter | None
    num_tokens: int = 0


class ShardWriter:
    """Write a shard set in chunks of rows, with memory bounded by the largest chunk.

    ``append(split, tokens, segments)`` adds rows to a split (its files are created at its first rows;
    ``splits`` gives the allowed names and their order in the manifest). ``finish(source)`` removes an
    older manifest, completes each file (header, sha256, rename) and writes the new manifest last;
    leaving a ``with`` block without ``finish`` (an error) deletes the temporary files. So a failure
    leaves either the folder as it was or one without a manifest, which no reader accepts.
    """

    def __init__(self, out_dir: str | os.PathLike, *, seq_len: int, pad_id: int, tokenizer: TokenizerInfo,
                 splits: Sequence[str]) -> None:
        self.out = Path(out_dir)
        self.seq_len, self.pad_id, self.tokenizer = int(seq_len), int(pad_id), tokenizer
        self.split_names = tuple(splits)
        self._files: dict[str, _SplitFiles] = {}
        self.out.mkdir(parents=True, exist_ok=True)

    def _open(self, split: str, with_segments: bool) -> _SplitFiles:
        if split not in self.split_names:
            raise ShardError(f"split '{split}' is not one of {self.split_names}")
        segments = NpyRowWriter(self.out / f"{split}.segments.npy", self.seq_len) if with_segments else None
        files = self._files[split] = _SplitFiles(NpyRowWriter(self.out / f"{split}.npy", self.seq_len), segments)
        return files

    def append(self, split: str, tokens: np.ndarray, segments: np.ndarray | None = None) -> None:
        """Append ``[n, seq_len]`` token rows (and their segment ids, if the split has them) to ``split``."""
        files = self._files.get(split) or self._open(split, segments is not None)
        if (segments is None) != (files.segments is None):
            raise ShardError(f"split '{split}': segments must be given with every chunk or with none")
        if segments is not None and segments.shape != tokens.shape:
            raise ShardError(f"split '{split}': segments of shape {segments.shape}, tokens {tokens.shape}")
        files.tokens.append(tokens)
        files.num_tokens += int(np.count_nonzero(tokens != self.pad_id))
        if files.segments is not None:
            files.segments.append(segments)

    def finish(self, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """Complete every split's files, then write the manifest; return it."""
        if not any(files.tokens.rows for files in self._files.values()):
            raise ShardError(f"no rows written to {self.out}")
        entries: dict[str, Any] = {}
        (self.out / MANIFEST).unlink(missing_ok=True)  # never an old manifest over new files
        try:
            for name in (n for n in self.split_names if n in self._files):
                entries[name] = self._commit(name, self._files[name])
        finally:
            self.abort()
        manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "seq_len": self.seq_len,
                    "pad_id": self.pad_id, "tokenizer": dataclasses.asdict(self.tokenizer), "splits": entries,
                    "source": source or {}}
        atomic_write_json(self.out / MANIFEST, manifest)
        return manifest

    def _commit(self, name: str, files: _SplitFiles) -> dict[str, Any]:
        if files.tokens.rows == 0:
            raise ShardError(f"split '{name}' is empty")
        entry = {"file": files.tokens.path.name, "num_sequences": files.tokens.rows,
                 "num_tokens": files.num_tokens, "sha256": files.tokens.commit()}
        if files.segments is not None:
            entry["segments_sha256"] = files.segments.commit()
            entry["segments_file"] = files.segments.path.name
        return entry

    def abort(self) -> None:
        """Delete the temporary files not yet renamed into place."""
        for files in self._files.values():
            for writer in (files.tokens, files.segments):
                if writer is not None:
                    writer.discard()
        self._files.clear()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _check_arrays(splits: dict[str, np.ndarray], segments: dict[str, np.ndarray] | None) -> int:
    """The common row length of ``write_shards``' arrays; a ShardError for anything malformed."""
    if not splits:
        raise ShardError("write_shards: no splits given")
    seq_lens = {name: arr.shape[1] for name, arr in splits.items() if arr.ndim == 2}
    if len(seq_lens) != len(splits) or len(set(seq_lens.values())) != 1:
        raise ShardError(f"write_shards: every split must be a 2-D array of one length, got "
                         f"{ {k: v.shape for k, v in splits.items()} }")
    for name, arr in splits.items():
        if arr.shape[0] == 0:
            raise ShardError(f"write_shards: split '{name}' is empty")
        seg = (segments or {}).get(name)
        if seg is not None and np.shape(seg) != arr.shape:
            raise ShardError(f"write_shards: segments of '{name}' have shape {np.shape(seg)}, tokens {arr.shape}")
    return next(iter(seq_lens.values()))


def write_shards(
    out_dir: str | os.PathLike,
    splits: dict[str, np.ndarray],
    *,
    pad_id: int,
    tokenizer: TokenizerInfo,
    segments: dict[str, np.ndarray] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write token arrays (one ``[N, T]`` int array per split) and the manifest; return the manifest.

    For data that does not fit in memory, use :class:`ShardWriter` (same files, written in chunks).
    """
    seq_len = _check_arrays(splits, segments)
    with ShardWriter(out_dir, seq_len=seq_len, pad_id=pad_id, tokenizer=tokenizer, splits=list(splits)) as writer:
        for name, arr in splits.items():
            seg = (segments or {}).get(name)
            writer.append(name, np.asarray(arr), None if seg is None else np.asarray(seg))
        return writer.finish(source)


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


def split_fingerprints(manifest: dict[str, Any]) -> dict[str, Any]:
    """Each split's bytes as its manifest records them: the tokens file's sha256, and with it the
    segments file's where one is recorded (``[tokens, segments]``; shards written before segments
    were hashed give the tokens' alone, as they always did)."""
    return {name: ([entry.get("sha256"), entry["segments_sha256"]]
                   if "segments_sha256" in entry else entry.get("sha256"))
            for name, entry in sorted(manifest["splits"].items())}


def recorded_special_ids(manifest: dict[str, Any]) -> dict[str, int]:
    """The special tokens' ids by role (``pad``, ``bos``, ``eos``, ``unk``, ``mask``) as the shards'
    builder recorded them (``manifest["source"]["special_ids"]``); empty for shards written
    without them (older shards, or arrays written by hand)."""
    recorded = (manifest.get("source") or {}).get("special_ids") or {}
    return {role: int(i) for role, i in recorded.items() if i is not None}


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
    segments_path = Path(shard_dir) / entry["segments_file"] if "segments_file" in entry else None
    if (verify and segments_path is not None and "segments_sha256" in entry
            and file_sha256(segments_path) != entry["segments_sha256"]):
        raise ShardError(f"shard file {segments_path} does not match the checksum in its manifest")
    tokens = _load_rows(path, manifest["seq_len"], int(entry["num_sequences"]))
    if tokens.shape[0] == 0:
        raise ShardError(f"{path}: split '{split}' is empty")
    _check_token_range(path, tokens, int(manifest["tokenizer"]["vocab_size"]))
    segments = None
    if segments_path is not None:
        segments = _load_rows(segments_path, manifest["seq_len"], int(entry["num_sequences"]))
    return ShardSplit(tokens=tokens, segments=segments)


def _load_rows(path: Path, seq_len: int, rows: int) -> np.ndarray:
    """Memory-map a shard file after checking it has the manifest's ``rows`` x ``seq_len`` shape
    (a truncated or replaced file is named, never read past its end)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise ShardError(f"shard file {path} is truncated or unreadable ({err}); rebuild the "
                         "shards") from err
    if array.ndim != 2 or array.shape != (rows, seq_len):
        raise ShardError(f"shard file {path} has shape {array.shape}, its manifest says "
                         f"({rows}, {seq_len}); rebuild the shards")
    return array


def _check_token_range(path: Path, tokens: np.ndarray, vocab_size: int,
                       sample_rows: int = 4096) -> None:
    """Token ids within [0, vocab_size), checked on up to ``sample_rows`` evenly spaced rows (first
    and last included): cheap at open; ``data.verify_checksums`` checks every byte."""
    rows = np.unique(np.linspace(0, tokens.shape[0] - 1, min(sample_rows, tokens.shape[0]))
                     .astype(np.int64))
    sample = np.asarray(tokens[rows])
    low, high = int(sample.min()), int(sample.max())
    if low < 0 or high >= vocab_size:
        raise ShardError(f"shard file {path} holds token id {high if high >= vocab_size else low}, "
                         f"outside the tokenizer's {vocab_size} ids; rebuild the shards")
