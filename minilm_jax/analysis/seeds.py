"""Pre-training seeds as the unit of replication: for every design place of a sweep pre-trained
with several seeds (``pretrain_seeds``; rows carry ``design`` and ``pretrain_seed``), the final
validation loss over seeds and the pre-trained-minus-random downstream gap computed per
pre-training seed (its fine-tuning seeds averaged inside), each with n, the sample sd, a 95%
interval and, for gaps, a p-value (one-sample t; Welch's t against a twin the seeds share); ICER
and the iso groups computed within each seed (runs of different seeds are never compared with each
other) and summarised over seeds;
the perplexity-vs-downstream correlation within each pre-training seed, summarised over seeds.
Each run is counted once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minilm_jax.analysis.depth import depth_analysis
from minilm_jax.analysis.downstream import (CheckpointCorrelation, finetune_runs,
                                            perplexity_correlation)
from minilm_jax.analysis.icer import icer_analysis
from minilm_jax.analysis.replication import gap_to_shared_baseline
from minilm_jax.analysis.results import (RunSummary, downstream_scores, final_downstream_rows,
                                         rows_of_kind)
from minilm_jax.analysis.stats import t_interval
from minilm_jax.deferred_import import Deferred

scipy_stats = Deferred("scipy.stats")  # imported at first use, not with the commands


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
    interval: dict[str, float]  # mean and sd of the gaps, n seeds, low and high (``method``'s)
    p_value: float
    method: str = "t"  # "t": one-sample over the gaps; else Welch's against a shared twin


def multi_seed_designs(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    """design -> {pre-training seed: run} for designs with at least two seeds. A run's rows under
    a further group (``run@group``, the same run again) are not another design: each run is
    counted once."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    for r in rows_of_kind(rows, "validation"):
        if "@" in str(r["run"]):
            continue
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
    for design, runs in sorted(multi_seed_designs(rows).items()):
        per_seed = {seed: sorted(curves[run], key=lambda r: r["step"]) for seed, run in runs.items()}
        losses = [float(c[-1]["loss"]) for c in per_seed.values()]
        out.append(SeedSpread(
            design=design, point=next(iter(per_seed.values()))[0]["point"],
            seeds=list(per_seed), losses=losses, interval=t_interval(losses),
            curves={s: [(float(r[flops_key]), float(r["loss"])) for r in c]
                    for s, c in per_seed.items()}))
    return out


def _twins(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(run, task) -> the random-init row of that run's fine-tuning on that task."""
    return {(r["run"], r["task"]): r for r in final_downstream_rows(rows) if r["init"] == "random"}


def seed_gaps(rows: list[Mapping[str, Any]]) -> list[SeedGap]:
    """Per design place and task scored with both inits on every seed: the gap per pre-training
    seed (n = seeds) with a 95% interval and p. Where every seed has its own twin: a one-sample t
    over the gaps. Where one random-init twin is shared by the design's seeds (one fine-tuning
    workdir): Welch's t between the seeds' pre-trained scores and the twin's fine-tuning seeds,
    so the twin, one run, counts once and its own spread counts
    (:func:`~minilm_jax.analysis.replication.gap_to_shared_baseline`)."""
    scores, twins = downstream_scores(rows), _twins(rows)
    out = []
    for design, runs in sorted(multi_seed_designs(rows).items()):
        tasks = sorted({t for (run, t, _) in scores if run in runs.values()})
        for task in tasks:
            pairs = [(scores.get((run, task, "pretrained")), scores.get((run, task, "random")))
                     for run in runs.values()]
            if any(p is None or r is None for p, r in pairs):
                continue
            gaps = [p.score - r.score for p, r in pairs]
            shared = {str(twins[(run, task)].get("finetune_workdir") or run)
                      for run in runs.values() if (run, task) in twins}
            twin = twins.get((next(iter(runs.values())), task))
            if len(shared) == 1 and len(runs) > 1 and twin and twin.get("member_scores"):
                effect = gap_to_shared_baseline(design, {s: p.score for s, (p, _) in
                                                         zip(runs, pairs)},
                                                twin["member_scores"])
                interval = {"mean": effect.mean, "sd": effect.sd, "n": effect.n,
                            "low": effect.low, "high": effect.high}
                out.append(SeedGap(design, task, gaps, interval, effect.p, effect.method))
                continue
            p_value = (float(scipy_stats.ttest_1samp(gaps, 0.0).pvalue)
                       if len(gaps) > 1 and np.std(gaps) > 0 else float("nan"))
            out.append(SeedGap(design, task, gaps, t_interval(gaps), p_value))
    return out


# ------------------------------------------------------------------ ICER and depth over seeds
def run_seeds(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int | None, str]]:
    """run -> (pre-training seed, design) from its rows (None and the run itself when absent)."""
    out: dict[str, tuple[int | None, str]] = {}
    for r in rows:
        if r["kind"] != "baseline" and r["run"] not in out:
            seed = r.get("pretrain_seed")
            out[r["run"]] = (int(seed) if seed is not None else None, str(r.get("design") or r["run"]))
    return out


