"""The ``filter`` stage: sources -> constrained corpus (``sequences.jsonl``), report and manifest.

Documents are read in the main process, in order, and filtered in batches by a pool of worker
processes (results are taken in submission order, so the output does not depend on the number of
workers; a few batches per worker are in flight at a time, so memory stays bounded). The main process
drops exact duplicates (by a 128-bit BLAKE2b digest), packs the kept units per source and writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from minilm_jax.corpus.constrained import FilterConfig, FilterCounts, VocabularyChecker, filter_document
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.manifest import (
    SEQUENCES_FILE,
    JsonlWriter,
    atomic_output_dir,
    check_output_free,
    write_stage_manifest,
)
from minilm_jax.corpus.sequence_packing import Packer
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.sources import ReadStats, SourceSpec, check_unique_names, fingerprint, iter_documents
from minilm_jax.storage import atomic_write_json, file_sha256

BATCH_BYTES = 1 << 18
BATCH_DOCS = 2048
_OOV_KEEP = 1 << 20
IN_FLIGHT_PER_WORKER = 4  # parallel_map: batches submitted ahead of the consumer, per worker
REPORT_FILE = "report.json"

_worker: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class PackConfig:
    """How kept units become sequences."""

    pack: bool = True
    max_len: int = 128
    ratio: float = 1.2
    dedup: bool | None = None  # None: on for windows, off for sentences

    def dedup_for(self, unit: str) -> bool:
        return self.dedup if self.dedup is not None else unit == "window"


def document_batches(specs: list[SourceSpec], on_decode_error: str,
                     read_stats: dict[str, ReadStats]) -> Iterator[tuple[str, list[str]]]:
    """``(source name, documents)`` batches of about ``BATCH_BYTES``; a batch never mixes sources."""
    for spec in specs:
        stats = read_stats.setdefault(spec.name, ReadStats())
        batch: list[str] = []
        size = 0
        for doc in iter_documents(spec, on_decode_error=on_decode_error, stats=stats):
            batch.append(doc)
            size += len(doc)
            if size >= BATCH_BYTES or len(batch) >= BATCH_DOCS:
                yield spec.name, batch
                batch, size = [], 0
        if batch:
            yield spec.name, batch
        if stats.documents == 0:
            raise CorpusError(f"corpus is empty: source {spec} has no documents")


def _init_filter_worker(vocab: frozenset[str], cfg: FilterConfig) -> None:
    _worker["checker"] = VocabularyChecker(vocab)
    _worker["cfg"] = cfg


def _filter_batch(item: tuple[str, list[str]]) -> tuple[str, list[str], FilterCounts, Counter[str]]:
    name, docs = item
    counts, oov = FilterCounts(), Counter()
    kept: list[str] = []
    for doc in docs:
        kept.extend(filter_document(doc, _worker["checker"], _worker["cfg"], counts, oov))
    return name, kept, counts, oov


def parallel_map(func: Callable, items: Iterable, workers: int, initializer: Callable,
                 initargs: tuple) -> Iterator:
    """Ordered map over ``items``: in-process for one worker, else a process pool.

    At most ``IN_FLIGHT_PER_WORKER x workers`` items are submitted and not yet consumed, so memory
    stays bounded when the consumer is slower than the workers (``Pool.imap`` would queue every result).
    """
    if workers <= 1:
        initializer(*initargs)
        yield from map(func, items)
        return
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(func, (item,)))
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class SequenceSink:
    """Deduplicates, packs per source and writes sequences; keeps per-source counts."""

    def __init__(self, writer: JsonlWriter, pack: PackConfig, dedup: bool) -> None:
        self.writer = writer
        self.pack = pack
        self.dedup = dedup
        self._seen: set[bytes] = set()
        self._packer = Packer(pack.max_len, pack.ratio)
        self._source: str | None = None
        self.duplicates: Counter[str] = Counter()
        self.sequences: Counter[str] = Counter()
        self.words: Counter[str] = Counter()

    def _emit(self, text: str | None) -> None:
        if text is not None and self._source is not None:
            self.writer.write(text, source=self._source)
            self.sequences[self._source] += 1
            self.words[self._source] += len(text.split())

    def add(self, source: str, units: Iterable[str]) -> None:
        if source != self._source:
            self._emit(self._packer.flush())
            self._source = source
        for unit in units:
            if self.dedup:
                digest = hashlib.blake2b(unit.encode("utf-8"), digest_size=16).digest()
                if digest in self._seen:
                    self.duplicates[source] += 1
                    continue
                self._seen.add(digest)
            self._emit(self._packer.add(unit) if self.pack.pack else unit)

    def close(self) -> None:
        self._emit(self._packer.flush())


def _vocab_entry(vocab_path: Path, words: frozenset[str]) -> dict[str, Any]:
    return {"path": str(vocab_path), "sha256": file_sha256(vocab_path), "words": len(words)}


def _prune(counter: Counter[str]) -> None:
    if len(counter) > 2 * _OOV_KEEP:
        keep = counter.most_common(_OOV_KEEP)
        counter.clear()
        counter.update(dict(keep))


def run_filter(sources: list[SourceSpec], vocab_path: Path, out_dir: str | os.PathLike, *,
               cfg: FilterConfig = FilterConfig(), pack: PackConfig = PackConfig(), workers: int = 1,
               on_decode_error: str = "skip", overwrite: bool = False, progress: bool = False,
               top_oov: int = 50) -> dict[str, Any]:
    """Filter ``sources`` against the vocabulary at ``vocab_path``; write the stage output; return the report."""
    from minilm_jax.corpus.vocab import load_word_list

    if not sources:
        raise CorpusError("no sources given")
    check_unique_names(sources)
    check_output_free(out_dir, overwrite)
    words = load_word_list(vocab_path)
    inputs = {"sources": [fingerprint(s) for s in sources], "vocab": _vocab_entry(Path(vocab_path), words)}
    dedup = pack.dedup_for(cfg.unit)
    read_stats: dict[str, ReadStats] = {}
    per_source: dict[str, FilterCounts] = {}
    oov: Counter[str] = Counter()
    started = time.perf_counter()
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        with progress_bar(progress, unit="B", unit_scale=True, desc="filter") as bar, \
                JsonlWriter(tmp / SEQUENCES_FILE) as writer:
            sink = SequenceSink(writer, pack, dedup)
            batches = document_batches(sources, on_decode_error, read_stats)
            for name, kept, counts, batch_oov in parallel_map(
                    _filter_batch, batches, workers, _init_filter_worker, (words, cfg)):
                per_source.setdefault(name, FilterCounts()).add(counts)
                oov.update(batch_oov)
                _prune(oov)
                sink.add(name, kept)
                bar.update(counts.bytes)
            sink.close()
        seconds = time.perf_counter() - started
        report = build_report(per_source, read_stats, sink, oov, seconds, top_oov)
        if report["total"]["sequences"] == 0:
            top = ", ".join(w for w, _ in report["top_oov"][:5])
            raise CorpusError(f"nothing kept: all {report['total']['units']} {cfg.unit}s were rejected "
                              f"or too short (most frequent out-of-vocabulary words: {top})")
        atomic_write_json(tmp / REPORT_FILE, report)
        params = {"filter": dataclasses.asdict(cfg), "min_words": cfg.effective_min_words,
                  "pack": dataclasses.asdict(pack), "dedup": dedup, "on_decode_error": on_decode_error}
        write_stage_manifest(tmp, "filter", inputs=inputs, parameters=params,
                             counts={"sources": report["sources"], "total": report["total"]})
    return report


def build_report(per_source: dict[str, FilterCounts], read_stats: dict[str, ReadStats], sink: SequenceSink,
                 oov: Counter[str], seconds: float, top_oov: int) -> dict[str, Any]:
    """Per-source and total counts, top out-of-vocabulary words and throughput."""
    sources: dict[str, dict[str, Any]] = {}
    for name, stats in read_stats.items():
        counts = per_source.get(name, FilterCounts())
        sources[name] = {**dataclasses.asdict(counts), "duplicates": sink.duplicates[name],
                         "sequences": sink.sequences[name], "words": sink.words[name],
                         "undecodable_skipped": stats.undecodable_skipped,
                         "first_undecodable": stats.first_undecodable}
    total: dict[str, Any] = {}
    for entry in sources.values():
        for key, value in entry.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    mb = total.get("bytes", 0) / 1e6
    return {"sources": sources, "total": total, "seconds": round(seconds, 3),
            "mb_per_s": round(mb / seconds, 3) if seconds > 0 else None,
            "top_oov": [[w, c] for w, c in sorted(oov.items(), key=lambda kv: (-kv[1], kv[0]))[:top_oov]]}


def format_report(report: dict[str, Any], unit: str = "window", n_oov: int = 10) -> str:
    """A plain-text table of a filter/control report."""
    cols = ["documents", "units", "kept", "rejected_oov", "too_short", "duplicates", "sequences", "words"]
    head = ["source", "docs", f"{unit}s", "kept", "rejected", "too short", "dups", "sequences", "words"]
    rows = [[name] + [str(entry.get(c, 0)) for c in cols] for name, entry in report["sources"].items()]
    rows.append(["TOTAL"] + [str(report["total"].get(c, 0)) for c in cols])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    if report.get("top_oov"):
        lines.append("most frequent out-of-vocabulary words: " +
                     ", ".join(f"{w} ({c})" for w, c in report["top_oov"][:n_oov]))
    if report.get("mb_per_s") is not None:
        lines.append(f"throughput: {report['total'].get('bytes', 0) / 1e6:.2f} MB in {report['seconds']:.2f} s"
                     f" = {report['mb_per_s']:.2f} MB/s")
    skipped = report["total"].get("undecodable_skipped", 0)
    if skipped:
        first = next((e["first_undecodable"] for e in report["sources"].values() if e["first_undecodable"]), "")
        lines.append(f"skipped {skipped} undecodable line(s) (first at {first})")
    return "\n".join(lines)


def load_report(stage_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``report.json`` of a filter/control output."""
    return json.loads((Path(stage_dir) / REPORT_FILE).read_text())
