"""The ``shards`` stage: tokenize a corpus into the engine's token shards (``minilm_jax.data.shards``).

Texts are assigned to train / validation / test by a seeded permutation of their indices (exact counts,
or fractions of the corpus; a counting pass over the sources comes first), then tokenized in order by a
pool of workers (results are consumed in order: the output does not depend on the number of workers).
Rows have ``seq_len`` tokens:

* ``padded``: one text per row, ``<s> ids </s>`` then padding; a longer text is truncated
  (``overflow=truncate``) or continued in further rows (``overflow=split``);
* ``packed``: each text becomes ``<s> ids </s>`` pieces (split into pieces of ``seq_len - 2`` ids if
  longer) and pieces are packed greedily into rows; ``segments`` arrays number the pieces of a row
  1, 2, ... (0 at padding) so that pieces never attend to each other.

Rows are streamed: each split keeps one block of ``block_rows`` rows in memory and appends full blocks
to its ``.npy`` file (``ShardWriter``), so memory does not grow with the corpus (beyond one byte per
text for the split assignment). The files are byte-identical to those of ``write_shards`` on whole
arrays, whatever the block size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.filter_stage import parallel_map
from minilm_jax.corpus.manifest import atomic_output_dir, check_output_free, read_stage_manifest
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.sources import ReadStats, SourceSpec, fingerprint, iter_documents
from minilm_jax.data.baselines import write_baselines
from minilm_jax.data.shards import ShardWriter
from minilm_jax.tokenizer import Tokenizer, load_tokenizer

SPLITS = ("train", "validation", "test")
MODES = ("padded", "packed")
OVERFLOWS = ("truncate", "split")
_BATCH_TEXTS = 512
_BATCH_CHARS = 1 << 18  # long documents: smaller batches, so that every worker gets some
BLOCK_ROWS = 2048  # rows per split held in memory before they are written
_worker: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class ShardConfig:
    """How texts become rows; ``valid``/``test`` below 1 are fractions, otherwise counts."""

    seq_len: int = 128
    mode: str = "padded"
    overflow: str = "truncate"
    valid: float = 0.01
    test: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CorpusError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.overflow not in OVERFLOWS:
            raise CorpusError(f"overflow must be one of {OVERFLOWS}, got {self.overflow!r}")
        if self.seq_len < 3:
            raise CorpusError(f"seq_len must be at least 3, got {self.seq_len}")
        if self.valid < 0 or self.test < 0:
            raise CorpusError("validation and test sizes must not be negative")


def split_sizes(n: int, valid: float, test: float) -> tuple[int, int, int]:
    """(train, validation, test) counts for ``n`` texts."""
    def count(x: float) -> int:
        return int(round(x * n)) if x < 1 else int(x)

    n_valid, n_test = count(valid), count(test)
    if n_valid + n_test >= n:
        raise CorpusError(f"corpus too small: {n} texts cannot give {n_valid} validation and {n_test} test "
                          "texts and a non-empty train split")
    return n - n_valid - n_test, n_valid, n_test


def split_assignment(n: int, valid: float, test: float, seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of each text, from a seeded permutation.

    One byte per text (the permutation, 4 bytes per text below 2**31 texts, is freed on return);
    the same permutation as ``np.random.default_rng(seed).permutation(n)``.
    """
    _, n_valid, n_test = split_sizes(n, valid, test)
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    np.random.default_rng(seed).shuffle(order)
    assignment = np.zeros(n, dtype=np.int8)
    assignment[order[:n_valid]] = 1
    assignment[order[n_valid:n_valid + n_test]] = 2
    return assignment


RowSink = Callable[[np.ndarray, np.ndarray], None]


