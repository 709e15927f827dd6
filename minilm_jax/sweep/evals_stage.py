"""A sweep's zero-shot evaluation stage: after a run's pre-training, each evaluator of the sweep's
``evals`` section (:mod:`minilm_jax.evals.common`) scores every snapshot the run kept, its final
checkpoint and its random-init twin (the same architecture initialised with the run's own
pre-training seed, :func:`twin_seed`: a twin per seed).

Files (in :meth:`SweepLayout.evaluation_dir <minilm_jax.sweep.layout.SweepLayout.evaluation_dir>`;
:func:`evaluation_rows` is their one reader)::

    step-<N>.jsonl, random.jsonl   one file per scored model, written whole (atomic)
    summary.json                   {"status": "completed", "entry": ..., "models": [...]}

A changed entry or a re-trained run gets a new folder (old rows are never mixed in); a stage
killed part-way re-scores only the models it had not written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minilm_jax.settings.pretraining import snapshot_steps
from minilm_jax.storage import atomic_write_bytes, atomic_write_json, make_folder
from minilm_jax.train.records import is_done

from .layout import SweepLayout
from .spec import Run


def twin_seed(run: Run) -> int:
    """The seed that initialises ``run``'s random-init twin: the run's own pre-training seed, so
    with ``pretrain_seeds`` every seed's run has a twin of its own (the pair the analyses over
    pre-training seeds compare, :mod:`minilm_jax.analysis.zero_shot_seeds`)."""
    return run.pretrain_seed


def plain_entries(entries: Any) -> dict[str, dict[str, Any]]:
    """The sweep's ``evals`` section as plain dicts (a ConfigDict or a mapping; None: none)."""
    if entries is None:
        return {}
    entries = entries.to_dict() if hasattr(entries, "to_dict") else entries
    return {str(k): dict(v.to_dict() if hasattr(v, "to_dict") else v)
            for k, v in entries.items()}


def scored_steps(pre_dir: Path, config: Any) -> list[int]:
    """The steps scored: every kept snapshot and the run's final step."""
    final = int(json.loads((pre_dir / "summary.json").read_text())["step"])
    steps = set(snapshot_steps(config)) if config.checkpoint.keep_fractions else set()
    return sorted(s for s in steps | {final} if s <= final)


class EvaluationStage:
    """One evaluator over one run's checkpoints and its random twin (a sweep stage)."""

    stopped_by: str | None = None
    stopped_at: int | None = None

    def __init__(self, name: str, entry: Mapping[str, Any], pre_dir: Path, config: Any,
                 random_seed: int, workdir: Path) -> None:
        self.name, self.entry = name, dict(entry)
        self.pre_dir, self.config, self.random_seed = pre_dir, config, random_seed
        self.workdir = workdir

    def run(self) -> dict[str, Any]:
        from minilm_jax.evals.common import from_config
        from minilm_jax.evals.scoring_models import checkpoint_model

        evaluator = from_config(self.name, self.entry)
        make_folder(self.workdir)
        models = [(f"step-{s}", f"step:{s}", None) for s in scored_steps(self.pre_dir, self.config)]
        models.append(("random", "latest", self.random_seed))
        for label, which, seed in models:
            path = self.workdir / f"{label}.jsonl"
            if path.is_file():
                continue
            print(f"   {self.name}: scoring {label}", flush=True)
            rows = evaluator.rows(checkpoint_model(self.pre_dir, which, seed))
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        summary = {"status": "completed", "evaluation": self.name, "entry": self.entry,
                   "models": [label for label, _, _ in models]}
        atomic_write_json(self.workdir / "summary.json", summary)
        return summary


def evaluation_rows(layout: SweepLayout, run: str, entries: Any) -> list[dict[str, Any]]:
    """The rows of every finished evaluation of the sweep's current ``entries`` for ``run``."""
    rows = []
    entries = plain_entries(entries)
    for name in sorted(entries):
        folder = layout.evaluation_dir(run, name, entries[name])
        if not is_done(folder):
            continue
        for label in json.loads((folder / "summary.json").read_text())["models"]:
            text = (folder / f"{label}.jsonl").read_text()
            rows += [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows
