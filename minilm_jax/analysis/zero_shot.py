"""Zero-shot minimal-pair results of a sweep (``minimal_pairs`` rows): per evaluation, suite and
rule, each run's final checkpoint against its random-init twin pair by pair; the pre-trained minus
random accuracy per model point over pre-training seeds (the seed as the unit of replication);
accuracy against validation perplexity over every scored checkpoint (where the checkpoints span
several architectures, the correlation within architectures beside it); accuracy along
training."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minilm_jax.analysis.architecture_pooling import (ArchitecturePooling, architecture_pooling,
                                                     row_arch)
from minilm_jax.analysis.results import rows_of_kind
from minilm_jax.analysis.stats import Gap, PearsonResult, paired_gap, pearson_fisher
from minilm_jax.evals.minimal_pairs import PairedComparison, Summary, compare_paired, summarize

Row = Mapping[str, Any]


@dataclass(frozen=True)
class RunZeroShot:
    """One run under one (evaluation, suite, rule): its final checkpoint and random twin."""

    run: str
    point: str
    design: str  # the declared run it replicates (pre-training seeds); itself otherwise
    pretrain_seed: int | None
    final_step: int
    skipped: int  # pairs of the final checkpoint's paradigms skipped (unk or word list)
    final: Summary
    random: Summary | None
    paired: PairedComparison | None
    curve: list[tuple[int, float, float | None]]  # (step, pooled accuracy, validation perplexity)
    curve_ci: list[tuple[float, float]] = field(default_factory=list)  # Wilson 95% per curve step
    arch: str = "built-in"  # a user's variant's ``arch`` (analysis.variants.BUILT_IN otherwise)


@dataclass(frozen=True)
class ZeroShot:
    """Everything the report shows for one (evaluation, suite, rule)."""

    evaluation: str
    suite: str
    rule: str
    runs: list[RunZeroShot]
    seed_gaps: dict[str, Gap]  # design -> pre-trained minus random, paired by pre-training seed
    correlation: PearsonResult  # accuracy vs validation perplexity over scored checkpoints
    phenomena: dict[str, tuple[Summary, Summary | None]]  # final checkpoints of all runs pooled
    pooling: ArchitecturePooling | None = None  # the correlation's architectures (None: one)


def _group(rows: Iterable[Row], *keys: str) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def zero_shot_analyses(rows: Sequence[Row], confidence: float = 0.95) -> list[ZeroShot]:
    """One :class:`ZeroShot` per (evaluation, suite, rule) found in ``rows``."""
    found = []
    for (evaluation, suite, rule), mine in sorted(
            _group(rows_of_kind(rows, "minimal_pairs"), "evaluation", "suite", "rule").items()):
        runs, finals, twins = [], [], []
        for (run,), of_run in sorted(_group(mine, "run").items()):
            pre = [r for r in of_run if r["init"] == "pretrained"]
            rand = [r for r in of_run if r["init"] == "random"]
            if not pre:
                continue
            by_step = _group(pre, "step")
            final_step = max(s for (s,) in by_step)
            final = by_step[(final_step,)]
            curve, curve_ci = [], []
            for (step,), at in sorted(by_step.items()):
                ppl = at[0].get("validation_perplexity")
                summary = summarize(at)
                curve.append((int(step), summary.pooled, None if ppl is None else float(ppl)))
                curve_ci.append((summary.low, summary.high))
            runs.append(RunZeroShot(run, final[0]["point"], str(final[0].get("design") or run),
                                    final[0].get("pretrain_seed"),
                                    int(final_step),
                                    sum(r["pairs"] - r["scored"] for r in final),
                                    summarize(final),
                                    summarize(rand) if rand else None,
                                    compare_paired(final, rand) if rand else None, curve,
                                    curve_ci, row_arch(final[0])))
            finals += final
            twins += rand
        gaps = {}  # per design place: each pre-training seed's run against its own twin
        for (design,), of_design in sorted(_group(
                [{"design": r.design, "r": r} for r in runs], "design").items()):
            by_seed = {x["r"].pretrain_seed: x["r"] for x in of_design
                       if x["r"].random is not None and x["r"].pretrain_seed is not None}
            if len(by_seed) >= 2:
                gaps[design] = paired_gap({s: r.final.pooled for s, r in by_seed.items()},
                                          {s: r.random.pooled for s, r in by_seed.items()},
                                          confidence)
        points = [(ppl, acc, r.arch) for r in runs for _, acc, ppl in r.curve if ppl is not None]
        correlation = pearson_fisher([p for p, _, _ in points], [a for _, a, _ in points],
                                     confidence)
        pooling = architecture_pooling([p for p, _, _ in points], [a for _, a, _ in points],
                                       [arch for _, _, arch in points], confidence=confidence)
        phenomena = {}
        for (phenomenon,), of_final in sorted(_group(finals, "phenomenon").items()):
            twin = [r for r in twins if r["phenomenon"] == phenomenon]
            phenomena[phenomenon] = (summarize(of_final), summarize(twin) if twin else None)
        found.append(ZeroShot(evaluation, suite, rule, runs, gaps, correlation, phenomena,
                              pooling))
    return found