class RowBuffer:
    """Rows of ``seq_len`` int32 tokens (and segment ids) in blocks of ``block`` rows.

    Without ``emit`` every block is kept (:meth:`arrays` joins them). With ``emit``, a full block is
    handed to ``emit(tokens, segments)`` (which must not keep the arrays) and reused, so memory stays
    at one block; :meth:`flush` hands over the last, partial block.
    """

    def __init__(self, seq_len: int, pad_id: int, block: int = BLOCK_ROWS, emit: RowSink | None = None) -> None:
        self.seq_len, self.pad_id, self.block, self.emit = seq_len, pad_id, block, emit
        self._tokens: list[np.ndarray] = []
        self._segments: list[np.ndarray] = []
        self._filled = 0  # rows in the last block
        self.rows = 0

    def append(self, tokens: list[int], segments: list[int]) -> None:
        if not self._tokens or self._filled == self.block:
            self._tokens.append(np.full((self.block, self.seq_len), self.pad_id, dtype=np.int32))
            self._segments.append(np.zeros((self.block, self.seq_len), dtype=np.int32))
            self._filled = 0
        self._tokens[-1][self._filled, :len(tokens)] = tokens
        self._segments[-1][self._filled, :len(segments)] = segments
        self._filled += 1
        self.rows += 1
        if self.emit is not None and self._filled == self.block:
            self.flush()

    def flush(self) -> None:
        """Hand the rows of the current block to ``emit`` and clear the block (nothing without ``emit``)."""
        if self.emit is not None and self._filled:
            self.emit(self._tokens[-1][:self._filled], self._segments[-1][:self._filled])
            self._tokens[-1].fill(self.pad_id)
            self._segments[-1].fill(0)
            self._filled = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows (tokens, segments); only without ``emit``."""
        if self.emit is not None:
            raise CorpusError("RowBuffer.arrays: the rows were emitted, not kept")
        if not self._tokens:
            empty = np.zeros((0, self.seq_len), dtype=np.int32)
            return empty, empty
        return (np.concatenate(self._tokens)[:self.rows], np.concatenate(self._segments)[:self.rows])


class RowBuilder:
    """Turns token-id lists into rows for one split (padded or packed)."""

    def __init__(self, cfg: ShardConfig, bos: int, eos: int, pad: int, *, emit: RowSink | None = None,
                 block: int = BLOCK_ROWS) -> None:
        self.cfg, self.bos, self.eos = cfg, bos, eos
        self.buffer = RowBuffer(cfg.seq_len, pad, block, emit)
        self.texts = self.truncated_tokens = self.empty_texts = 0
        self._row: list[int] = []
        self._seg: list[int] = []

    def add(self, ids: list[int]) -> None:
        self.texts += 1
        if not ids:
            self.empty_texts += 1
            return
        body = self.cfg.seq_len - 2
        chunks = [ids[i:i + body] for i in range(0, len(ids), body)]
        if self.cfg.mode == "padded" and self.cfg.overflow == "truncate":
            self.truncated_tokens += len(ids) - len(chunks[0])
            chunks = chunks[:1]
        for chunk in chunks:
            piece = [self.bos, *chunk, self.eos]
            if self.cfg.mode == "padded":
                self.buffer.append(piece, [1] * len(piece))
                continue
            if len(self._row) + len(piece) > self.cfg.seq_len:
                self.flush()
            segment = (self._seg[-1] + 1) if self._seg else 1
            self._row.extend(piece)
            self._seg.extend([segment] * len(piece))

    def flush(self) -> None:
        """Close the row being packed."""
        if self._row:
            self.buffer.append(self._row, self._seg)
            self._row, self._seg = [], []

    def finish(self) -> None:
        """Close the row being packed and hand the last rows to the sink."""
        self.flush()
        self.buffer.flush()


def _init_worker(path: str, sha256: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # HF tokenizers in a forked worker
    _worker.clear()
    _worker["path"], _worker["sha256"] = path, sha256


def worker_tokenizer() -> Tokenizer:
    """The tokenizer of this worker process, loaded once and checked against the expected sha256."""
    if "tok" not in _worker:
        tok = load_tokenizer(_worker["path"])
        if tok.sha256 != _worker["sha256"]:
            raise CorpusError(f"tokenizer {_worker['path']} changed while it was in use")
        _worker["tok"] = tok
    return _worker["tok"]


def _encode_batch(item: tuple[int, list[str]]) -> tuple[int, list[np.ndarray], int]:
    first, texts = item
    ids = [np.asarray(x, dtype=np.int32) for x in worker_tokenizer().encode_batch(texts)]
    return first, ids, sum(len(t.encode("utf-8")) for t in texts)


def _text_batches(specs: list[SourceSpec], on_decode_error: str) -> Iterator[tuple[int, list[str]]]:
    """(index of the first text, texts) batches of at most ``_BATCH_TEXTS`` texts or about ``_BATCH_CHARS``."""
    index, batch, chars = 0, [], 0
    for spec in specs:
        for text in iter_documents(spec, on_decode_error=on_decode_error):
            batch.append(text)
            chars += len(text)
            if len(batch) >= _BATCH_TEXTS or chars >= _BATCH_CHARS:
                yield index, batch
                index, batch, chars = index + len(batch), [], 0
    if batch:
        yield index, batch


def count_texts(specs: list[SourceSpec], on_decode_error: str, stats: ReadStats | None = None) -> int:
    """Number of texts of the sources (from the manifest for a stage output, else by reading;
    ``stats`` counts the undecodable lines skipped)."""
    total = 0
    for spec in specs:
        if spec.kind == "corpus" and spec.option("limit") is None:
            total += read_stage_manifest(spec.location, ("filter", "control"))["counts"]["total"]["sequences"]
        else:
            total += sum(1 for _ in iter_documents(spec, on_decode_error=on_decode_error, stats=stats))
    return total


def _split_sink(writer: ShardWriter, split: str, packed: bool) -> RowSink:
    def emit(tokens: np.ndarray, segments: np.ndarray) -> None:
        writer.append(split, tokens, segments if packed else None)

    return emit


def build_rows(specs: list[SourceSpec], tok: Tokenizer, cfg: ShardConfig, assignment: np.ndarray, *,
               workers: int, on_decode_error: str, progress: bool, writer: ShardWriter | None = None,
               block_rows: int = BLOCK_ROWS) -> dict[str, RowBuilder]:
    """Tokenize every text and route it to its split's row builder (streamed to ``writer`` if given)."""
    builders = {name: RowBuilder(cfg, tok.bos_id, tok.eos_id, tok.pad_id, block=block_rows,
                                 emit=_split_sink(writer, name, cfg.mode == "packed") if writer else None)
                for name in SPLITS}
    seen = 0
    with progress_bar(progress, unit="B", unit_scale=True, desc="shards") as bar:
        for first, ids_list, size in parallel_map(_encode_batch, _text_batches(specs, on_decode_error), workers,
                                                  _init_worker, (tok.path, tok.sha256)):
            for offset, ids in enumerate(ids_list):
                if first + offset >= len(assignment):
                    raise CorpusError("the corpus changed while building shards (more texts than counted)")
                builders[SPLITS[assignment[first + offset]]].add(ids.tolist())
            seen = first + len(ids_list)
            bar.update(size)
    if seen != len(assignment):
        raise CorpusError(f"the corpus changed while building shards ({seen} texts, {len(assignment)} counted)")
    for builder in builders.values():
        builder.finish()
    return builders


