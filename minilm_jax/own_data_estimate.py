"""A rough time estimate for ``launch/own_data.sh`` before its first step, from rates measured on a
2-core CPU (docs/pretraining.md, "Your own corpus"): tokenizer and shards per MB of text,
pre-training per step, fine-tuning per labelled row trained on per seed and init (a
cross-validated file: each row is trained on in folds - 1 of its folds), plus start-up and
compiling (within ~25% of the five corpora's measured times on an idle machine). A busy machine
is accounted for: with a 1-minute load average L on C cores, the job gets about C / (L + 1) of
them, so the idle estimate is scaled by max(1, (L + 1) / C), and the line says which load it is for.

    python -m minilm_jax.own_data_estimate TEXT LABELS STEPS SEEDS [FOLDS]  # TEXT/LABELS may be "-"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from minilm_jax.tasks.table import SUFFIXES  # a labels folder's train and test files

SECONDS_PER_MB, SECONDS_PER_STEP, SECONDS_PER_ROW, START_SECONDS = 15.0, 0.04, 0.006, 40.0
MEASURED_CORES = 2


def text_megabytes(text: str) -> float:
    """Megabytes of text in a file, or in a folder's ``.txt`` files (what the job reads of it:
    not a readme, a PDF or a subfolder beside them; ``-``: none left to make)."""
    if text == "-":
        return 0.0
    path = Path(text)
    files = [p for p in path.glob("*.txt") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 1e6


def labelled_rows(labels: str) -> int:
    """Labelled rows in a labels file or a folder's CSV / TSV / JSONL files: their lines, less a
    CSV or TSV file's header (``-``: no fine-tuning)."""
    if labels == "-":
        return 0
    path = Path(labels)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    return sum(_rows_in(p) for p in files)


def _rows_in(path: Path) -> int:
    """A labels file's rows: its lines, less the header row of a CSV or TSV file."""
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)
    return lines if path.suffix.lower() == ".jsonl" else max(0, lines - 1)


def estimate_seconds(megabytes: float, steps: int, rows: int, seeds: int, cores: int,
                     folds: int = 0) -> float:
    """Seconds for the whole job: pre-training scales with cores up to the 2 it was measured on;
    ``folds`` > 1: each row is trained on in ``folds - 1`` fold runs per seed and init."""
    return (START_SECONDS + megabytes * SECONDS_PER_MB
            + steps * SECONDS_PER_STEP * min(1.0, MEASURED_CORES / max(cores, 1))
            + rows * seeds * 2 * max(1, folds - 1) * SECONDS_PER_ROW)


def load_factor(load: float, cpus: int) -> float:
    """How much longer than on an idle machine a CPU-bound job takes with ``load`` other runnable
    processes (the 1-minute load average) on ``cpus`` cores: it gets about cpus / (load + 1) of
    them, so max(1, (load + 1) / cpus)."""
    return max(1.0, (max(load, 0.0) + 1.0) / max(cpus, 1))


def current_load() -> tuple[float, int] | None:
    """(1-minute load average, the machine's cores), or None where the system does not say."""
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):
        return None


def estimate_line(text: str, labels: str, steps: int, seeds: int, folds: int = 0) -> str:
    """The line own_data.sh prints before it starts (``folds``: of a cross-validated file), for
    the machine's load as it is now (:func:`load_factor`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mb, rows = text_megabytes(text), labelled_rows(labels)
    folds = folds if labels != "-" and Path(labels).is_file() else 0
    idle = estimate_seconds(mb, steps, rows, seeds, cores, folds)
    seen = current_load()
    factor = load_factor(*seen) if seen else 1.0
    if seen is None:
        load = "for an idle machine (this system reports no load average)"
    elif factor > 1.0:
        load = (f"at the load seen now (load average {seen[0]:.1f} on {seen[1]} cores: "
                f"{factor:.1f} x the idle machine's {idle / 60:.0f} min; it changes as the load "
                "does)")
    else:
        load = f"at the load seen now (load average {seen[0]:.1f} on {seen[1]} cores: idle enough)"
    design = f" x {folds} folds" if folds > 1 else ""
    return (f"estimate: about {idle * factor / 60:.0f} min on this machine's CPU {load} "
            f"({mb:.1f} MB of text, {steps} pre-training steps, {rows} labelled rows x {seeds} "
            f"seeds{design} x 2 inits, fine-tuning included; rates measured on {MEASURED_CORES} "
            f"idle cores, {cores} here)")


def main(argv: list[str]) -> None:
    text, labels, steps, seeds, *folds = argv
    print(estimate_line(text, labels, int(steps), len(seeds.split(",")),
                        int(folds[0]) if folds else 0), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
