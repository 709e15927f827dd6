"""The ``control`` stage: an unconstrained corpus sampled from the same sources as a constrained one.

For each source of a ``filter`` output, windows (or sentences) are cut exactly as the filter cuts them
and those long enough (more than ``min_words`` words) are candidates, whatever their words. Each
candidate gets a pseudo-random key from (seed, source, document index, unit index); the sample is the
candidates with the smallest keys, enough to match the constrained corpus per source in number of
units (``--match units``, default) or in words (``--match words``). The sample is written in corpus
order and packed with the same rule, so the control has about as many sequences and words as the
constrained corpus, from the same source mix. Its result does not depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import os
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from minilm_jax.corpus.constrained import FilterConfig, iter_windows
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.filter_stage import REPORT_FILE, PackConfig, load_report, parallel_map
from minilm_jax.corpus.manifest import (
    SEQUENCES_FILE,
    JsonlWriter,
    atomic_output_dir,
    check_output_free,
    read_stage_manifest,
    write_stage_manifest,
)
from minilm_jax.corpus.sequence_packing import Packer
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.sources import SourceSpec, check_fingerprint, iter_documents
from minilm_jax.storage import atomic_write_json

MATCH_MODES = ("units", "words")
_worker: dict[str, Any] = {}
_BATCH_DOCS = 512


def unit_key(seed: int, source: str, doc_index: int, unit_index: int) -> float:
    """A reproducible pseudo-random number in [0, 1) for one candidate unit."""
    digest = hashlib.blake2b(f"{seed}\x00{source}\x00{doc_index}\x00{unit_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def _init_worker(cfg: FilterConfig, seed: int) -> None:
    _worker["cfg"], _worker["seed"] = cfg, seed


def _sample_batch(item: tuple[str, int, list[str], float]) -> tuple[int, list[tuple[float, int, int, str, int]]]:
    name, first, docs, threshold = item
    out = []
    size = 0
    for offset, doc in enumerate(docs):
        size += len(doc.encode("utf-8"))
        for unit_index, text, _ in iter_windows(doc, _worker["cfg"]):
            key = unit_key(_worker["seed"], name, first + offset, unit_index)
            if key < threshold:
                out.append((key, first + offset, unit_index, text, len(text.split())))
    return size, out


def _batches(spec: SourceSpec, threshold: float, on_decode_error: str) -> Iterator[tuple[str, int, list[str], float]]:
    batch: list[str] = []
    first = 0
    for index, doc in enumerate(iter_documents(spec, on_decode_error=on_decode_error)):
        if not batch:
            first = index
        batch.append(doc)
        if len(batch) >= _BATCH_DOCS:
            yield spec.name, first, batch, threshold
            batch = []
    if batch:
        yield spec.name, first, batch, threshold


class BottomK:
    """Keeps the candidates with the smallest keys whose total weight first reaches ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.total = 0
        self._heap: list[tuple[float, int, int, str, int, int]] = []  # (-key, doc, unit, text, words, weight)

    def push(self, key: float, doc: int, unit: int, text: str, words: int, weight: int = 1) -> None:
        if self.total >= self.target and self._heap and key >= -self._heap[0][0]:
            return
        heapq.heappush(self._heap, (-key, doc, unit, text, words, weight))
        self.total += weight
        while self._heap and self.total - self._heap[0][5] >= self.target:
            self.total -= heapq.heappop(self._heap)[5]

    def by_key(self) -> list[tuple[int, int, str, int]]:
        """Chosen ``(doc, unit, text, words)`` in ascending key order."""
        return [(doc, unit, text, words) for _, doc, unit, text, words, _ in sorted(self._heap, key=lambda e: -e[0])]

    def items(self) -> list[tuple[int, int, str, int]]:
        """Chosen ``(doc, unit, text, words)`` in corpus order."""
        return sorted((doc, unit, text, words) for _, doc, unit, text, words, _ in self._heap)


def _sample_source(spec: SourceSpec, cfg: FilterConfig, seed: int, target: int, match: str, eligible: int,
                   workers: int, on_decode_error: str, bar: tqdm) -> tuple[BottomK, float]:
    fraction = min(1.0, target / eligible) if eligible else 1.0
    threshold = min(1.0, 1.1 * fraction + 6.0 * math.sqrt(fraction / max(eligible, 1)) + 20.0 / max(eligible, 1))
    while True:
        chooser = BottomK(target)
        batches = _batches(spec, threshold, on_decode_error)
        for size, found in parallel_map(_sample_batch, batches, workers, _init_worker, (cfg, seed)):
            bar.update(size)
            for key, doc, unit, text, words in found:
                chooser.push(key, doc, unit, text, words, 1 if match == "units" else words)
        if chooser.total >= target or threshold >= 1.0:
            return chooser, threshold
        threshold = 1.0  # the estimate was too tight: take every candidate into account