def run_shards(sources: list[SourceSpec], tokenizer_path: str, out_dir: str | os.PathLike, *,
               cfg: ShardConfig = ShardConfig(), workers: int = 1, on_decode_error: str = "skip",
               overwrite: bool = False, progress: bool = False, block_rows: int = BLOCK_ROWS) -> dict[str, Any]:
    """Build a shard set from ``sources``, streaming rows to disk ``block_rows`` at a time; return its manifest."""
    check_output_free(out_dir, overwrite)
    tok = load_tokenizer(tokenizer_path)
    inputs = [fingerprint(s) for s in sources]
    read = ReadStats()
    n = count_texts(sources, on_decode_error, read)
    if n == 0:
        raise CorpusError(f"corpus is empty: no texts in {', '.join(map(str, sources))}")
    assignment = split_assignment(n, cfg.valid, cfg.test, cfg.seed)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, \
            ShardWriter(tmp, seq_len=cfg.seq_len, pad_id=tok.pad_id, tokenizer=tok.info, splits=SPLITS) as writer:
        builders = build_rows(sources, tok, cfg, assignment, workers=workers, on_decode_error=on_decode_error,
                              progress=progress, writer=writer, block_rows=block_rows)
        manifest = writer.finish({**_provenance(inputs, tok, cfg, builders),
                                  **read.undecodable_counts()})
        write_baselines(tmp)  # the unigram / bigram perplexities a model must beat
    return manifest


def _provenance(inputs: list[dict[str, Any]], tok: Tokenizer, cfg: ShardConfig,
                builders: dict[str, RowBuilder]) -> dict[str, Any]:
    counts = {name: {"texts": b.texts, "rows": b.buffer.rows, "truncated_tokens": b.truncated_tokens,
                     "empty_texts": b.empty_texts} for name, b in builders.items()}
    return {"stage": "shards", "inputs": inputs, "tokenizer": {"path": tok.path, "sha256": tok.sha256,
            "kind": tok.kind}, "parameters": dataclasses.asdict(cfg), "counts": counts,
            "special_ids": tok.special_id_map}


def check_shards_tokenizer(shard_dir: str | os.PathLike, tok: Tokenizer) -> dict[str, Any]:
    """The shard manifest, if it was built with ``tok`` (same sha256); else a clear error."""
    from minilm_jax.data.shards import read_manifest

    manifest = read_manifest(shard_dir)
    recorded = manifest["tokenizer"]["sha256"]
    if recorded != tok.sha256:
        raise CorpusError(f"tokenizer mismatch: the shards in {shard_dir} were built with a tokenizer of "
                          f"sha256 {recorded[:12]}…, but {Path(tok.path).name} has sha256 {tok.sha256[:12]}…")
    return manifest
