"""Throughput benchmark of the corpus pipeline: ``python -m minilm_jax.corpus.bench``.

Prints MB/s of raw text (UTF-8 bytes) for: the constrained filter on one core (window rule), the whole
``filter`` stage with N worker processes (reading, filtering, dedup, packing, writing), SentencePiece
tokenization on one core, and the whole streaming ``shards`` stage with N worker processes (counting
pass, tokenizing, writing rows). Texts: WikiText-2 articles and AO-CHILDES transcripts from the shared data
folder if present (``$MINILM_SHARED_DATA``, else ``../shared/data`` next to the repository), or
``--text FILE`` (one document per line), else seeded synthetic text. A figure, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.corpus.constrained import FilterConfig, FilterCounts, VocabularyChecker, filter_document
from minilm_jax.corpus.filter_stage import run_filter
from minilm_jax.corpus.text_selection import load_morphemes
from minilm_jax.corpus.shards_build import run_shards
from minilm_jax.corpus.sources import SourceSpec, iter_documents
from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.corpus.vocab import load_word_list, write_word_list


def shared_data_dir() -> Path | None:
    env = os.environ.get("MINILM_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None


def _synthetic(words: list[str], n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(50, 600))) for _ in range(n_docs)]


def load_texts(args: argparse.Namespace) -> tuple[dict[str, list[str]], Path | None]:
    """Benchmark documents by name, and a vocabulary file to filter with."""
    shared = shared_data_dir()
    if args.text:
        docs = {"text": list(iter_documents(SourceSpec("text", args.text)))}
        vocab = Path(args.vocab) if args.vocab else None
        return docs, vocab
    if shared is not None:
        wiki = shared / "wikitext2" / "tokenized"
        docs = {"wikitext2 articles": list(iter_documents(SourceSpec("wikitext", str(wiki / "*.tokens")))),
                "aochildes transcripts": list(iter_documents(SourceSpec(
                    "aochildes", str(shared / "aochildes" / "original_transcripts"),
                    (("group_by", "transcript_id"),))))}
        vocab = Path(args.vocab) if args.vocab else shared / "vocab" / "AOChildes_word_frequency.csv"
        return docs, vocab
    words = sorted(load_morphemes())
    return {"synthetic": _synthetic(words, 3000, 0)}, None


def _repeat_to(docs: list[str], megabytes: float) -> list[str]:
    out, size = [], 0
    while size < megabytes * 1e6:
        for doc in docs:
            out.append(doc)
            size += len(doc.encode("utf-8"))
            if size >= megabytes * 1e6:
                break
    return out


def _write_lines(docs: list[str], path: Path) -> Path:
    """Write ``docs`` one per line (newlines inside a document become spaces); return ``path``."""
    path.write_text("\n".join(d.replace("\n", " ") for d in docs) + "\n", encoding="utf-8")
    return path


def bench_filter_core(docs: list[str], vocab: frozenset[str]) -> tuple[float, FilterCounts]:
    """One-core MB/s of the window filter (no I/O)."""
    checker, cfg, counts, oov = VocabularyChecker(vocab), FilterConfig(), FilterCounts(), Counter()
    start = time.perf_counter()
    for doc in docs:
        filter_document(doc, checker, cfg, counts, oov)
    return counts.bytes / 1e6 / (time.perf_counter() - start), counts


def bench_filter_stage(docs: list[str], vocab_path: Path, workers: int) -> float:
    """End-to-end MB/s of the filter stage with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        src = _write_lines(docs, Path(tmp) / "docs.txt")
        try:
            report = run_filter([SourceSpec("text", str(src))], vocab_path, Path(tmp) / "out", workers=workers)
        except Exception as err:  # nothing kept, etc.: report it, do not fail the benchmark
            print(f"  filter stage with {workers} workers: {err}")
            return float("nan")
        return report["mb_per_s"]


def bench_tokenize(docs: list[str], model: Path) -> float:
    """One-core MB/s of SentencePiece encoding."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    size = sum(len(d.encode("utf-8")) for d in docs)
    start = time.perf_counter()
    for i in range(0, len(docs), 256):
        sp.encode(docs[i:i + 256], out_type=int)
    return size / 1e6 / (time.perf_counter() - start)


def bench_shards_stage(docs: list[str], model: Path, workers: int) -> float:
    """End-to-end MB/s of the streaming ``shards`` stage (counting pass, tokenizing, 128-token padded rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = _write_lines(docs, Path(tmp) / "docs.txt")
        start = time.perf_counter()
        run_shards([SourceSpec("text", str(src))], str(model), Path(tmp) / "shards", workers=workers)
        return src.stat().st_size / 1e6 / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.corpus.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--text", help="benchmark text, one document per line")
    parser.add_argument("--vocab", help="vocabulary file for the filter (default: AO-CHILDES from the shared data)")
    parser.add_argument("--megabytes", type=float, default=8.0, help="text per measurement (documents repeated)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the parallel figures (default: the CPU count)")
    parser.add_argument("--vocab_size", type=int, default=2000, help="SentencePiece size for the tokenize figure")
    args = parser.parse_args(argv)
    sets, vocab_path = load_texts(args)
    with tempfile.TemporaryDirectory() as tmp:
        if vocab_path is None:
            vocab_path = Path(tmp) / "vocab.csv"
            words = sorted(load_morphemes())
            write_word_list(vocab_path, [(w, 1) for w in words[: len(words) // 2]])
        vocab = load_word_list(vocab_path)
        print(f"vocabulary: {vocab_path} ({len(vocab)} words); cores: {os.cpu_count()}")
        for name, docs in sets.items():
            docs = _repeat_to(docs, args.megabytes)
            mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
            core, counts = bench_filter_core(docs, vocab)
            print(f"[{name}] {mb:.1f} MB, {counts.documents} documents, {counts.units} windows, "
                  f"{counts.kept} kept")
            print(f"  filter, one core (window rule, no I/O): {core:8.2f} MB/s")
            for workers in sorted({1, args.workers}):
                stage = bench_filter_stage(docs, vocab_path, workers)
                print(f"  filter stage, {workers} worker(s), end to end: {stage:8.2f} MB/s")
            model = Path(tmp) / "bench.model"
            model.write_bytes(train_sentencepiece(docs[:2000], args.vocab_size, "bpe"))
            print(f"  SentencePiece BPE-{args.vocab_size} encode, one core: {bench_tokenize(docs, model):8.2f} MB/s")
            for workers in sorted({1, args.workers}):
                stage = bench_shards_stage(docs, model, workers)
                print(f"  shards stage (streaming), {workers} worker(s), end to end: {stage:8.2f} MB/s")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
