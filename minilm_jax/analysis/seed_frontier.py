"""The break of the compute-optimal frontier with the pre-training seed as the unit of replication.

The pooled frontier takes the lowest loss per FLOPs bin over every run of every seed, and its break
interval (:func:`minilm_jax.analysis.fits.bootstrap_break`) resamples only the frontier's points, so
it ignores that another pre-training seed gives another frontier. Here a hierarchical bootstrap
resamples both levels: each resample draws, for every design place with several pre-training seeds,
one of its seeds at random (runs without a seed, and places with one seed, are always in), builds
the frontier of the drawn runs' validation points (same bins, same FLOPs definition), resamples that
frontier's points with replacement and locates the best break; the interval is the same percentile
interval of the gaps' ends. Each seed's own frontier (seed s of every design place) gets its break
too, for the seeds every design place has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fits import (BreakInterval, TwoSegmentFit, check_confidence, fit_two_segments,
                   percentile_interval, resampled_break_bounds)
from .frontier import compute_frontier


@dataclass(frozen=True)
class SeedBreak:
    """The break over pre-training seeds: the hierarchical-bootstrap interval (None without
    resamples) and the break on each seed's own frontier (None: no valid split)."""

    interval: BreakInterval | None
    per_seed: dict[int, TwoSegmentFit | None]
    seeds_per_design: dict[str, int]  # multi-seed design place -> its number of seeds
    n_fixed_runs: int  # runs in every resample (no seed, or their place has one seed)


def _run_name(run: str) -> str:
    return run.split("@")[0]  # a run repeated for a further group is the same run


class _SeedFrontiers:
    """The usable validation points of a sweep, grouped by run, and the frontier of a run set."""

    def __init__(self, points: Sequence[Mapping[str, Any]], flops_key: str, bins_per_decade: int):
        flops = np.asarray([float(p[flops_key]) for p in points], dtype=np.float64)
        loss = np.asarray([float(p["loss"]) for p in points], dtype=np.float64)
        usable = np.isfinite(flops) & np.isfinite(loss) & (flops > 0) & (loss > 0)
        self.flops, self.loss = flops[usable], loss[usable]
        names = [_run_name(str(p["run"])) for p, ok in zip(points, usable) if ok]
        self.names, self.run_ids = np.unique(np.asarray(names, dtype=str), return_inverse=True)
        self.index = {str(n): i for i, n in enumerate(self.names)}
        self.bins_per_decade = bins_per_decade

    def frontier(self, runs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """FLOPs and loss of the frontier of the points of ``runs`` (run indices)."""
        mask = np.isin(self.run_ids, np.asarray(runs, dtype=np.int64))
        f = compute_frontier(self.flops[mask], self.loss[mask], self.bins_per_decade)
        return f.flops, f.loss


def seed_break(points: Sequence[Mapping[str, Any]], designs: Mapping[str, Mapping[int, str]],
               flops_key: str = "flops_paper", bins_per_decade: int = 11, min_points: int = 3,
               n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
               ) -> SeedBreak | None:
    """Hierarchical bootstrap of the break over ``designs`` (design -> {pre-training seed: run},
    as :func:`minilm_jax.analysis.seeds.multi_seed_designs` gives) and the break on each seed's
    frontier; None when no design place has two seeds with validation points."""
    check_confidence(confidence)
    data = _SeedFrontiers(points, flops_key, bins_per_decade)
    places = {d: {s: data.index[_run_name(r)] for s, r in by_seed.items()
                  if _run_name(r) in data.index} for d, by_seed in sorted(designs.items())}
    places = {d: by_seed for d, by_seed in places.items() if len(by_seed) >= 2}
    if not places:
        return None
    drawn = {i for by_seed in places.values() for i in by_seed.values()}
    fixed = [i for i in range(data.names.size) if i not in drawn]
    choices = [list(by_seed.values()) for by_seed in places.values()]
    sizes = np.asarray([len(c) for c in choices])
    interval = None
    if n_resamples > 0:
        rng = np.random.default_rng(seed)
        bounds = []
        for _ in range(n_resamples):
            picks = rng.integers(0, sizes)
            flops, loss = data.frontier(fixed + [c[k] for c, k in zip(choices, picks)])
            if flops.size < 2 * max(min_points, 2):
                continue
            found = resampled_break_bounds(np.log(flops), np.log(loss), rng, min_points)
            if found is not None:
                bounds.append(found)
        interval = percentile_interval(bounds, confidence, n_resamples, seed)
    shared = set.intersection(*(set(by_seed) for by_seed in places.values()))
    per_seed: dict[int, TwoSegmentFit | None] = {}
    for s in sorted(shared):
        flops, loss = data.frontier(fixed + [by_seed[s] for by_seed in places.values()])
        per_seed[s] = (fit_two_segments(flops, loss, min_points)
                       if np.unique(flops).size >= 2 else None)
    return SeedBreak(interval, per_seed, {d: len(s) for d, s in places.items()}, len(fixed))
