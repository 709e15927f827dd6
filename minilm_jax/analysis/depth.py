"""Depth against width at equal compute or equal size: the ``iso_flop:<name>`` and
``iso_param:<name>`` groups (SPEC A5, claim 4).

Per group: each member's layers, parameters, FLOPs per step, best validation perplexity and mean
pre-trained downstream score, averaged over the tasks *every* member was scored on (so the means
compare like with like). Winners: lowest perplexity; highest mean downstream score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .results import RunSummary, TaskScore, common_tasks, mean_scores

ISO_PREFIXES = ("iso_flop:", "iso_param:")


@dataclass(frozen=True)
class DepthMember:
    """One run of an iso group."""

    summary: RunSummary
    downstream_mean: float | None


@dataclass(frozen=True)
class DepthGroup:
    """An iso-FLOP or iso-parameter group and its winners (None when undecidable)."""

    group: str
    kind: str  # "iso_flop" or "iso_param"
    members: list[DepthMember]
    tasks: list[str]
    perplexity_winner: str | None
    downstream_winner: str | None


def iso_groups(runs: Iterable[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs of each iso group, sorted by layer count then name."""
    groups: dict[str, list[RunSummary]] = defaultdict(list)
    for r in runs:
        if r.group.startswith(ISO_PREFIXES):
            groups[r.group].append(r)
    return {g: sorted(m, key=lambda r: (r.num_layers or 0, r.run))
            for g, m in sorted(groups.items())}


def _winner(values: Mapping[str, float | None], lower_is_better: bool) -> str | None:
    known = {run: v for run, v in values.items() if v is not None}
    if len(known) < 2:
        return None
    ranked = sorted(known.items(), key=lambda kv: (kv[1] if lower_is_better else -kv[1], kv[0]))
    return None if ranked[0][1] == ranked[1][1] else ranked[0][0]


def depth_group(group: str, members: list[RunSummary],
                scores: Mapping[tuple[str, str, str], TaskScore]) -> DepthGroup:
    """One group's table and winners."""
    scored = [m.run for m in members if any(k[0] == m.run and k[2] == "pretrained" for k in scores)]
    tasks = common_tasks(scores, scored) if len(scored) == len(members) else []
    means = mean_scores(scores, "pretrained", tasks) if tasks else {}
    rows = [DepthMember(m, means.get(m.run)) for m in members]
    return DepthGroup(
        group=group, kind=group.split(":", 1)[0], members=rows, tasks=tasks,
        perplexity_winner=_winner({m.run: m.best_perplexity for m in members}, True),
        downstream_winner=_winner({r.summary.run: r.downstream_mean for r in rows}, False))


def depth_analysis(runs: Iterable[RunSummary], scores: Mapping[tuple[str, str, str], TaskScore]
                   ) -> list[DepthGroup]:
    """Every iso group, sorted by name."""
    return [depth_group(g, members, scores) for g, members in iso_groups(runs).items()]
