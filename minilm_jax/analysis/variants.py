"""Encoder variants against the built-in encoder in one sweep: each variant run (rows whose
``arch`` is a user's variant; its fields, ``variant_fields``, set apart variants of one class)
paired with the built-in run of the same point, group and pre-training seed; per variant
and point the final validation perplexity of both over seeds, the variant's gap (paired by
pre-training seed: the unit of replication), its interval and p-value, and the ratio of their
training FLOPs per step (the variant's declared, checked counts); and per fine-tuning task the
pre-trained runs' downstream scores the same way (each pre-training run's score is the mean over
its fine-tuning seeds, so a run counts once; the latest checkpoint fine-tuned)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minilm_jax.analysis.result_rows import BUILT_IN, row_arch
from minilm_jax.analysis.results import summarize_runs
from minilm_jax.analysis.stats import Gap, MeanSD, mean_sd, paired_gap


@dataclass(frozen=True)
class VariantComparison:
    """One variant at one point against the built-in encoder."""

    arch: str
    point: str
    group: str
    baseline: MeanSD  # final validation perplexity over seeds
    variant: MeanSD
    gap: Gap  # variant - baseline, paired by pre-training seed
    flops_ratio: float | None  # variant / baseline training FLOPs per step
    fields: str = ""  # the variant's field values, ``name=value, ...`` (:func:`fields_text`)


@dataclass(frozen=True)
class DownstreamComparison:
    """One variant at one point against the built-in encoder on one fine-tuning task."""

    arch: str
    point: str
    group: str
    task: str
    baseline: MeanSD  # the runs' scores (each the mean over its fine-tuning seeds)
    variant: MeanSD
    gap: Gap  # variant - baseline, paired by pre-training seed
    finetune_seeds: int  # fine-tuning seeds per run (fewest)
    fields: str = ""  # the variant's field values (:func:`fields_text`)


def fields_text(row: Mapping[str, Any]) -> str:
    """A variant's field values as its rows record them (``variant_fields``), ``name=value, ...``
    by name; "" for a built-in encoder's rows and rows written before they were recorded."""
    fields = row.get("variant_fields") or {}
    return ", ".join(f"{name}={fields[name]!r}" if isinstance(fields[name], str)
                     else f"{name}={fields[name]}" for name in sorted(fields))


def _arch_and_seed(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str, Any]]:
    out: dict[str, tuple[str, str, Any]] = {}
    for r in rows:
        if r.get("kind") != "baseline" and r["run"] not in out:
            out[r["run"]] = (row_arch(r), fields_text(r), r.get("pretrain_seed"))
    return out


def _against_built_in(cells: Mapping[tuple[str, ...], dict[Any, Any]]
                      ) -> list[tuple[tuple[str, ...], dict[Any, Any], dict[Any, Any]]]:
    """``(key, variant runs, built-in runs)`` for each variant cell ``(arch, fields, *rest)``
    beside a built-in cell of the same ``rest``; the runs keyed by pre-training seed."""
    out = []
    for key, variant_runs in sorted(cells.items()):
        base_runs = cells.get((BUILT_IN, "", *key[2:]))
        if key[0] != BUILT_IN and base_runs:
            out.append((key, variant_runs, base_runs))
    return out


def compare_variants(rows: Sequence[Mapping[str, Any]], flops: str = "paper"
                     ) -> list[VariantComparison]:
    """Every variant (arch, point, group) that has built-in runs to pair with; empty when the
    rows hold no variant or no baseline beside it."""
    runs = summarize_runs(rows, flops)
    identity = _arch_and_seed(rows)
    cells: dict[tuple[str, str, str, str], dict[Any, Any]] = defaultdict(dict)
    for name, run in runs.items():
        arch, fields, seed = identity.get(name, (BUILT_IN, "", None))
        if run.final_perplexity is not None:
            cells[(arch, fields, run.point, run.group)][seed if seed is not None else name] = run
    out = []
    for (arch, fields, point, group), variant_runs, base_runs in _against_built_in(cells):
        gap = paired_gap({s: r.final_perplexity for s, r in variant_runs.items()},
                         {s: r.final_perplexity for s, r in base_runs.items()})
        per_step = [[r.flops_per_step for r in side.values() if r.flops_per_step]
                    for side in (variant_runs, base_runs)]
        ratio = (sum(per_step[0]) / len(per_step[0])) / (sum(per_step[1]) / len(per_step[1])) \
            if all(per_step) else None
        out.append(VariantComparison(
            arch, point, group, mean_sd([r.final_perplexity for r in base_runs.values()]),
            mean_sd([r.final_perplexity for r in variant_runs.values()]), gap, ratio,
            fields=fields))
    return out


def compare_downstream(rows: Sequence[Mapping[str, Any]]) -> list[DownstreamComparison]:
    """Every variant (arch, point, group) and task with built-in runs to pair with: the
    pre-trained runs' downstream scores at each run's latest fine-tuned checkpoint."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in rows:
        if r.get("kind") == "downstream" and r.get("init") == "pretrained" and r.get("score") \
                is not None:
            key = (r["run"], r["task"])
            if key not in latest or (r.get("checkpoint_step") or 0) > (
                    latest[key].get("checkpoint_step") or 0):
                latest[key] = r
    cells: dict[tuple[str, ...], dict[Any, Mapping[str, Any]]] = defaultdict(dict)
    for (name, task), r in latest.items():
        arch, seed = row_arch(r), r.get("pretrain_seed")
        key = (arch, fields_text(r), r["point"], r["group"], task)
        cells[key][seed if seed is not None else name] = r
    out = []
    for (arch, fields, point, group, task), variant_runs, base_runs in _against_built_in(cells):
        scores = [{s: float(r["score"]) for s, r in side.items()}
                  for side in (variant_runs, base_runs)]
        seeds = min(int(r.get("score_n") or len(r.get("seeds") or ())) for side in
                    (variant_runs, base_runs) for r in side.values())
        out.append(DownstreamComparison(
            arch, point, group, task, mean_sd(list(scores[1].values())),
            mean_sd(list(scores[0].values())), paired_gap(*scores), seeds, fields=fields))
    return out
