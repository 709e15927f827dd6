"""Incremental cost-effectiveness of growing one factor at a time (SPEC A, claim 4).

For each (base, factor) the base run and its ``ofat:<factor>`` runs are ordered by factor value
(numeric values numerically; otherwise by final FLOPs). Each step joins two neighbours, from the
smaller value to the larger:

    ICER = (C_next - C_prev) / (ppl_prev - ppl_next)

with ``C`` a run's final training FLOPs and ``ppl`` its best (lowest) validation perplexity: extra
FLOPs paid per point of perplexity gained. A step that gains nothing (``ppl_next >= ppl_prev``) is
*dominated* (ICER = inf). A step that gains while costing no more has ICER <= 0 (*dominant*).
A factor's summary is the median ICER of its steps that helped (gain > 0); a lower median is more
cost-effective, and factors without a helpful step rank last.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .results import RunSummary, point_sizes

OFAT_PREFIX = "ofat:"


@dataclass(frozen=True)
class IcerStep:
    """One step between neighbouring runs of a factor; ``side`` says whether it lies above or
    below the base value ("" when the base value is unknown)."""

    base: str
    factor: str
    prev: RunSummary
    next: RunSummary
    prev_value: Any
    next_value: Any
    side: str
    delta_flops: float
    gain: float
    icer: float
    status: str  # "helped", "dominant" (helped at no extra cost) or "dominated"


@dataclass(frozen=True)
class FactorSummary:
    """Median ICER of a factor's helpful steps (inf when none helped)."""

    base: str
    factor: str
    n_steps: int
    n_helped: int
    median_icer: float
    best_step: IcerStep | None
    note: str


def base_value(base_run: RunSummary, factor: str) -> Any:
    """The base run's value of ``factor``: its ``factor_value`` if set, else read from its model
    point for ``model.<size field>`` factors; None when unknown."""
    if base_run.factor_value is not None:
        return base_run.factor_value
    field = factor.split(".")[-1]
    return point_sizes(base_run.point).get(field)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _order(members: list[tuple[Any, RunSummary]]) -> list[tuple[Any, RunSummary]]:
    if all(_is_number(v) for v, _ in members):
        return sorted(members, key=lambda m: (m[0], m[1].final_flops, m[1].run))
    return sorted(members, key=lambda m: (m[1].final_flops, m[1].run))


def step_between(base: str, factor: str, prev: tuple[Any, RunSummary],
                 nxt: tuple[Any, RunSummary], side: str) -> IcerStep:
    """ICER of going from ``prev`` to ``nxt`` (each ``(factor value, run)``)."""
    delta = float(nxt[1].final_flops) - float(prev[1].final_flops)
    gain = float(prev[1].best_perplexity) - float(nxt[1].best_perplexity)
    if gain <= 0:
        icer, status = math.inf, "dominated"
    else:
        icer, status = delta / gain, ("helped" if delta > 0 else "dominant")
    return IcerStep(base=base, factor=factor, prev=prev[1], next=nxt[1], prev_value=prev[0],
                    next_value=nxt[0], side=side, delta_flops=delta, gain=gain, icer=icer,
                    status=status)


def _usable(run: RunSummary) -> bool:
    return run.final_flops is not None and run.best_perplexity is not None


def factor_steps(base_run: RunSummary | None, variants: Sequence[RunSummary], factor: str,
                 base: str) -> tuple[list[IcerStep], str]:
    """Steps along one factor, and a note on anything left out."""
    notes = []
    value = base_value(base_run, factor) if base_run is not None else None
    members = [(r.factor_value, r) for r in variants if _usable(r)]
    if len(members) < len(variants):
        notes.append(f"{len(variants) - len(members)} run(s) without validation points left out")
    if base_run is None:
        notes.append("no base run")
    elif value is None:
        notes.append("base value of the factor unknown: base left out")
    elif not _usable(base_run):
        notes.append("base run has no validation points: base left out")
    else:
        members.append((value, base_run))
    ordered = _order(members)
    numeric = value is not None and all(_is_number(v) for v, _ in ordered)
    steps = []
    for prev, nxt in zip(ordered, ordered[1:]):
        side = ""
        if numeric:
            side = "above base" if prev[0] >= value else "below base"
        steps.append(step_between(base, factor, prev, nxt, side))
    return steps, "; ".join(notes)


def ofat_sets(runs: Iterable[RunSummary]
              ) -> dict[tuple[str, str], tuple[RunSummary | None, list[RunSummary]]]:
    """(base, factor) -> (base run, its one-factor variants), from the ``group`` field."""
    runs = list(runs)
    bases = {r.base: r for r in runs if r.group == "base"}
    variants: dict[tuple[str, str], list[RunSummary]] = defaultdict(list)
    for r in runs:
        if r.group.startswith(OFAT_PREFIX):
            variants[(r.base, r.factor or r.group[len(OFAT_PREFIX):])].append(r)
    return {key: (bases.get(key[0]), members) for key, members in variants.items()}


def summarize_factor(base: str, factor: str, steps: Sequence[IcerStep], note: str = ""
                     ) -> FactorSummary:
    """Median ICER over the steps that helped."""
    helped = [s for s in steps if s.status != "dominated"]
    icers = sorted(s.icer for s in helped)
    if icers:
        mid = len(icers) // 2
        median = icers[mid] if len(icers) % 2 else (icers[mid - 1] + icers[mid]) / 2
    else:
        median = math.inf
    best = min(helped, key=lambda s: s.icer) if helped else None
    return FactorSummary(base=base, factor=factor, n_steps=len(steps), n_helped=len(helped),
                         median_icer=median, best_step=best, note=note)


def icer_analysis(runs: Iterable[RunSummary]) -> tuple[list[IcerStep], list[FactorSummary]]:
    """All steps, and per-factor summaries ranked from most to least cost-effective."""
    all_steps: list[IcerStep] = []
    summaries = []
    for (base, factor), (base_run, variants) in sorted(ofat_sets(runs).items()):
        steps, note = factor_steps(base_run, variants, factor, base)
        all_steps.extend(steps)
        summaries.append(summarize_factor(base, factor, steps, note))
    summaries.sort(key=lambda s: (s.median_icer, s.base, s.factor))
    return all_steps, summaries
