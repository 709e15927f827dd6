"""Downstream analyses of a sweep's results rows, each fine-tuning run counted once.

- A *fine-tuning run* is identified by its resolved ``finetune_workdir``: the results table repeats a
  run's rows once per group membership (``run@group``) and repeats a shared random-init twin for every
  run of its architecture; those copies are one run.
- A *checkpoint* is (pre-training workdir, checkpoint step): one pre-training run fine-tuned from
  several snapshots gives several checkpoints.
- Pre-trained vs random: per checkpoint and task, the gap (pre-trained - random) paired by seed, with
  a t interval and p-value (:func:`minilm_jax.analysis.stats.paired_gap`). The random twin is the one
  of the same run when it has one, else the one of the same architecture (``point``).
- Perplexity vs downstream: one point per checkpoint, x = its validation perplexity, y = the mean
  pre-trained score over the tasks every checkpoint has; Pearson with a Fisher-z interval and a
  permutation p-value. Expected direction (the paper's claim): negative. Where the checkpoints
  span several architectures (the ``arch`` of a user's variant; a built-in encoder's rows have
  none), that pooled r partly measures which architecture a checkpoint has: the correlation within
  architectures (each architecture's mean perplexity and mean score removed,
  :func:`~minilm_jax.analysis.stats.pearson_within_groups`) goes beside it, and each architecture's
  own r where it has at least :data:`PER_ARCH_MIN` checkpoints.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .result_rows import BUILT_IN, row_arch  # BUILT_IN: the architecture of a built-in's rows
from .stats import (Gap, MeanSD, PearsonResult, WithinGroups, mean_sd, paired_gap,
                    pearson_fisher, pearson_within_groups)

EXPECTED_SIGN = -1  # lower perplexity, higher score
SMALL_N = 10
PER_ARCH_MIN = 4  # checkpoints an architecture needs for its own r (a Fisher-z interval: n > 3)


def _key(path: str) -> str:
    return os.path.realpath(path) if path else path


@dataclass
class FinetuneRun:
    """One fine-tuning run (deduplicated)."""

    run: str  # the first run name it was reported under (without @group)
    point: str
    pretrain_workdir: str
    task: str
    init: str
    step: int | None
    fraction: float | None
    perplexity: float | None
    scores_by_seed: dict[Any, float]
    score: float
    majority: float | None
    unk_rate: float | None
    workdir: str
    runs: set[str] = field(default_factory=set)  # every run name it stands for
    arch: str = BUILT_IN  # the encoder's architecture (a user's variant's ``arch``)

    @property
    def summary(self) -> MeanSD:
        return mean_sd(list(self.scores_by_seed.values()))


def finetune_runs(rows: Iterable[Mapping[str, Any]]) -> list[FinetuneRun]:
    """Distinct fine-tuning runs of the downstream rows, in first-seen order."""
    found: dict[str, FinetuneRun] = {}
    seeds_from: dict[str, str] = {}  # a hand-made run's seeds come from its first run label only
    for r in rows:
        if r.get("kind") != "downstream":
            continue
        name = str(r["run"]).split("@")[0]
        if not r.get("finetune_workdir"):  # hand-made tables: one row per seed, no workdir
            key = f"{_key(r['workdir'])}|{r['task']}|{r['init']}|{r.get('checkpoint_step')}"
            if key in found:
                ft = found[key]
                # another run's or group's copy of the same rows (a shared twin, `run@group`)
                # names the run, never adds seeds: each run counted once
                if str(r["run"]) == seeds_from[key]:
                    ft.scores_by_seed[len(ft.scores_by_seed)] = float(r["score"])
                    ft.score = sum(ft.scores_by_seed.values()) / len(ft.scores_by_seed)
                ft.runs.add(name)
                continue
            seeds_from[key] = str(r["run"])
        else:
            key = _key(r["finetune_workdir"])
            if key in found:
                found[key].runs.add(name)
                continue
        seeds = r.get("seeds") or []
        scores = r.get("member_scores") or []
        by_seed = (dict(zip(seeds, scores)) if seeds and len(seeds) == len(scores)
                   else {i: s for i, s in enumerate(scores)} or {0: float(r["score"])})
        fraction = r.get("checkpoint_fraction")
        found[key] = FinetuneRun(
            name, r["point"], _key(r["workdir"]), r["task"], r["init"], r.get("checkpoint_step"),
            fraction, r.get("final_validation_perplexity"), by_seed, float(r["score"]),
            r.get("majority_score"), r.get("unk_rate"), key, {name}, row_arch(r))
    return list(found.values())


@dataclass
class GapRow:
    """Pre-trained vs random on one task for one checkpoint."""

    run: str
    step: int | None
    fraction: float | None
    task: str
    pretrained: MeanSD
    random: MeanSD | None
    gap: Gap | None
    majority: float | None


def _label(run: str, fraction: float | None) -> str:
    return run if fraction is None else f"{run}@{fraction:g}"


def gap_rows(runs: list[FinetuneRun]) -> list[GapRow]:
    """One row per (checkpoint, task): pre-trained vs the matching random twin."""
    twins_by_run: dict[tuple[str, str], FinetuneRun] = {}
    twins_by_point: dict[tuple[str, str], FinetuneRun] = {}
    for ft in runs:
        if ft.init == "random":
            for name in ft.runs:
                twins_by_run.setdefault((name, ft.task), ft)
            twins_by_point.setdefault((ft.point, ft.task), ft)
    out = []
    for ft in runs:
        if ft.init != "pretrained":
            continue
        twin = twins_by_run.get((ft.run, ft.task)) or twins_by_point.get((ft.point, ft.task))
        gap = paired_gap(ft.scores_by_seed, twin.scores_by_seed) if twin else None
        majority = ft.majority if ft.majority is not None else (twin.majority if twin else None)
        out.append(GapRow(ft.run, ft.step, ft.fraction, ft.task, ft.summary,
                          twin.summary if twin else None, gap, majority))
    return sorted(out, key=lambda g: (g.run, g.step or 0, g.task))


def final_gap_rows(rows: list[GapRow]) -> list[GapRow]:
    """The gap rows of each pre-training run's last fine-tuned checkpoint."""
    last: dict[str, int] = {}
    for g in rows:
        last[g.run] = max(last.get(g.run, -1), g.step or 0)
    return [g for g in rows if (g.step or 0) == last[g.run]]


