"""Study B's B1-B4 with the pre-training seed as the unit of replication (the ``study_b`` sweep
with ``pretrain_seeds``), from the per-run rows of :mod:`minilm_jax.analysis.study_b`.

A pre-training seed's gap on a task is its fine-tuning seeds' mean pre-trained score minus the
random-init twin's mean over the same fine-tuning seeds. The twin is shared by the runs of one
architecture (rows name it, ``random_workdir``): it is one run, so B1's interval and p are Welch's
t between the seeds' mean pre-trained scores and the twin's fine-tuning seeds (its spread counts,
and it counts once), not a one-sample t over the gaps, which would take the twin's mean as known.

- **B1** per (task, model, subset): the gaps of the pre-training seeds, mean, sample sd, n, 95%
  interval and p, Welch's against a shared twin (one-sample t where each seed has its own twin)
  (:func:`gaps_over_seeds`).
- **B2** per task: each seed's gap on the largest minus the smallest subset (the same seed
  initialises both: paired), over seeds; and within each seed the Pearson r of the gap with
  log10(subset size) over its (task, subset) points, summarised over seeds by the mean Fisher z
  (:func:`size_over_seeds`).
- **B3** the same r with the token overlap (occurrence and type share) instead of size
  (:func:`overlap_over_seeds`).
- **B4** per task: the largest committee (one member per pre-training seed) minus each
  pre-training seed's 6-layer model (unit: the 6-layer model's seed; the committee holds every
  member seed and is one model: Welch's t between its fine-tuning seeds and the 6-layer seeds'
  means, as for a shared twin), and one member minus the 6-layer model of the same seed (paired
  by pre-training seed) (:func:`committee_over_seeds`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minilm_jax.analysis.replication import (CorrelationOverSeeds, SeedEffect,
                                             correlation_over_seeds, gap_to_shared_baseline,
                                             seed_effect)
from minilm_jax.analysis.stats import t_interval

Row = Mapping[str, Any]
SHALLOW = "l1"


def _mean(by_seed: Mapping[Any, float]) -> float:
    return float(np.mean(list(by_seed.values()))) if by_seed else float("nan")


def seed_gap(row: Row) -> float:
    """One pre-training run's gap: mean pre-trained minus mean random over the fine-tuning seeds
    both sides have."""
    common = sorted(set(row["pretrained_by_seed"]) & set(row["random_by_seed"]))
    if not common:
        return float("nan")
    return (_mean({s: row["pretrained_by_seed"][s] for s in common})
            - _mean({s: row["random_by_seed"][s] for s in common}))


@dataclass(frozen=True)
class GapOverSeeds:
    """B1 for one (task, model, subset)."""

    task: str
    model: str
    subset: int
    gap: SeedEffect  # pre-training seed -> its gap
    pretrained: dict[str, float]  # t interval over seeds of each seed's mean pre-trained score
    random: dict[str, float]  # the same for the random twin (one shared twin: sd 0)
    majority: float


def _cells(rows: Sequence[Row]) -> dict[tuple[str, str, int], dict[int, Row]]:
    out: dict[tuple[str, str, int], dict[int, Row]] = defaultdict(dict)
    for r in rows:
        cell = out[(r["task"], r["model"], int(r["subset"]))]
        if int(r["seed"]) in cell:
            raise ValueError(f"two rows for {r['task']}, {r['model']}, subset {r['subset']}, "
                             f"pre-training seed {r['seed']}")
        cell[int(r["seed"])] = r
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def gaps_over_seeds(rows: Sequence[Row], confidence: float = 0.95) -> list[GapOverSeeds]:
    """B1: one :class:`GapOverSeeds` per (task, model, subset) of ``rows`` (task order kept)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = []
    for (task, model, subset), by_seed in sorted(_cells(rows).items(),
                                                 key=lambda kv: (tasks.index(kv[0][0]), kv[0][1:])):
        label = f"{task} {model} n{subset}"
        twins = {r.get("random_workdir") for r in by_seed.values()}
        if len(by_seed) > 1 and len(twins) == 1 and None not in twins:  # one shared twin
            twin = next(iter(by_seed.values()))["random_by_seed"]
            common = sorted(set.intersection(*(set(r["pretrained_by_seed"]) & set(twin)
                                               for r in by_seed.values())))
            gap = gap_to_shared_baseline(
                label, {s: _mean({k: r["pretrained_by_seed"][k] for k in common})
                        for s, r in by_seed.items()},
                [twin[k] for k in common], confidence=confidence)
        else:
            gap = seed_effect(label, {s: seed_gap(r) for s, r in by_seed.items()},
                              confidence=confidence)
        out.append(GapOverSeeds(
            task, model, subset, gap,
            t_interval([_mean(r["pretrained_by_seed"]) for r in by_seed.values()], confidence),
            t_interval([_mean(r["random_by_seed"]) for r in by_seed.values()], confidence),
            float(next(iter(by_seed.values())).get("majority", math.nan))))
    return out


