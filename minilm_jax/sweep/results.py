"""The sweep's results table: one JSON row per evaluation point of every run (validation curve, test
of the best checkpoint, downstream scores of both inits), written atomically to ``results.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minilm_jax.data.shards import atomic_write_bytes
from minilm_jax.train.metrics import read_metrics

from .spec import Membership, Run


def _identity(run: Run, membership: Membership, name: str, workdir: Path,
              summary: dict[str, Any]) -> dict[str, Any]:
    params = summary["params"]
    return {"run": name, "workdir": str(workdir), "point": run.point, "group": membership.group,
            "base": membership.base, "factor": membership.factor,
            "factor_value": membership.factor_value, "params_total": int(params["total"]),
            "params_non_embedding": int(params["non_embedding"])}


def run_rows(run: Run, run_dir: Path) -> list[dict[str, Any]]:
    """Rows of one finished run (nothing if its pre-training has no summary yet)."""
    pre_dir = run_dir / "pretrain"
    summary_path = pre_dir / "summary.json"
    if not summary_path.is_file():
        return []
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "completed":
        return []
    batch = int(run.config.train.batch_size)
    per_seq = summary["flops_per_sequence"]
    curve = [r for r in read_metrics(pre_dir / "metrics.jsonl") if r["split"] == "validation"]
    best = summary.get("best", {})
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
        summaries = sorted([*(run_dir / "finetune").glob("*/summary.json"),  # one init
                            *(run_dir / "finetune").glob("*/*/summary.json")])  # both inits
        for ft_summary in summaries:
            ft = json.loads(ft_summary.read_text())
            if "final" not in ft:
                continue
            rows.append({**ident, "kind": "downstream", "task": ft["task"], "init": ft["init"],
                         "score": ft["final"]["mean"]["score"],
                         "score_std": ft["final"]["std"]["score"],
                         "best_score": ft["best"]["mean"]["score"],
                         "metrics": {k: v for k, v in ft["final"]["mean"].items() if k != "score"},
                         "final_validation_perplexity": (best.get("validation_perplexity")
                                                         if ft["init"] == "pretrained" else None),
                         "flops_paper": final_flops["paper"],
                         "flops_complete": final_flops["complete"],
                         "finetune_workdir": str(ft_summary.parent)})
    return rows


def write_results(runs: list[Run], root: Path) -> Path:
    """Rebuild ``root/results.jsonl`` from every run directory (atomic)."""
    lines = []
    for run in runs:
        lines += [json.dumps(row) for row in run_rows(run, root / "runs" / run.name)]
    path = root / "results.jsonl"
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return path