def seed_partitions(runs: Mapping[str, RunSummary], rows: Iterable[Mapping[str, Any]]
                    ) -> dict[int | None, dict[str, RunSummary]]:
    """The runs of each pre-training seed (one partition, keyed by its seed or None, when the
    sweep has one seed per design place): ICER and depth compare runs within one seed."""
    if not multi_seed_designs(list(rows)):
        return {None: dict(runs)}
    seeds = run_seeds(rows)
    out: dict[int | None, dict[str, RunSummary]] = defaultdict(dict)
    for name, summary in runs.items():
        out[seeds.get(name, (None, name))[0]][name] = summary
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


@dataclass(frozen=True)
class SeedFactor:
    """A factor's median ICER in each pre-training seed, and over seeds."""

    base: str
    factor: str
    per_seed: dict[int, float]  # seed -> median ICER of its helpful steps (inf: none helped)
    median: float  # median over seeds
    log10_interval: dict[str, float]  # t interval of log10 ICER over seeds with a finite one


def icer_over_seeds(partitions: Mapping[int | None, Mapping[str, RunSummary]]
                    ) -> list[SeedFactor]:
    """Per (base, factor): its ICER computed within each seed, then summarised over seeds; ranked
    by the median over seeds (lower = more cost-effective)."""
    per: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for seed, runs in partitions.items():
        if seed is None:
            continue
        for f in icer_analysis(runs.values())[1]:
            per[(f.base, f.factor)][seed] = f.median_icer
    out = []
    for (base, factor), values in per.items():
        finite = [np.log10(v) for v in values.values() if np.isfinite(v) and v > 0]
        out.append(SeedFactor(base, factor, dict(sorted(values.items())),
                              float(np.median(list(values.values()))),
                              t_interval(finite) if finite else {"n": 0}))
    return sorted(out, key=lambda f: (f.median, f.base, f.factor))


@dataclass(frozen=True)
class SeedDepth:
    """An iso group over pre-training seeds: each member design's best validation perplexity
    (t interval over seeds) and how many seeds each design won."""

    group: str
    perplexity: dict[str, dict[str, float]]  # design -> t interval of best perplexity
    wins: dict[str, int]  # design -> seeds in which it had the lowest perplexity


def depth_over_seeds(partitions: Mapping[int | None, Mapping[str, RunSummary]],
                     rows: Iterable[Mapping[str, Any]], scores: Mapping[Any, Any]
                     ) -> list[SeedDepth]:
    """Every iso group, its depth analysis done within each seed and summarised over seeds."""
    designs = {run: design for run, (_, design) in run_seeds(rows).items()}
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    wins: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for seed, runs in partitions.items():
        if seed is None:
            continue
        for group in depth_analysis(runs.values(), scores):
            for member in group.members:
                if member.summary.best_perplexity is not None:
                    values[group.group][designs.get(member.summary.run, member.summary.run)].append(
                        member.summary.best_perplexity)
            if group.perplexity_winner:
                wins[group.group][designs.get(group.perplexity_winner,
                                              group.perplexity_winner)] += 1
    return [SeedDepth(g, {d: t_interval(v) for d, v in sorted(members.items())},
                      dict(wins[g])) for g, members in sorted(values.items())]


# ------------------------------------------------------------------ perplexity vs downstream
@dataclass(frozen=True)
class SeedCorrelations:
    """Perplexity vs mean pre-trained score within each pre-training seed (one point per checkpoint
    of that seed's runs, over the tasks of the pooled correlation) and summarised over seeds."""

    tasks: list[str]
    per_seed: dict[int, CheckpointCorrelation]
    pooled: CheckpointCorrelation  # every checkpoint of every seed (the report's section 5)
    mean_r: float  # tanh of the mean Fisher z over the seeds with a defined r (NaN: none)
    r_min: float
    r_max: float
    n_defined: int  # seeds with a defined r


def fisher_mean(rs: Sequence[float]) -> float:
    """``tanh(mean(arctanh r))`` (r clipped to +-(1 - 1e-12) so a perfect r stays finite)."""
    if not rs:
        return float("nan")
    z = np.arctanh(np.clip(np.asarray(rs, dtype=np.float64), -1 + 1e-12, 1 - 1e-12))
    return float(np.tanh(z.mean()))


def correlation_over_seeds(rows: Iterable[Mapping[str, Any]]) -> SeedCorrelations | None:
    """:func:`perplexity_correlation` within each pre-training seed, restricted to the tasks every
    checkpoint shares; None without multi-seed design places or without a pooled correlation."""
    rows = list(rows)
    if not multi_seed_designs(rows):
        return None
    runs = finetune_runs(rows)
    pooled = perplexity_correlation(runs)
    if not pooled.tasks:
        return None
    seed_of = {run.split("@")[0]: seed for run, (seed, _) in run_seeds(rows).items()
               if seed is not None}
    per_seed: dict[int, CheckpointCorrelation] = {}
    for seed in sorted(set(seed_of.values())):
        mine = [ft for ft in runs if ft.task in pooled.tasks
                and any(seed_of.get(name) == seed for name in ft.runs)]
        correlation = perplexity_correlation(mine)
        if correlation.points:
            per_seed[seed] = correlation
    if not per_seed:
        return None
    rs = [c.result.r for c in per_seed.values() if c.result is not None and c.result.defined]
    nan = float("nan")
    return SeedCorrelations(pooled.tasks, per_seed, pooled, fisher_mean(rs),
                            min(rs) if rs else nan, max(rs) if rs else nan, len(rs))
