"""Evaluators inside pre-training: the ``evals`` section of a pre-training config, run on the
model being trained at its snapshot steps, its final step and every ``eval.zero_shot_every``
steps, each when it is a validation step (snapshot steps always are; the final step is when
``train.num_steps`` is a multiple of ``eval.every_steps`` or a snapshot).

Each evaluation writes its rows to ``<workdir>/zero_shot.jsonl`` (process 0; rows of a step
evaluated again after a resume replace the earlier ones, so a killed run resumes exactly; each row
carries a hash of its entry, and rows of an earlier, different entry of the same name are dropped
when the run restarts) and
returns scalars (overall pooled accuracy per evaluation and rule) that the run loop logs under
the ``zero_shot`` split of ``metrics.jsonl`` and TensorBoard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from minilm_jax.storage import atomic_write_bytes, run_path

from .common import Evaluator, evaluators_from_config
from .minimal_pairs import summarize
from .scoring import ScoringModel, mlm_target_logprobs

ROWS_FILE = "zero_shot.jsonl"


def read_zero_shot(workdir: str | Path) -> list[dict[str, Any]]:
    """The rows a run's in-training evaluations wrote (none: an empty list)."""
    path = run_path(workdir) / ROWS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scalars_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    """What a step's rows log: per evaluation and rule the overall pooled accuracy (minimal
    pairs), per evaluation and split the perplexity."""
    out = {}
    for r in rows:
        if r["kind"] == "perplexity":
            out[f"{r['evaluation']}/{r['split']}_perplexity"] = float(r["perplexity"])
    for name, rule in sorted({(r["evaluation"], r["rule"]) for r in rows
                              if r["kind"] == "minimal_pairs"}):
        out[f"{name}/{rule}"] = summarize([r for r in rows if r["kind"] == "minimal_pairs"
                                           and (r["evaluation"], r["rule"]) == (name, rule)]
                                          ).pooled
    return out


class StepEvaluation:
    """One evaluator, called by the run loop with the current model state."""

    def __init__(self, evaluator: Evaluator, tokenizer: Any, workdir: str | Path, point: str,
                 run_config: dict[str, Any]):
        self.evaluator, self.tokenizer = evaluator, tokenizer
        self.workdir, self.point, self.run_config = run_path(workdir), point, run_config
        self.name = evaluator.name
        self.entry_sha = hashlib.sha256(json.dumps(dataclasses.asdict(evaluator), sort_keys=True,
                                                   default=list).encode()).hexdigest()[:12]
        if jax.process_index() == 0:  # rows of an earlier, different entry of this name: dropped
            old = read_zero_shot(self.workdir)
            kept = [r for r in old if r.get("evaluation") != self.name
                    or r.get("entry_sha") == self.entry_sha]
            if len(kept) != len(old):
                print(f"note: evals.{self.name} changed since its earlier rows in "
                      f"{self.workdir / ROWS_FILE}; they are dropped", flush=True)
                atomic_write_bytes(self.workdir / ROWS_FILE,
                                   "".join(json.dumps(r) + "\n" for r in kept).encode())

    def __call__(self, step: int, graphdef: Any, params: Any, rest: Any,
                 validation_perplexity: float | None) -> dict[str, float]:
        info = {"workdir": str(self.workdir), "point": self.point, "step": int(step),
                "init": "pretrained", "validation_perplexity": validation_perplexity}
        rows = [{**r, "entry_sha": self.entry_sha} for r in self.evaluator.rows(ScoringModel(
            self.tokenizer, mlm_target_logprobs(graphdef, params, rest), info,
            (graphdef, params, rest), self.run_config, int(self.run_config["model.max_len"])))]
        if jax.process_index() == 0:
            kept = [r for r in read_zero_shot(self.workdir)
                    if not (r.get("evaluation") == self.name and int(r["step"]) >= step)]
            atomic_write_bytes(self.workdir / ROWS_FILE, "".join(
                json.dumps(r) + "\n" for r in kept + rows).encode())
        return scalars_of(rows)


def step_evaluations(config: ml_collections.ConfigDict, workdir: str | Path
                     ) -> list[StepEvaluation]:
    """The evaluations of ``config.evals`` (checked now: suites fetched, word lists read), each
    with the tokenizer the run's shards were made with."""
    from minilm_jax.data.shards import read_manifest
    from minilm_jax.errors import UserError
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.settings.model_fields import model_from_config
    from minilm_jax.tokenizer import load_tokenizer

    entries = config.get("evals")
    entries = entries.to_dict() if hasattr(entries, "to_dict") else dict(entries or {})
    evaluators = evaluators_from_config(entries)
    if not evaluators:
        return []
    every, cadence = int(config.eval.zero_shot_every), int(config.eval.every_steps)
    if every % cadence:
        raise UserError(f"eval.zero_shot_every={every} must be a multiple of eval.every_steps="
                        f"{cadence} (zero-shot evaluations run at validation steps)")
    tokenizer_path = read_manifest(config.data.shards)["tokenizer"].get("path", "")
    if not tokenizer_path or not Path(tokenizer_path).is_file():
        raise UserError(f"config.evals needs the tokenizer file of {config.data.shards}; its "
                        f"manifest names {tokenizer_path or 'none'}")
    for evaluator in evaluators:
        evaluator.check()
    tokenizer = load_tokenizer(tokenizer_path)
    point = model_from_config(config).point
    flat = {**flatten(config), "data.tokenizer_sha256_seen": tokenizer.sha256}
    return [StepEvaluation(e, tokenizer, workdir, point, flat) for e in evaluators]
