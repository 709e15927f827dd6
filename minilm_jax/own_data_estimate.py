"""A rough time estimate for ``launch/own_data.sh`` before its first step, from rates measured on a
2-core CPU (docs/pretraining.md, "Your own corpus"): tokenizer and shards per MB of text,
pre-training per step, fine-tuning per labelled row trained on per seed and init (a
cross-validated file: each row is trained on in folds - 1 of its folds), plus start-up and
compiling (within ~25% of the five corpora's measured times).

    python -m minilm_jax.own_data_estimate TEXT LABELS STEPS SEEDS [FOLDS]  # TEXT/LABELS may be "-"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SECONDS_PER_MB, SECONDS_PER_STEP, SECONDS_PER_ROW, START_SECONDS = 15.0, 0.04, 0.006, 40.0
MEASURED_CORES = 2


def text_megabytes(text: str) -> float:
    """Megabytes of text in a file or a folder's files (``-``: none left to make)."""
    if text == "-":
        return 0.0
    path = Path(text)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 1e6


def labelled_rows(labels: str) -> int:
    """Lines in a labels file or a folder's files (``-``: no fine-tuning)."""
    if labels == "-":
        return 0
    path = Path(labels)
    files = [path] if path.is_file() else sorted(path.glob("*.*"))
    return sum(sum(1 for _ in open(p, "rb")) for p in files)


def estimate_seconds(megabytes: float, steps: int, rows: int, seeds: int, cores: int,
                     folds: int = 0) -> float:
    """Seconds for the whole job: pre-training scales with cores up to the 2 it was measured on;
    ``folds`` > 1: each row is trained on in ``folds - 1`` fold runs per seed and init."""
    return (START_SECONDS + megabytes * SECONDS_PER_MB
            + steps * SECONDS_PER_STEP * min(1.0, MEASURED_CORES / max(cores, 1))
            + rows * seeds * 2 * max(1, folds - 1) * SECONDS_PER_ROW)


def estimate_line(text: str, labels: str, steps: int, seeds: int, folds: int = 0) -> str:
    """The line own_data.sh prints before it starts (``folds``: of a cross-validated file)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mb, rows = text_megabytes(text), labelled_rows(labels)
    folds = folds if labels != "-" and Path(labels).is_file() else 0
    seconds = estimate_seconds(mb, steps, rows, seeds, cores, folds)
    design = f" x {folds} folds" if folds > 1 else ""
    return (f"estimate: about {seconds / 60:.0f} min on this machine's CPU ({mb:.1f} MB of text, "
            f"{steps} pre-training steps, {rows} labelled rows x {seeds} seeds{design} x 2 inits, "
            f"fine-tuning included; rates measured on {MEASURED_CORES} cores, {cores} here)")


def main(argv: list[str]) -> None:
    text, labels, steps, seeds, *folds = argv
    print(estimate_line(text, labels, int(steps), len(seeds.split(",")),
                        int(folds[0]) if folds else 0), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