def run_control(constrained_dir: str | os.PathLike, out_dir: str | os.PathLike, *, match: str = "units",
                seed: int = 0, workers: int = 1, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Sample the unconstrained control of a ``filter`` output; write the stage output; return its report."""
    if match not in MATCH_MODES:
        raise CorpusError(f"--match must be one of {MATCH_MODES}, got {match!r}")
    check_output_free(out_dir, overwrite)
    manifest = read_stage_manifest(constrained_dir, ("filter",))
    constrained = load_report(constrained_dir)
    for recorded in manifest["inputs"]["sources"]:
        check_fingerprint(recorded)
    params = manifest["parameters"]
    cfg = FilterConfig(**params["filter"])
    pack = PackConfig(**params["pack"])
    dedup = bool(params["dedup"])
    started = time.perf_counter()
    report_sources: dict[str, Any] = {}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        with progress_bar(progress, unit="B", unit_scale=True, desc="control") as bar, \
                JsonlWriter(tmp / SEQUENCES_FILE) as writer:
            for recorded in manifest["inputs"]["sources"]:
                spec = SourceSpec.parse(recorded["spec"])
                counts = constrained["sources"][spec.name]
                kept_units = counts["kept"] - counts["duplicates"]
                target = kept_units if match == "units" else counts["words"]
                eligible = counts["eligible"] if match == "units" else counts["eligible_words"]
                chooser, threshold = _sample_source(spec, cfg, seed, target, match, eligible, workers,
                                                    params["on_decode_error"], bar)
                entry = _write_sample(writer, spec.name, chooser, pack, dedup)
                entry.update(target=target, threshold=round(threshold, 6),
                             constrained_sequences=counts["sequences"], constrained_words=counts["words"])
                report_sources[spec.name] = entry
        seconds = time.perf_counter() - started
        total = {k: sum(e[k] for e in report_sources.values())
                 for k in ("units", "kept", "duplicates", "sequences", "words", "constrained_sequences",
                           "constrained_words")}
        report = {"sources": report_sources, "total": total, "match": match, "seed": seed,
                  "seconds": round(seconds, 3), "mb_per_s": None, "top_oov": []}
        if total["sequences"] == 0:
            raise CorpusError("the control sample is empty: the sources have no long-enough units")
        atomic_write_json(tmp / REPORT_FILE, report)
        write_stage_manifest(
            tmp, "control",
            inputs={"constrained": {"path": str(constrained_dir), "manifest_outputs": manifest["outputs"]},
                    "sources": manifest["inputs"]["sources"]},
            parameters={"filter": dataclasses.asdict(cfg), "pack": dataclasses.asdict(pack), "match": match,
                        "seed": seed, "dedup": dedup},
            counts={"sources": report_sources, "total": total})
    return report


def _write_sample(writer: JsonlWriter, source: str, chooser: BottomK, pack: PackConfig,
                  dedup: bool) -> dict[str, Any]:
    """Write one source's sample (packed; duplicates dropped if the constrained corpus dropped them)."""
    seen: set[bytes] = set()
    packer = Packer(pack.max_len, pack.ratio)
    entry = {"units": 0, "kept": 0, "duplicates": 0, "sequences": 0, "words": 0}

    def emit(text: str | None) -> None:
        if text is not None:
            writer.write(text, source=source)
            entry["sequences"] += 1
            entry["words"] += len(text.split())

    for _, _, text, words in chooser.items():
        entry["units"] += 1
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if dedup and digest in seen:
            entry["duplicates"] += 1
            continue
        seen.add(digest)
        entry["kept"] += 1
        emit(packer.add(text, words) if pack.pack else text)
    emit(packer.flush())
    return entry


def format_control_report(report: dict[str, Any]) -> str:
    """Table of the control sample next to the constrained corpus it matches."""
    head = ["source", "target", "sampled", "dups", "sequences", "words", "constrained seqs", "constrained words"]
    keys = ["target", "units", "duplicates", "sequences", "words", "constrained_sequences", "constrained_words"]
    rows = [[name] + [str(e.get(k, "")) for k in keys] for name, e in report["sources"].items()]
    rows.append(["TOTAL", ""] + [str(report["total"][k]) for k in keys[1:]])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"matched by {report['match']} (seed {report['seed']}) in {report['seconds']:.2f} s")
    return "\n".join(lines)
