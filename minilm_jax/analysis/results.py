"""Queries over the sweep results table's rows (read and validated by
:mod:`minilm_jax.analysis.result_rows`): row selection, validation curves, per-run summaries and
downstream scores.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FLOPS_DEFINITIONS = ("paper", "complete")


# ---------------------------------------------------------------------------------------------
# selection


def rows_of_kind(rows: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    """The rows of one ``kind``."""
    return [r for r in rows if r["kind"] == kind]


def validation_curves(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Validation rows per run, sorted by step (runs in order of first appearance)."""
    curves: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows_of_kind(rows, "validation"):
        curves[r["run"]].append(r)
    return {run: sorted(points, key=lambda r: r["step"]) for run, points in curves.items()}


def last_validation(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The validation row with the largest step, per run."""
    return {run: curve[-1] for run, curve in validation_curves(rows).items()}


def best_validation(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The validation row with the lowest finite perplexity (earliest on ties), per run."""
    best = {}
    for run, curve in validation_curves(rows).items():
        finite = [r for r in curve if math.isfinite(r["perplexity"])]
        if finite:
            best[run] = min(finite, key=lambda r: (r["perplexity"], r["step"]))
    return best


def flops_field(definition: str) -> str:
    """``flops_paper`` or ``flops_complete``."""
    if definition not in FLOPS_DEFINITIONS:
        raise ValueError(f"FLOPs definition must be one of {FLOPS_DEFINITIONS}, got {definition!r}")
    return f"flops_{definition}"


# ---------------------------------------------------------------------------------------------
# per-run summaries

_POINT_RE = re.compile(r"^E(\d+)-H(\d+)-I(\d+)-L(\d+)-A(\d+)(?:-V(\d+))?$")
_POINT_FIELDS = ("emb_dim", "hidden_dim", "ffn_dim", "num_layers", "num_heads", "vocab_size")


def point_sizes(point: str) -> dict[str, int]:
    """Size fields of a model point (``E32-H32-I128-L1-A2[-V19010]`` or a named point); {} if
    the point is not recognised."""
    match = _POINT_RE.match(point.strip())
    if match:
        return {k: int(v) for k, v in zip(_POINT_FIELDS, match.groups()) if v is not None}
    try:
        from minilm_jax.model.sizes import NAMED_POINTS, parse_point  # noqa: PLC0415 (imports jax)
    except ImportError:
        return {}
    if point in NAMED_POINTS:
        return dict(parse_point(NAMED_POINTS[point][0]))
    return {}


@dataclass(frozen=True)
class RunSummary:
    """One run's identity and its headline numbers (FLOPs of one definition)."""

    run: str
    workdir: str
    point: str
    group: str
    base: str
    factor: str
    factor_value: Any
    params_total: int
    params_non_embedding: int
    num_layers: int | None
    final_step: int | None
    final_flops: float | None
    flops_per_step: float | None
    best_perplexity: float | None
    best_step: int | None
    final_perplexity: float | None


def summarize_runs(rows: Sequence[Mapping[str, Any]], flops: str = "paper"
                   ) -> dict[str, RunSummary]:
    """A :class:`RunSummary` per run. Final FLOPs: the largest cumulative FLOPs on any row of the
    run; FLOPs per step: final FLOPs / step of the last validation row."""
    field = flops_field(flops)
    first: dict[str, Mapping[str, Any]] = {}
    final_flops: dict[str, float] = {}
    for r in rows:
        if r["kind"] == "baseline":
            continue
        first.setdefault(r["run"], r)
        value = r.get(field)
        if value is not None and math.isfinite(value):
            final_flops[r["run"]] = max(final_flops.get(r["run"], 0.0), float(value))
    last, best = last_validation(rows), best_validation(rows)
    out = {}
    for run, r in first.items():
        end, top = last.get(run), best.get(run)
        total = final_flops.get(run)
        per_step = None
        if end is not None and end["step"] > 0:
            per_step = float(end[field]) / end["step"]
        out[run] = RunSummary(
            run=run, workdir=r["workdir"], point=r["point"], group=r["group"], base=r["base"],
            factor=r["factor"], factor_value=r["factor_value"], params_total=int(r["params_total"]),
            params_non_embedding=int(r["params_non_embedding"]),
            num_layers=point_sizes(r["point"]).get("num_layers"),
            final_step=int(end["step"]) if end is not None else None, final_flops=total,
            flops_per_step=per_step,
            best_perplexity=float(top["perplexity"]) if top is not None else None,
            best_step=int(top["step"]) if top is not None else None,
            final_perplexity=float(end["perplexity"]) if end is not None else None)
    return out


# ---------------------------------------------------------------------------------------------
# downstream


@dataclass(frozen=True)
class TaskScore:
    """Mean score of one (run, task, init) over its rows (seeds), with the row count."""

    run: str
    task: str
    init: str
    score: float
    n: int


def final_downstream_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Downstream rows of each run's last fine-tuned checkpoint (random rows always), each
    fine-tuning workdir once per run name."""
    rows = rows_of_kind(rows, "downstream")
    last: dict[str, int] = {}
    for r in rows:
        if r["init"] == "pretrained" and r.get("checkpoint_step") is not None:
            last[r["run"]] = max(last.get(r["run"], -1), int(r["checkpoint_step"]))
    seen: set[tuple[str, str]] = set()
    out = []
    for r in rows:
        step = r.get("checkpoint_step")
        if r["init"] == "pretrained" and step is not None and int(step) != last[r["run"]]:
            continue
        key = (r["run"], str(r.get("finetune_workdir") or id(r)))
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def baselines(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """``(name, split) -> perplexity`` of the baseline rows (first shard set seen)."""
    out: dict[tuple[str, str], float] = {}
    for r in rows_of_kind(rows, "baseline"):
        out.setdefault((r["name"], r["split"]), float(r["perplexity"]))
    return out


def downstream_scores(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], TaskScore]:
    """Mean downstream score per (run, task, init) at each run's last fine-tuned checkpoint (one
    row per fine-tuning run; a row's score is already the mean over its seeds)."""
    grouped: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in final_downstream_rows(rows):
        if math.isfinite(r["score"]):
            grouped[(r["run"], r["task"], r["init"])].append(float(r["score"]))
    return {key: TaskScore(*key, sum(v) / len(v), len(v)) for key, v in grouped.items()}


def mean_scores(scores: Mapping[tuple[str, str, str], TaskScore], init: str,
                tasks: Sequence[str] | None = None) -> dict[str, float]:
    """Mean over tasks of each run's score for one ``init``; with ``tasks``, only runs that have
    every one of them, averaged over exactly those."""
    per_run: dict[str, dict[str, float]] = defaultdict(dict)
    for (run, task, kind), s in scores.items():
        if kind == init:
            per_run[run][task] = s.score
    out = {}
    for run, by_task in per_run.items():
        wanted = list(tasks) if tasks is not None else list(by_task)
        if wanted and all(t in by_task for t in wanted):
            out[run] = sum(by_task[t] for t in wanted) / len(wanted)
    return out


def common_tasks(scores: Mapping[tuple[str, str, str], TaskScore], runs: Iterable[str],
                 init: str = "pretrained") -> list[str]:
    """Tasks scored (for ``init``) on every one of ``runs``, sorted."""
    sets = [{t for (r, t, i) in scores if r == run and i == init} for run in runs]
    return sorted(set.intersection(*sets)) if sets else []
