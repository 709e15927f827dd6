"""Zero-shot minimal pairs with the pre-training seed as the unit of replication (a sweep with
``pretrain_seeds``; ``minimal_pairs`` rows carry ``design`` and ``pretrain_seed``). Per
(evaluation, suite, rule), over the design places scored with at least 2 seeds:

- **A1** (pre-training helps): per design place (a model size), each seed's final checkpoint
  accuracy minus the accuracy of *its own* random-init twin (the same architecture initialised
  with that run's seed), one gap per seed: mean, sample sd, n, 95% t interval, one-sample t p;
  pooled over design places with each pre-training run counted once (unit: the run).
- **A2** (accuracy follows validation perplexity): within each pre-training seed, Pearson r of
  accuracy against validation perplexity over that seed's scored checkpoints (every size and
  snapshot), and over seeds (mean Fisher z, t interval); where the checkpoints span several
  architectures (a variant sweep), the correlation within architectures beside it; per design
  place, each seed's change of accuracy from its earliest scored snapshot to its final
  checkpoint, over seeds.
- **Phenomena**: per phenomenon, each run's final minus own-twin accuracy, over the seeds of each
  design place and pooled over runs.

Accuracies are in % of scored pairs, pooled over a model's pairs; chance is 50%.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minilm_jax.analysis.architecture_pooling import row_arch
from minilm_jax.analysis.replication import (CorrelationOverSeeds, SeedEffect,
                                             correlation_over_seeds, seed_effect)
from minilm_jax.analysis.results import rows_of_kind
from minilm_jax.analysis.stats import t_interval
from minilm_jax.evals.minimal_pairs import CHANCE, summarize

Row = Mapping[str, Any]
RUN_UNIT = "pre-training run"  # pooled over design places: each (design, seed) run once


@dataclass(frozen=True)
class SeedRun:
    """One pre-training run under one (evaluation, suite, rule)."""

    run: str
    design: str
    seed: int
    final_step: int
    final: float  # accuracy of the final checkpoint
    twin: float  # accuracy of this run's own random-init twin
    curve: list[tuple[int, float, float | None]]  # (step, accuracy, validation perplexity)
    final_phenomena: dict[str, float]
    twin_phenomena: dict[str, float]
    arch: str = "built-in"  # a user's variant's ``arch`` (analysis.variants.BUILT_IN otherwise)

    @property
    def gap(self) -> float:
        return self.final - self.twin


@dataclass(frozen=True)
class PhenomenonSeeds:
    """One phenomenon: final minus own-twin accuracy per design place over its seeds and pooled
    over runs, with the final and twin accuracies over runs (t intervals)."""

    phenomenon: str
    by_design: dict[str, SeedEffect]
    pooled: SeedEffect
    final: dict[str, float]
    twin: dict[str, float]


@dataclass(frozen=True)
class ZeroShotSeeds:
    """A1, A2 and the phenomena over pre-training seeds for one (evaluation, suite, rule)."""

    evaluation: str
    suite: str
    rule: str
    runs: list[SeedRun]
    final_accuracy: dict[str, dict[str, float]]  # design -> t interval over its seeds
    twin_accuracy: dict[str, dict[str, float]]
    a1: dict[str, SeedEffect]  # design -> final minus own twin, one value per seed
    a1_pooled: SeedEffect  # every run once
    a2: CorrelationOverSeeds  # accuracy vs validation perplexity within each seed
    snapshot_change: dict[str, SeedEffect]  # design -> final minus earliest snapshot, per seed
    phenomena: dict[str, PhenomenonSeeds]
    chance: float = CHANCE


def _group(rows: Sequence[Row], *keys: str) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def _phenomena(rows: Sequence[Row]) -> dict[str, float]:
    return {ph: summarize(of).pooled for (ph,), of in sorted(_group(rows, "phenomenon").items())}


def seed_runs(rows: Sequence[Row]) -> list[SeedRun]:
    """Every run with a pre-training seed, a scored final checkpoint and a scored twin (rows of
    one (evaluation, suite, rule))."""
    out = []
    for (run,), of_run in sorted(_group(rows, "run").items()):
        pre = [r for r in of_run if r["init"] == "pretrained"]
        twin = [r for r in of_run if r["init"] == "random"]
        if not pre or not twin or pre[0].get("pretrain_seed") is None:
            continue
        seed = pre[0]["pretrain_seed"]
        by_step = _group(pre, "step")
        curve = []
        for (step,), at in sorted(by_step.items()):
            ppl = at[0].get("validation_perplexity")
            curve.append((int(step), summarize(at).pooled, None if ppl is None else float(ppl)))
        final_step = max(s for (s,) in by_step)
        final = by_step[(final_step,)]
        out.append(SeedRun(str(run), str(pre[0].get("design") or run), int(seed),
                           int(final_step), summarize(final).pooled, summarize(twin).pooled,
                           curve, _phenomena(final), _phenomena(twin), row_arch(pre[0])))
    return out


def _by_design(runs: Sequence[SeedRun]) -> dict[str, dict[int, SeedRun]]:
    """design -> {seed: run}, designs with >= 2 seeds only; a seed twice in a design is an error."""
    out: dict[str, dict[int, SeedRun]] = defaultdict(dict)
    for r in runs:
        if r.seed in out[r.design]:
            raise ValueError(f"design {r.design!r} has two runs with pre-training seed {r.seed} "
                             f"({out[r.design][r.seed].run}, {r.run})")
        out[r.design][r.seed] = r
    return {d: dict(sorted(s.items())) for d, s in sorted(out.items()) if len(s) >= 2}


def analyse(evaluation: str, suite: str, rule: str, runs: Sequence[SeedRun],
            confidence: float = 0.95) -> ZeroShotSeeds | None:
    """The over-seeds analyses of ``runs`` (None without a design place of >= 2 seeds)."""
    designs = _by_design(runs)
    if not designs:
        return None
    kept = [r for by_seed in designs.values() for r in by_seed.values()]
    a1 = {d: seed_effect(d, {s: r.gap for s, r in by_seed.items()}, confidence=confidence)
          for d, by_seed in designs.items()}
    pooled = seed_effect("pooled", {r.run: r.gap for r in kept}, RUN_UNIT, confidence)
    points: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for r in kept:
        points[r.seed] += [(ppl, acc, r.arch) for _, acc, ppl in r.curve if ppl is not None]
    change = {d: seed_effect(d, {s: r.final - r.curve[0][1] for s, r in by_seed.items()},
                             confidence=confidence)
              for d, by_seed in designs.items() if all(len(r.curve) >= 2 for r in by_seed.values())}
    phenomena = {}
    for ph in sorted({p for r in kept for p in r.final_phenomena}):
        have = [r for r in kept if ph in r.final_phenomena and ph in r.twin_phenomena]
        gaps = {r.run: r.final_phenomena[ph] - r.twin_phenomena[ph] for r in have}
        by_design = {}
        for d, by_seed in designs.items():
            mine = {s: gaps[r.run] for s, r in by_seed.items() if r.run in gaps}
            if mine:
                by_design[d] = seed_effect(d, mine, confidence=confidence)
        phenomena[ph] = PhenomenonSeeds(
            ph, by_design, seed_effect(ph, gaps, RUN_UNIT, confidence),
            t_interval([r.final_phenomena[ph] for r in have], confidence),
            t_interval([r.twin_phenomena[ph] for r in have], confidence))
    return ZeroShotSeeds(
        evaluation, suite, rule, kept,
        {d: t_interval([r.final for r in s.values()], confidence) for d, s in designs.items()},
        {d: t_interval([r.twin for r in s.values()], confidence) for d, s in designs.items()},
        a1, pooled, correlation_over_seeds(points, confidence), change, phenomena)


def zero_shot_seed_analyses(rows: Sequence[Row], confidence: float = 0.95) -> list[ZeroShotSeeds]:
    """One :class:`ZeroShotSeeds` per (evaluation, suite, rule) with a multi-seed design place."""
    found = []
    for (evaluation, suite, rule), mine in sorted(
            _group(rows_of_kind(rows, "minimal_pairs"), "evaluation", "suite", "rule").items()):
        result = analyse(evaluation, suite, rule, seed_runs(mine), confidence)
        if result is not None:
            found.append(result)
    return found
