"""The sweep's results table: one JSON row per evaluation point of every run (validation curve, test
of the best checkpoint, zero-shot minimal-pair accuracy per paradigm of each scored checkpoint and
random twin, downstream scores of both inits), written atomically to ``results.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minilm_jax.model.registry import is_library_encoder
from minilm_jax.storage import atomic_write_bytes
from minilm_jax.train.run_log import read_metrics
from minilm_jax.train.records import FinetuneSummary, read_finetune_summary, read_pretrain_summary

from .evals_stage import evaluation_rows
from .layout import SweepLayout, finetune_jobs
from .spec import Membership, Run


def _identity(run: Run, membership: Membership, name: str, workdir: Path,
              summary: dict[str, Any]) -> dict[str, Any]:
    params = summary["params"]
    design = (run.design or run.name) + name[len(run.name):]  # run@group -> design@group
    row = {"run": name, "workdir": str(workdir), "point": run.point, "group": membership.group,
           "base": membership.base, "factor": membership.factor,
           "factor_value": membership.factor_value, "params_total": int(params["total"]),
           "params_non_embedding": int(params["non_embedding"]),
           "design": design, "pretrain_seed": run.pretrain_seed}
    arch = str(run.config.model.arch)
    row["arch"] = arch  # every row says which encoder: a built-in's name or a user's variant
    extra = run.config.model.get("extra", None)
    if extra:  # a variant's fields, defaults included
        row["variant_fields"] = extra.to_dict() if hasattr(extra, "to_dict") else dict(extra)
    if not is_library_encoder(arch):  # a user's encoder variant
        if summary.get("counts_source"):  # its counts declared by its class, or derived
            row["counts_source"] = summary["counts_source"]
        recorded = workdir / "config.json"
        changes = (json.loads(recorded.read_text()).get("model_code_changes")
                   if recorded.is_file() else None)
        if changes:  # trained on under changed code (MINILM_ACCEPT_CODE_CHANGE=1)
            row["code_changes"] = list(changes)
    return row


def downstream_fields(ft: FinetuneSummary, workdir: Path) -> dict[str, Any]:
    """A downstream row's fields from a fine-tuning summary: scores per seed (final epoch), the
    checkpoint it started from (step, fraction, validation perplexity), baselines."""
    selected = ft.selected or {}
    pre = ft.pretrained or {}
    pretrained = ft.init == "pretrained"
    reported = ft.reported_splits or list(ft.majority)
    majority = [m["score"] for split, m in ft.majority.items()
                if split in reported and m and m.get("score") is not None]  # None: regression
    unk = [u["rate"] for u in ft.unk.values()]
    final = ft.final or {}
    return {"kind": "downstream", "task": ft.task, "init": ft.init,
            "score": final["mean"]["score"], "score_std": final["std"]["score"],
            "score_n": final.get("n", len(final["members"])),
            "seeds": list(ft.seeds),
            "member_scores": [m["score"] for m in final["members"]],
            "selected_score": selected.get("mean", {}).get("score"),
            "metrics": {k: v for k, v in final["mean"].items() if k != "score"},
            "checkpoint_step": pre.get("step") if pretrained else None,
            "checkpoint_fraction": None,  # set by the caller, which knows the run's length
            "final_validation_perplexity": pre.get("validation_perplexity") if pretrained else None,
            "majority_score": float(sum(majority) / len(majority)) if majority else None,
            "unk_rate": max(unk) if unk else None,
            "finetune_workdir": str(workdir),
            **({"code_changes": list(pre["code_changes"])} if pre.get("code_changes") else {})}


def run_rows(run: Run, layout: SweepLayout, finetune_dirs: list[Path], evals: Any = None
             ) -> list[dict[str, Any]]:
    """Rows of one finished run (nothing if its pre-training has no summary yet); ``finetune_dirs``
    are its fine-tuning runs (:func:`~minilm_jax.sweep.layout.finetune_jobs`; random-init twins
    shared with others of its architecture included); ``evals`` the sweep's zero-shot evaluation
    entries (their finished rows are added)."""
    run_dir, pre_dir = layout.run_dir(run.name), layout.pretrain_dir(run.name)
    summary_path = pre_dir / "summary.json"
    if not summary_path.is_file():
        return []
    record = read_pretrain_summary(summary_path)
    if record.status != "completed":
        return []
    summary = record.to_json()
    batch = int(run.config.train.batch_size)
    per_seq = summary["flops_per_sequence"]
    curve = [r for r in read_metrics(pre_dir / "metrics.jsonl") if r["split"] == "validation"]
    best = summary.get("best", {})
    finetune_summaries = sorted(d / "summary.json" for d in finetune_dirs
                                if (d / "summary.json").is_file())
    final_flops = {k: summary["step"] * batch * per_seq[k] for k in ("paper", "complete")}
    rows = []
    for i, membership in enumerate(run.memberships):
        name = run.name if i == 0 else f"{run.name}@{membership.group}"
        ident = _identity(run, membership, name, run_dir, summary)
        for r in curve:
            rows.append({**ident, "kind": "validation", "step": int(r["step"]),
                         "sequences_seen": int(r["step"]) * batch,
                         "flops_paper": r["step"] * batch * per_seq["paper"],
                         "flops_complete": r["step"] * batch * per_seq["complete"],
                         "loss": r["loss"], "perplexity": r["perplexity"]})
        if "test_loss" in best:
            rows.append({**ident, "kind": "test", "step": int(best["step"]),
                         "sequences_seen": int(best["step"]) * batch,
                         "flops_paper": best["step"] * batch * per_seq["paper"],
                         "flops_complete": best["step"] * batch * per_seq["complete"],
                         "loss": best["test_loss"], "perplexity": best["test_perplexity"]})
        for row in (evaluation_rows(layout, run.name, evals) if i == 0 else ()):  # once per run
            step = int(row["step"])
            rows.append({**ident, **row, "sequences_seen": step * batch,
                         "flops_paper": step * batch * per_seq["paper"],
                         "flops_complete": step * batch * per_seq["complete"],
                         "checkpoint_fraction": step / int(run.config.train.num_steps)})
        for ft_summary in finetune_summaries:
            ft = read_finetune_summary(ft_summary)
            if ft.final is None:
                continue
            row = {**ident, **downstream_fields(ft, ft_summary.parent),
                   "flops_paper": final_flops["paper"], "flops_complete": final_flops["complete"]}
            if row["checkpoint_step"] is not None:
                row["checkpoint_fraction"] = row["checkpoint_step"] / int(run.config.train.num_steps)
            rows.append(row)
    return rows


def baseline_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Unigram / bigram reference perplexities of every shard set the runs read."""
    from minilm_jax.data.baselines import shard_baselines
    from minilm_jax.data.shards import ShardError

    rows = []
    for shards in sorted({str(r.config.data.shards) for r in runs if r.config.data.shards}):
        try:
            rows += shard_baselines(shards)
        except (ShardError, OSError) as err:
            print(f"warning: no baselines for {shards}: {err}", flush=True)
    return rows


def write_results(runs: list[Run], layout: SweepLayout, sweep: Any) -> Path:
    """Rebuild the sweep's ``results.jsonl`` from every run's folders (atomic)."""
    lines = [json.dumps(row) for row in baseline_rows(runs)]
    for run in runs:
        dirs = [job.workdir for job in finetune_jobs(sweep, run, layout)]
        lines += [json.dumps(row) for row in run_rows(run, layout, dirs, sweep.get("evals"))]
    path = layout.results_path
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return path
