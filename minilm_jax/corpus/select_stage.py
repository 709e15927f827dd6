"""The ``select-tokenizer`` stage: measure a grid of tokenizers; write a table, JSON, plot and manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.manifest import atomic_output_dir, check_output_free, read_stage_manifest, write_stage_manifest
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.text_selection import (
    dump_json,
    evaluate_tokenizer,
    load_morphemes,
    markdown_table,
    plot,
    recommend,
)
from minilm_jax.corpus.sources import SourceSpec, check_unique_names, fingerprint, iter_documents
from minilm_jax.corpus.tokenizer_train import sample_corpus
from minilm_jax.storage import atomic_write_bytes, file_sha256
from minilm_jax.tokenizer import load_tokenizer


def resolve_tokenizers(paths: list[str]) -> list[dict[str, Any]]:
    """Tokenizer entries from ``train-tokenizer`` folders (checked against their manifest) or files."""
    entries: list[dict[str, Any]] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir() and (path / "manifest.json").is_file():
            manifest = read_stage_manifest(path, ("train-tokenizer",))
            for name, model in sorted(manifest["models"].items()):
                entries.append({"name": name, "model_type": model["model_type"], "path": str(path / model["file"])})
        elif path.is_file():
            entries.append({"name": path.stem, "model_type": None, "path": str(path)})
        else:
            raise CorpusError(f"tokenizer not found: {path} (give .model / vocab.txt files or a "
                              "train-tokenizer output folder)")
    if not entries:
        raise CorpusError("no tokenizers to compare")
    return entries


def run_select(tokenizers: list[str], corpus: list[SourceSpec], out_dir: str | os.PathLike, *,
               downstream: list[SourceSpec] = (), sample: int = 10_000, seed: int = 0,
               morphemes: str | None = None, tolerance: float = 0.05, overwrite: bool = False,
               progress: bool = False) -> dict[str, Any]:
    """Evaluate every tokenizer on one corpus sample; recommend a size per model type."""
    check_output_free(out_dir, overwrite)
    check_unique_names(downstream)
    entries = resolve_tokenizers(tokenizers)
    reference = load_morphemes(morphemes)
    texts = sample_corpus(corpus, sample, seed)
    down: dict[str, list[str]] = {}
    for spec in downstream:
        down[spec.name] = list(iter_documents(spec))
        if not down[spec.name]:
            raise CorpusError(f"downstream source {spec} has no texts")
    rows = []
    for entry in progress_bar(progress, entries, desc="select-tokenizer"):
        tok = load_tokenizer(entry["path"])
        row = {"name": entry["name"], "model_type": entry["model_type"] or tok.kind,
               "vocab_size": tok.vocab_size, "path": entry["path"], "sha256": tok.sha256}
        row.update(evaluate_tokenizer(tok, texts, reference, down))
        rows.append(row)
    rows.sort(key=lambda r: (r["model_type"], r["vocab_size"]))
    recommended = recommend(rows, tolerance)
    report = {"rows": rows, "recommended": recommended, "sample_texts": len(texts), "seed": seed,
              "tolerance": tolerance, "reference_words": len(reference),
              "rule": ("per model type: among sizes whose word split ratio is within "
                       f"{tolerance:.0%} of the lowest, the highest ESMS (ties: smaller size)")}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        table = markdown_table(rows, recommended)
        atomic_write_bytes(tmp / "report.md", (f"# Tokenizer selection\n\n{table}\nRule: {report['rule']}.\n"
                                               f"Recommended: {recommended}\n").encode())
        atomic_write_bytes(tmp / "report.json", (dump_json(report) + "\n").encode())
        plot(rows, recommended, tmp / "report.png")
        inputs = {"tokenizers": [{"path": r["path"], "sha256": r["sha256"]} for r in rows],
                  "corpus": [fingerprint(s) for s in corpus], "downstream": [fingerprint(s) for s in downstream],
                  "morphemes": {"path": morphemes or "minilm_jax/corpus/morphemes.tsv",
                                "sha256": file_sha256(morphemes) if morphemes else None}}
        write_stage_manifest(tmp, "select-tokenizer", inputs=inputs,
                             parameters={"sample": sample, "seed": seed, "tolerance": tolerance},
                             counts={"tokenizers": len(rows), "sample_texts": len(texts)},
                             extra={"recommended": recommended})
    report["table"] = table
    return report