@dataclass
class CorrelationPoint:
    label: str
    perplexity: float
    score: float
    arch: str = BUILT_IN


@dataclass
class CheckpointCorrelation:
    """Perplexity vs mean pre-trained score over distinct checkpoints; where they span several
    architectures, the correlation within architectures and each architecture's own (those with
    at least :data:`PER_ARCH_MIN` checkpoints)."""

    points: list[CorrelationPoint]
    tasks: list[str]
    result: PearsonResult | None
    notes: list[str]
    within: WithinGroups | None = None  # None: one architecture (nothing pooled)
    per_arch: dict[str, PearsonResult] = field(default_factory=dict)

    @property
    def architectures(self) -> dict[str, int]:
        """Checkpoints per architecture, in name order."""
        counts: dict[str, int] = defaultdict(int)
        for p in self.points:
            counts[p.arch] += 1
        return dict(sorted(counts.items()))

    def pooled_text(self) -> str:
        """``pools K architectures: a (n), b (m)``, or "" for one architecture."""
        archs = self.architectures
        if len(archs) < 2:
            return ""
        return (f"pools {len(archs)} architectures: "
                + ", ".join(f"`{a}` ({n} checkpoint{'s' if n != 1 else ''})"
                            for a, n in archs.items()))


def perplexity_correlation(runs: list[FinetuneRun]) -> CheckpointCorrelation:
    """One point per checkpoint (pre-training workdir, step) with a perplexity; y = mean pre-trained
    score over the task set every such checkpoint has."""
    by_ckpt: dict[tuple[str, Any], dict[str, FinetuneRun]] = defaultdict(dict)
    for ft in runs:
        if ft.init == "pretrained" and ft.perplexity is not None and math.isfinite(ft.perplexity):
            by_ckpt[(ft.pretrain_workdir, ft.step)][ft.task] = ft
    notes: list[str] = []
    if not by_ckpt:
        return CheckpointCorrelation([], [], None, ["No pre-trained downstream rows: section "
                                                    "skipped."])
    all_tasks = sorted(set().union(*[set(v) for v in by_ckpt.values()]))
    counts = {t: sum(t in v for v in by_ckpt.values()) for t in all_tasks}
    shared = [t for t in all_tasks if counts[t] == len(by_ckpt)]
    if not shared:
        return CheckpointCorrelation([], [], None, ["The checkpoints share no downstream task: "
                                                    "no correlation."])
    missing = [t for t in all_tasks if t not in shared]
    if missing:
        notes.append(f"Left out of the mean (not scored on every checkpoint): {', '.join(missing)}.")
    points = []
    for (_, step), tasks in sorted(by_ckpt.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        any_ft = next(iter(tasks.values()))
        points.append(CorrelationPoint(_label(any_ft.run, any_ft.fraction), any_ft.perplexity,
                                       sum(tasks[t].score for t in shared) / len(shared),
                                       any_ft.arch))
    result = pearson_fisher([p.perplexity for p in points], [p.score for p in points])
    if len(points) < SMALL_N:
        notes.append(f"n = {len(points)} < {SMALL_N} checkpoints: intervals are wide and the estimate "
                     "is fragile.")
    within, per_arch = _by_architecture(points)
    return CheckpointCorrelation(points, shared, result, notes, within, per_arch)


def _by_architecture(points: list[CorrelationPoint]
                     ) -> tuple[WithinGroups | None, dict[str, PearsonResult]]:
    """(the correlation within architectures, each architecture's own r where it has at least
    :data:`PER_ARCH_MIN` checkpoints); (None, {}) for one architecture."""
    archs = sorted({p.arch for p in points})
    if len(archs) < 2:
        return None, {}
    within = pearson_within_groups([p.perplexity for p in points], [p.score for p in points],
                                   [p.arch for p in points])
    per_arch = {}
    for arch in archs:
        mine = [p for p in points if p.arch == arch]
        if len(mine) >= PER_ARCH_MIN:
            per_arch[arch] = pearson_fisher([p.perplexity for p in mine], [p.score for p in mine])
    return within, per_arch
