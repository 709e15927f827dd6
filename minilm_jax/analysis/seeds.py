"""Pre-training seeds as the unit of replication: for every design place of a sweep pre-trained
with several seeds (``pretrain_seeds``; rows carry ``design`` and ``pretrain_seed``), the final
validation loss over seeds and the pre-trained-minus-random downstream gap computed per
pre-training seed (its fine-tuning seeds averaged inside), each with n, the sample sd, a 95% t
interval and, for gaps, a one-sample t-test p-value. Each run is counted once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from minilm_jax.analysis.results import downstream_scores, rows_of_kind
from minilm_jax.analysis.stats import t_interval


@dataclass(frozen=True)
class SeedSpread:
    """One design place: its pre-training seeds' final validation losses and their interval."""

    design: str
    point: str
    seeds: list[int]
    losses: list[float]
    interval: dict[str, float]  # mean, sd (ddof=1), n, low, high
    curves: dict[int, list[tuple[float, float]]]  # seed -> [(flops, loss)] of its validation


@dataclass(frozen=True)
class SeedGap:
    """Pre-trained minus random score on one task, one value per pre-training seed."""

    design: str
    task: str
    gaps: list[float]
    interval: dict[str, float]
    p_value: float


def _designs(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    """design -> {pre-training seed: run} for designs with at least two seeds."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    for r in rows_of_kind(rows, "validation"):
        if r.get("design") is not None and r.get("pretrain_seed") is not None:
            out[str(r["design"])][int(r["pretrain_seed"])] = r["run"]
    return {d: dict(sorted(s.items())) for d, s in out.items() if len(s) >= 2}


def seed_spreads(rows: list[Mapping[str, Any]], flops_key: str = "flops_paper"
                 ) -> list[SeedSpread]:
    """The final validation loss of every multi-seed design place, over its seeds."""
    curves: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows_of_kind(rows, "validation"):
        curves[r["run"]].append(r)
    out = []
    for design, runs in sorted(_designs(rows).items()):
        per_seed = {seed: sorted(curves[run], key=lambda r: r["step"]) for seed, run in runs.items()}
        losses = [float(c[-1]["loss"]) for c in per_seed.values()]
        out.append(SeedSpread(
            design=design, point=next(iter(per_seed.values()))[0]["point"],
            seeds=list(per_seed), losses=losses, interval=t_interval(losses),
            curves={s: [(float(r[flops_key]), float(r["loss"])) for r in c]
                    for s, c in per_seed.items()}))
    return out


def seed_gaps(rows: list[Mapping[str, Any]]) -> list[SeedGap]:
    """Per design place and task scored with both inits on every seed: the gap per pre-training
    seed, its t interval and the p-value of a one-sample t-test against 0 (n = seeds)."""
    scores = downstream_scores(rows)
    out = []
    for design, runs in sorted(_designs(rows).items()):
        tasks = sorted({t for (run, t, _) in scores if run in runs.values()})
        for task in tasks:
            pairs = [(scores.get((run, task, "pretrained")), scores.get((run, task, "random")))
                     for run in runs.values()]
            if any(p is None or r is None for p, r in pairs):
                continue
            gaps = [p.score - r.score for p, r in pairs]
            p_value = (float(scipy_stats.ttest_1samp(gaps, 0.0).pvalue)
                       if len(gaps) > 1 and np.std(gaps) > 0 else float("nan"))
            out.append(SeedGap(design, task, gaps, t_interval(gaps), p_value))
    return out