@dataclass(frozen=True)
class SizeOverSeeds:
    """B2 over pre-training seeds (1-layer models)."""

    smallest: int
    largest: int
    per_task: dict[str, SeedEffect]  # each seed's gap, largest minus smallest subset
    correlation: CorrelationOverSeeds  # r(gap, log10 subset size) within each seed


def _shallow_points(rows: Sequence[Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        if r["model"] == SHALLOW:
            out[int(r["seed"])].append(r)
    return dict(sorted(out.items()))


def size_over_seeds(rows: Sequence[Row], confidence: float = 0.95) -> SizeOverSeeds:
    """B2 from the per-run rows (their 1-layer models)."""
    cells = _cells([r for r in rows if r["model"] == SHALLOW])
    sizes = sorted({subset for _, _, subset in cells})
    small, large = sizes[0], sizes[-1]
    per_task = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        lo, hi = cells.get((task, SHALLOW, small), {}), cells.get((task, SHALLOW, large), {})
        per_task[task] = seed_effect(task, {s: seed_gap(hi[s]) - seed_gap(lo[s])
                                            for s in hi if s in lo}, confidence=confidence)
    points = {seed: [(math.log10(r["subset"]), seed_gap(r)) for r in mine]
              for seed, mine in _shallow_points(rows).items()}
    return SizeOverSeeds(small, large, per_task, correlation_over_seeds(points, confidence))


def overlap_over_seeds(rows: Sequence[Row], overlap: Sequence[Row], confidence: float = 0.95
                       ) -> dict[str, CorrelationOverSeeds]:
    """B3: within each seed, r of the 1-layer gaps with each (task, subset)'s overlap share
    (``overlap``: rows with task, subset, occurrence_share, type_share); over seeds."""
    share = {(p["task"], int(p["subset"])): p for p in overlap}
    out = {}
    for measure in ("occurrence_share", "type_share"):
        points = {seed: [(float(share[(r["task"], int(r["subset"]))][measure]), seed_gap(r))
                         for r in mine if (r["task"], int(r["subset"])) in share]
                  for seed, mine in _shallow_points(rows).items()}
        out[measure] = correlation_over_seeds(points, confidence)
    return out


@dataclass(frozen=True)
class CommitteeOverSeeds:
    """B4 for one task and combination rule over pre-training seeds."""

    task: str
    method: str
    members: int
    committee: float  # the largest committee's mean over fine-tuning seeds
    deep: dict[str, float]  # t interval over the 6-layer seeds of their mean scores
    single: dict[str, float]  # t interval over the members of their mean scores
    largest_minus_deep: SeedEffect  # unit: the 6-layer model's pre-training seed
    single_minus_deep: SeedEffect  # paired by pre-training seed


def _common_mean(a: Mapping[Any, float], b: Mapping[Any, float]) -> float:
    """mean(a) - mean(b) over the fine-tuning seeds both have."""
    common = [s for s in a if s in b]
    if not common:
        return float("nan")
    return _mean({s: a[s] for s in common}) - _mean({s: b[s] for s in common})


def _committee_minus_deep(largest: Mapping[int, float], deep: Mapping[int, Mapping[int, float]],
                          confidence: float) -> SeedEffect:
    """The one committee (all member seeds) minus each 6-layer seed's mean score: the committee
    is one model, so Welch's t between its fine-tuning seeds and the 6-layer seeds' means. (The
    committee is the shared side: negating both, -deep - (-committee), keeps the sign.)"""
    common = sorted(set(largest).intersection(*(set(d) for d in deep.values())))
    return gap_to_shared_baseline(
        "committee - 6-layer", {p: -_mean({k: d[k] for k in common}) for p, d in deep.items()},
        [-largest[k] for k in common], "6-layer pre-training seed", confidence,
        baseline_name="the one committee")


def committee_over_seeds(result: Mapping[str, Any], confidence: float = 0.95) -> CommitteeOverSeeds:
    """B4 from one :func:`minilm_jax.analysis.study_b.committee` result (``largest_by_seed``,
    ``members_by_seed``, ``deep_by_seed``; seeds may be strings after a JSON round trip)."""
    largest = {int(k): float(v) for k, v in result["largest_by_seed"].items()}
    members = {int(p): {int(k): float(v) for k, v in by.items()}
               for p, by in result["members_by_seed"].items()}
    deep = {int(p): {int(k): float(v) for k, v in by.items()}
            for p, by in result["deep_by_seed"].items()}
    return CommitteeOverSeeds(
        result["task"], result["method"], len(members), _mean(largest),
        t_interval([_mean(d) for d in deep.values()], confidence),
        t_interval([_mean(m) for m in members.values()], confidence),
        _committee_minus_deep(largest, deep, confidence),
        seed_effect("member - 6-layer", {p: _common_mean(members[p], deep[p])
                                         for p in deep if p in members}, confidence=confidence))
