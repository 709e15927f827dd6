"""Streaming shard writer and the streaming ``shards`` stage: same bytes as whole arrays, bounded memory."""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shared_path
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.shards_build import RowBuffer, ShardConfig, run_shards, split_assignment, split_sizes
from minilm_jax.corpus.sources import SourceSpec
from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.data.shards import (
    NpyRowWriter,
    ShardError,
    ShardWriter,
    TokenizerInfo,
    open_split,
    read_manifest,
    write_shards,
)

TOKENIZER = TokenizerInfo(sha256="word-level-test", vocab_size=500)


def _wiki_lines() -> list[str]:
    text = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _word_rows(lines: list[str], seq_len: int = 32, vocab: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Padded word-id rows of real text (RoBERTa specials) and their segment ids."""
    counts = collections.Counter(w for line in lines for w in line.split())
    ids = {w: i + 5 for i, (w, _) in enumerate(counts.most_common(vocab - 5))}
    tokens = np.ones((len(lines), seq_len), dtype=np.int32)
    for r, line in enumerate(lines):
        row = [0, *[ids.get(w, 3) for w in line.split()][:seq_len - 2], 2]
        tokens[r, :len(row)] = row
    return tokens, (tokens != 1).astype(np.int32)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_npy_row_writer_is_np_save_byte_for_byte(tmp_path):
    tokens, _ = _word_rows(_wiki_lines()[:500])
    writer = NpyRowWriter(tmp_path / "rows.npy", tokens.shape[1])
    for start, stop in [(0, 0), (0, 1), (1, 38), (38, 300), (300, 500)]:
        writer.append(tokens[start:stop].astype(np.int64))
    with pytest.raises(ShardError, match=r"expected \[n, 32\]"):
        writer.append(tokens[:, :8])
    digest = writer.commit()
    np.save(tmp_path / "whole.npy", tokens)
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()
    assert digest == hashlib.sha256((tmp_path / "whole.npy").read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy", "whole.npy"]  # no temporary left


def test_npy_header_length_does_not_depend_on_the_row_count(tmp_path):
    writer = NpyRowWriter(tmp_path / "rows.npy", 128)
    for rows in (1, 10**6, 10**12, 10**18):
        writer.rows = rows
        assert writer._write_header() == writer._data_offset  # what commit() relies on
    writer.discard()
    assert not list(tmp_path.iterdir())


def test_shard_writer_in_chunks_equals_write_shards(tmp_path):
    tokens, segments = _word_rows(_wiki_lines()[:900])
    splits = {"train": tokens[:700], "validation": tokens[700:800], "test": tokens[800:]}
    seg_splits = {"train": segments[:700], "validation": segments[700:800], "test": segments[800:]}
    whole = write_shards(tmp_path / "whole", splits, pad_id=1, tokenizer=TOKENIZER, segments=seg_splits,
                         source={"note": "x"})
    with ShardWriter(tmp_path / "chunks", seq_len=32, pad_id=1, tokenizer=TOKENIZER,
                     splits=("train", "validation", "test")) as writer:
        for start in range(0, 900, 37):  # chunks that straddle the split boundaries
            for name, lo, hi in (("train", 0, 700), ("validation", 700, 800), ("test", 800, 900)):
                a, b = max(start, lo), min(start + 37, hi)
                if a < b:
                    writer.append(name, tokens[a:b], segments[a:b])
        chunked = writer.finish({"note": "x"})
    assert chunked == whole and list(chunked["splits"]) == ["train", "validation", "test"]
    assert _files(tmp_path / "chunks") == _files(tmp_path / "whole")
    split = open_split(tmp_path / "chunks", "validation", verify=True)
    assert np.array_equal(split.tokens, tokens[700:800]) and np.array_equal(split.segments, segments[700:800])
    assert whole["splits"]["train"]["num_tokens"] == int((tokens[:700] != 1).sum())


def test_shard_writer_failure_leaves_no_shard(tmp_path):
    tokens, segments = _word_rows(_wiki_lines()[:100])
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="stop"):
        with ShardWriter(out, seq_len=32, pad_id=1, tokenizer=TOKENIZER, splits=("train",)) as writer:
            writer.append("train", tokens[:50])
            raise RuntimeError("stop")
    assert not list(out.iterdir())
    with ShardWriter(out, seq_len=32, pad_id=1, tokenizer=TOKENIZER, splits=("train",)) as writer:
        with pytest.raises(ShardError, match="not one of"):
            writer.append("dev", tokens)
        writer.append("train", tokens[:10], segments[:10])
        with pytest.raises(ShardError, match="with every chunk or with none"):
            writer.append("train", tokens[10:20])
        with pytest.raises(ShardError, match="segments of shape"):
            writer.append("train", tokens[10:20], segments[10:15])
    assert not list(out.iterdir())
    with pytest.raises(ShardError, match="no rows written"):
        ShardWriter(out, seq_len=32, pad_id=1, tokenizer=TOKENIZER, splits=("train",)).finish()
    with pytest.raises(ShardError, match="segments of 'train' have shape"):  # checked before any file is written
        write_shards(out, {"train": tokens, "test": tokens}, pad_id=1, tokenizer=TOKENIZER,
                     segments={"test": segments, "train": segments[:5]})
    with pytest.raises(ShardError, match="split 'test' is empty"):
        write_shards(out, {"train": tokens, "test": tokens[:0]}, pad_id=1, tokenizer=TOKENIZER)
    assert not list(out.iterdir())


def test_failure_while_finishing_leaves_no_manifest(tmp_path, monkeypatch):
    tokens, _ = _word_rows(_wiki_lines()[:100])
    write_shards(tmp_path, {"train": tokens[:60], "test": tokens[60:]}, pad_id=1, tokenizer=TOKENIZER)
    commit, calls = NpyRowWriter.commit, []

    def failing_commit(self: NpyRowWriter) -> str:
        calls.append(self.path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return commit(self)

    monkeypatch.setattr(NpyRowWriter, "commit", failing_commit)
    with pytest.raises(OSError, match="disk full"):
        with ShardWriter(tmp_path, seq_len=32, pad_id=1, tokenizer=TOKENIZER, splits=("train", "test")) as writer:
            writer.append("train", tokens[:30])
            writer.append("test", tokens[30:])
            writer.finish()
    with pytest.raises(ShardError, match="no manifest.json"):  # new train.npy, old test.npy: not readable
        read_manifest(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.npy", "train.npy"]


def test_split_assignment_is_the_seeded_permutation():
    # the int32 shuffle must pick the same texts as np.random.default_rng(seed).permutation(n) did,
    # so that shards built before streaming keep their validation and test texts
    for n, valid, test, seed in ((100, 0.1, 5, 0), (70_001, 0.01, 0.02, 7)):
        order = np.random.default_rng(seed).permutation(n)
        n_valid, n_test = split_sizes(n, valid, test)[1:]
        expected = np.zeros(n, dtype=np.int8)
        expected[order[:n_valid]], expected[order[n_valid:n_valid + n_test]] = 1, 2
        assert np.array_equal(split_assignment(n, valid, test, seed), expected)


@pytest.mark.parametrize("n_rows", [12, 14])  # a partial last block, and an exact multiple of the block
def test_row_buffer_emits_every_row_once(n_rows):
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    buffer = RowBuffer(seq_len=4, pad_id=1, block=7, emit=lambda t, s: chunks.append((t.copy(), s.copy())))
    for i in range(n_rows):
        buffer.append([0, 100 + i, 2][:1 + i % 3], [1] * (1 + i % 3))
    buffer.flush()
    buffer.flush()
    tokens = np.concatenate([t for t, _ in chunks])
    assert [len(t) for t, _ in chunks] == [7, n_rows - 7] and buffer.rows == n_rows
    assert tokens[:3].tolist() == [[0, 1, 1, 1], [0, 101, 1, 1], [0, 102, 2, 1]]
    assert np.array_equal(np.concatenate([s for _, s in chunks]) > 0, tokens != 1)
    with pytest.raises(CorpusError, match="emitted, not kept"):
        buffer.arrays()


@pytest.fixture(scope="module")
def wiki_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Real WikiText-2 lines (one text per line) and a SentencePiece BPE-1000 model trained on them."""
    lines = _wiki_lines()
    root = tmp_path_factory.mktemp("stream")
    (root / "wiki.txt").write_text("\n".join(lines[:2500]) + "\n", encoding="utf-8")
    (root / "bpe.model").write_bytes(train_sentencepiece(lines[:2500], 1000, "bpe"))
    return root / "wiki.txt", root / "bpe.model"


@pytest.mark.parametrize("cfg", [ShardConfig(seq_len=48, mode="packed", valid=0.1, test=40, seed=3),
                                 ShardConfig(seq_len=48, overflow="split", valid=0.05, test=0.05)],
                         ids=["packed", "padded-split"])
def test_stage_bytes_do_not_depend_on_block_size_or_workers(wiki_corpus, tmp_path, cfg):
    text, model = wiki_corpus
    source = [SourceSpec.parse(f"text:{text}")]
    run_shards(source, str(model), tmp_path / "whole", cfg=cfg, block_rows=20_000)  # one block, written at the end
    run_shards(source, str(model), tmp_path / "small", cfg=cfg, block_rows=7)
    run_shards(source, str(model), tmp_path / "workers", cfg=cfg, block_rows=7, workers=2)
    expected = _files(tmp_path / "whole")
    assert _files(tmp_path / "small") == expected and _files(tmp_path / "workers") == expected
    manifest = json.loads(expected["manifest.json"])
    assert manifest["splits"]["test"]["num_sequences"] >= (40 if cfg.mode == "padded" else 1)
    assert ("train.segments.npy" in expected) == (cfg.mode == "packed")
    for name, entry in manifest["splits"].items():
        rows = open_split(tmp_path / "small", name, verify=True).tokens
        assert rows.shape == (entry["num_sequences"], 48) and manifest["source"]["counts"][name]["rows"] == len(rows)


_MEASURE = """
import json, resource, sys, time
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.shards_build import RowBuffer, ShardConfig, run_shards, split_assignment, split_sizes
from minilm_jax.corpus.sources import SourceSpec
from minilm_jax.tokenizer import load_tokenizer
text, model, out, seq_len, workers, block_rows = sys.argv[1:7]
load_tokenizer(model).encode_batch(["warm up the tokenizer"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
run_shards([SourceSpec("text", text)], model, out, cfg=ShardConfig(seq_len=int(seq_len)),
           workers=int(workers), block_rows=int(block_rows))
print(json.dumps({"baseline_kib": before, "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "seconds": time.perf_counter() - start}))
"""


def _repeat_lines(lines: list[str], path: Path, megabytes: float) -> int:
    """Write ``lines`` over and over to ``path`` until it holds ``megabytes`` of text; return its size."""
    size, target = 0, int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as handle:
        while size < target:
            for line in lines:
                handle.write(line + "\n")
                size += len(line.encode("utf-8")) + 1
                if size >= target:
                    break
    return size


def _measure_stage(wiki_corpus, tmp_path: Path, megabytes: float, seq_len: int, workers: int,
                   block_rows: int) -> tuple[dict[str, float], int]:
    """Run the stage in a fresh interpreter; its peak RSS figures (KiB) and the size of the shard set."""
    text = tmp_path / "big.txt"
    _repeat_lines(_wiki_lines(), text, megabytes)
    out = tmp_path / "shards"
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(text), str(wiki_corpus[1]), str(out), str(seq_len),
                             str(workers), str(block_rows)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures, sum(p.stat().st_size for p in out.iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_stage_memory_stays_bounded(wiki_corpus, tmp_path, workers):
    # 6 MB of real text -> 512-token padded rows: ~28 MB of shards (the old in-memory build held ~4x that)
    figures, shard_bytes = _measure_stage(wiki_corpus, tmp_path, 6, seq_len=512, workers=workers, block_rows=64)
    growth_kib = max(figures["self_kib"], figures["workers_kib"]) - figures["baseline_kib"]
    assert shard_bytes > 25e6
    assert growth_kib * 1024 < shard_bytes / 4, (figures, shard_bytes)


@pytest.mark.slow(
    covered_by=("tests/test_shards_stream.py::test_stage_memory_stays_bounded",))
def test_stage_memory_stays_bounded_at_200_megabytes(wiki_corpus, tmp_path):
    figures, shard_bytes = _measure_stage(wiki_corpus, tmp_path, 200, seq_len=128, workers=2, block_rows=2048)
    growth_kib = max(figures["self_kib"], figures["workers_kib"]) - figures["baseline_kib"]
    assert shard_bytes > 200e6
    assert growth_kib * 1024 < 64e6, (figures, shard_bytes)
