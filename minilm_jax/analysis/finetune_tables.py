"""Results tables of fine-tuning runs: one per pre-trained checkpoint, pre-trained vs random init
side by side, the GLUE average (one score per task: the mean of its metrics where it has two).

    python -m minilm_jax.analysis.finetune_tables RUN_DIR [RUN_DIR ...] --out=DIR
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from minilm_jax.storage import (RunPath, atomic_write_bytes, atomic_write_json, files_under,
                                is_remote, run_path)

from minilm_jax.analysis import cross_validation
from minilm_jax.analysis.architecture_pooling import architecture_pooling
from minilm_jax.analysis.stats import paired_gap, pearson_fisher
from minilm_jax.analysis.variants import BUILT_IN

from minilm_jax.tasks.metrics import glue_average
from minilm_jax.data import learned
from minilm_jax.tasks.registry import task_names


def find_summaries(roots: Iterable[str | Path]) -> list[RunPath]:
    """Every fine-tuning ``summary.json`` (one with a ``task`` field) under ``roots`` (local or
    ``gs://``), each once (identity: the resolved path: overlapping roots do not repeat a run)."""
    found: list[RunPath] = []
    seen: set[str] = set()
    for root in roots:
        root = run_path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such run directory: {root}")
        below = (root.rglob("summary.json") if not is_remote(root) else
                 [p for name, p in files_under(root).items()
                  if name.split("/")[-1] == "summary.json"])
        for path in sorted([root / "summary.json"] if (root / "summary.json").is_file() else below,
                           key=lambda p: str(p).split("/")):  # Path order, for gs:// paths too
            data = json.loads(path.read_text())
            if "task" in data and "init" in data and str(path.resolve()) not in seen:
                seen.add(str(path.resolve()))
                found.append(path)
    return found


def run_row(path: RunPath) -> dict[str, Any]:
    """One run's row: task, init, checkpoint, final/best score mean and std, metric means."""
    s = json.loads(path.read_text())
    pre = s.get("pretrained") or {}
    row = {"workdir": str(path.parent), "task": s["task"], "init": s["init"],
           "checkpoint": (f"{pre['workdir']} (step {pre.get('step')})" if pre.get("workdir")
                          else f"(none: {s['point']})"), "point": s["point"],
           "pretrain_validation_perplexity": pre.get("validation_perplexity"),
           "seeds": len(s["seeds"]), "status": s["status"], "examples": s.get("examples"),
           "vocab_filter": s.get("vocab_filter")}
    row["seed_list"] = list(s["seeds"])
    row["arch"] = _arch(s)
    reported = s.get("reported_splits") or list(s.get("majority") or {})
    row["reported"] = {split: (s.get("examples") or {}).get(split) for split in reported}
    majority = [m for split, m in (s.get("majority") or {}).items()
                if split in reported and m and m.get("score") is not None]
    row["majority_score"] = float(np.mean([m["score"] for m in majority])) if majority else None
    row["majority_metrics"] = ({k: float(np.mean([m[k] for m in majority])) for k in majority[0]
                                if k not in ("score", "prediction") and "/" not in k}
                               if majority else {})
    row["pretrain_reference"] = _pretrain_reference(pre.get("workdir"))
    row["pretrain_recipe"] = _pretrain_recipe(pre.get("workdir"))
    for which, key in (("final", "final"), ("best", "selected" if "selected" in s else "best")):
        if key in s:
            row[f"{which}_score"] = s[key]["mean"]["score"]
            row[f"{which}_score_std"] = s[key]["std"]["score"]  # sample std (ddof=1) in new runs
            row[f"{which}_metrics"] = {k: v for k, v in s[key]["mean"].items() if k != "score"}
            row[f"{which}_member_scores"] = [m["score"] for m in s[key]["members"]]
    return row


def _pretrain_reference(workdir: str | None) -> dict[str, Any] | None:
    """The unigram / bigram perplexities a pre-trained checkpoint's run recorded (None: none)."""
    if not workdir:
        return None
    try:
        summary = json.loads((run_path(workdir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary.get("reference") if isinstance(summary, dict) else None


def _arch(summary: dict[str, Any]) -> str:
    """The encoder a fine-tuning run trained: a user's variant's ``model.arch``, else
    :data:`~minilm_jax.analysis.variants.BUILT_IN`."""
    from minilm_jax.model.registry import is_library_encoder

    arch = str((summary.get("model") or {}).get("arch") or "")
    return arch if arch and not is_library_encoder(arch) else BUILT_IN


def _pretrain_recipe(workdir: str | None) -> dict[str, Any] | None:
    """The fields of the checkpoint's run that say which recipe it trained with
    (:data:`~minilm_jax.data.learned.SMALL_CORPUS_FIELDS` and its steps; None: unknown)."""
    if not workdir:
        return None
    try:
        config = json.loads((run_path(workdir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return {k: config[k] for k in (*learned.SMALL_CORPUS_FIELDS, "train.num_steps") if k in config}


def _cell(row: dict | None, key: str = "final") -> str:
    if row is None or f"{key}_score" not in row:
        return "—"
    text = f"{row[f'{key}_score']:.1f}"
    return text + (f" ± {row[f'{key}_score_std']:.1f} (n = {row['seeds']})" if row["seeds"] > 1
                   else " (n = 1)")


def glue_averages(rows: list[dict], which: str = "final") -> dict[str, float | None]:
    """Per init: the mean of per-task scores over the GLUE tasks present for that init."""
    glue = task_names("glue")
    out: dict[str, float | None] = {}
    for init in ("pretrained", "random"):
        scores = [r[f"{which}_score"] for r in rows
                  if r["init"] == init and r["task"] in glue and f"{which}_score" in r]
        out[init] = glue_average(scores) if scores else None
    return out


def tables(rows: list[dict]) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON object) with one table per checkpoint."""
    by_ckpt: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_ckpt[row["checkpoint"]].append(row)
    lines = ["# Fine-tuning results", "",
             "Scores x100 on the reported split (never seen in training or model selection), "
             "mean ± sample std (ddof = 1) over fine-tuning seeds (the unit of replication), at "
             "the final epoch; the next column has the same at each seed's epoch selected on the "
             "validation split carved from train. Gain: pre-trained − random init at the final "
             "epoch, a 95% interval paired by seed and its p-value. Score: the task's metric, or "
             "the mean of its metrics where it has several (listed under the task). Majority: "
             "always predicting the training split's most frequent class, each metric and their "
             "score (for regression, the training mean: correlations undefined). GLUE average: "
             "one score per task, averaged over the GLUE tasks present.", ""]
    payload: dict[str, Any] = {"checkpoints": []}
    for ckpt, group in sorted(by_ckpt.items()):
        ppl = next((r["pretrain_validation_perplexity"] for r in group
                    if r["pretrain_validation_perplexity"] is not None), None)
        reference = next((r["pretrain_reference"] for r in group if r.get("pretrain_reference")),
                         None)
        lines += [f"## {ckpt}", ""]
        if ppl is not None:
            lines += [f"Pre-training validation perplexity: {ppl:.2f}"
                      + learned.beside(ppl, reference), ""]
            recipe = next((r["pretrain_recipe"] for r in group if r.get("pretrain_recipe")), None)
            verdict = learned.verdict(ppl, reference, recipe)
            if verdict:
                lines += [verdict[0].upper() + verdict[1:], ""]
        lines += ["| task (split, n) | pre-trained | random init | gain | selected epoch: "
                  "pre-trained / random | majority | runs |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        tasks = sorted({r["task"] for r in group}, key=lambda t: (t not in task_names("glue"), t))
        worse = []
        for task in tasks:
            pre = next((r for r in group if r["task"] == task and r["init"] == "pretrained"), None)
            rnd = next((r for r in group if r["task"] == task and r["init"] == "random"), None)
            either = pre or rnd or {}
            metrics = ", ".join(f"{k} {v:.1f}" for k, v in either.get("final_metrics", {}).items())
            splits = ", ".join(f"{split}, n = {n}" if n is not None else split
                               for split, n in (either.get("reported") or {}).items())
            gain = "—"
            if pre and rnd and "final_score" in pre and "final_score" in rnd:
                gap = paired_gap(dict(zip(pre["seed_list"], pre["final_member_scores"])),
                                 dict(zip(rnd["seed_list"], rnd["final_member_scores"])))
                gain = gap.text() if gap.defined else (
                    f"{pre['final_score'] - rnd['final_score']:+.1f} ({gap.undefined})")
                if pre["final_score"] < rnd["final_score"]:
                    worse.append((task, gap))
            selected = " / ".join(_cell(r, "best") for r in (pre, rnd) if r)
            dirs = ", ".join(f"`{r['workdir']}`" for r in (pre, rnd) if r)
            majority = next((r for r in (pre, rnd) if r and r.get("majority_score") is not None),
                            None)
            base = "—" if majority is None else f"{majority['majority_score']:.1f}" + (
                " (" + ", ".join(f"{k} {v:.1f}" for k, v in majority["majority_metrics"].items())
                + ")" if len(majority["majority_metrics"]) > 1 else "")
            label = f"{task} ({splits})" if splits else task
            lines.append(f"| {label}<br>{metrics} | {_cell(pre)} | {_cell(rnd)} | {gain} | "
                         f"{selected} | {base} | {dirs} |")
        averages = glue_averages(group)
        if any(v is not None for v in averages.values()):
            fmt = {k: (f"{v:.1f}" if v is not None else "—") for k, v in averages.items()}
            lines.append(f"| **GLUE average** | **{fmt['pretrained']}** | **{fmt['random']}** "
                         "| | | | |")
        lines.append("")
        for task, gap in worse:
            settled = gap.defined and gap.high < 0
            lines += [f"Random init scored higher than the pre-trained model on {task}"
                      + (" (the interval excludes 0)" if settled else
                         " (within the interval: no difference shown)")
                      + ": pre-training did not help this task here.", ""]
        payload["checkpoints"].append({"checkpoint": ckpt, "pretrain_validation_perplexity": ppl,
                                       "pretrain_reference": reference,
                                       "runs": group, "glue_average": averages,
                                       "glue_average_best": glue_averages(group, "best")})
    return "\n".join(lines), payload


def perplexity_correlation(rows: list[dict], out: RunPath) -> str:
    """Pre-training perplexity vs mean pre-trained downstream score across checkpoints (needs 3+):
    Pearson and Spearman with bootstrap intervals, and ``correlation.png``. Markdown lines."""
    from minilm_jax.tasks.correlation import plot_correlation

    points: dict[str, tuple[float, list[float]]] = {}
    archs: dict[str, str] = {}
    for r in rows:
        if r["init"] == "pretrained" and r["pretrain_validation_perplexity"] and "final_score" in r:
            points.setdefault(r["checkpoint"], (r["pretrain_validation_perplexity"], []))[1].append(
                (r["task"], r["final_score"]))
            archs.setdefault(r["checkpoint"], r.get("arch") or BUILT_IN)
    task_sets = {frozenset(t for t, _ in v[1]) for v in points.values()}
    if len(points) < 3:
        return ""
    shared = sorted(frozenset.intersection(*task_sets))
    if not shared:
        return ("## Pre-training perplexity vs downstream score\n\nThe checkpoints share no task: "
                "no correlation.\n")
    names = sorted(points)
    ppl = [points[n][0] for n in names]
    score = [float(np.mean([v for t, v in points[n][1] if t in shared])) for n in names]
    result = pearson_fisher(ppl, score)
    lines = ["## Pre-training perplexity vs downstream score", "",
             f"{len(names)} checkpoints, mean final pre-trained score over the {len(shared)} task(s) "
             f"they all have ({', '.join(shared)}). Expected direction: negative.", "",
             f"- Pearson {result.text()}" + ("" if not result.defined
                                             else f" — {result.agreement(-1)}.")]
    pooling = architecture_pooling(ppl, score, [archs[n] for n in names])
    if pooling is not None:
        lines += pooling.lines("perplexity", "score", -1)
    lines.append("")
    if len(task_sets) > 1:
        lines += ["- Tasks not scored on every checkpoint are left out of the mean.", ""]
    if result.defined:
        plot_correlation(ppl, score, out / "correlation.png", log_x=True,
                         ylabel="mean downstream score (pre-trained)")
        lines += ["![perplexity vs downstream](correlation.png)", ""]
    return "\n".join(lines)


def cross_validated(paths: list[RunPath]) -> tuple[str, list[dict[str, Any]]]:
    """The cross-validated verdicts of fold runs (:mod:`.cross_validation`), one per task and
    fine-tuning folder: (Markdown, JSON objects)."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for path in paths:
        run = cross_validation.FoldRun.read(path)
        groups[(run.summary["task"], str(path.parent.parent.parent))].append(run)
    lines = ["# Fine-tuning results, cross-validated", ""]
    payload = []
    for (task, _), runs in sorted(groups.items()):
        pre = next((r.summary.get("pretrained") for r in runs if r.summary.get("pretrained")), {})
        checkpoint = (f"{pre['workdir']} (step {pre.get('step')})" if pre and pre.get("workdir")
                      else f"(none: {runs[0].summary['point']})")
        ppl = pre.get("validation_perplexity") if pre else None
        found = cross_validation.verdict(runs, checkpoint)
        lines.append(cross_validation.markdown(
            found, runs[0].summary["cross_validation"].get("classes", ())))
        if ppl is not None:
            reference = _pretrain_reference(pre.get("workdir"))
            lines += [f"Pre-training validation perplexity: {ppl:.2f}"
                      + learned.beside(ppl, reference), ""]
        payload.append(found.to_json())
    return "\n".join(lines), payload


def write_tables(roots: Iterable[str | Path],
                 out_dir: str | Path) -> tuple[RunPath, RunPath]:
    """Collect the runs under ``roots`` and write ``results.md`` and ``results.json`` to ``out_dir``."""
    paths = find_summaries(roots)
    if not paths:
        raise FileNotFoundError(f"no fine-tuning summary.json under {[str(r) for r in roots]}")
    folds = [p for p in paths if cross_validation.is_fold_run(json.loads(p.read_text()))]
    rows = [run_row(p) for p in paths if p not in folds]
    markdown, payload = tables(rows)
    if folds:
        cv_markdown, payload["cross_validated"] = cross_validated(folds)
        markdown = cv_markdown if not rows else markdown + "\n" + cv_markdown
    out = run_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown += "\n" + perplexity_correlation(rows, out)
    atomic_write_bytes(out / "results.md", markdown.encode())
    atomic_write_json(out / "results.json", payload)
    return out / "results.md", out / "results.json"


def main(argv: list[str] | None = None) -> int:
    from minilm_jax.cli import tool_parser
    from minilm_jax.errors import UserError

    parser = tool_parser(prog="python -m minilm_jax.analysis.finetune_tables",
                         description="Tabulate fine-tuning runs (Markdown + JSON).")
    parser.add_argument("runs", nargs="+", help="run directories (searched for summary.json)")
    parser.add_argument("--out", required=True, help="where results.md / results.json go")
    args = parser.parse_args(argv)
    try:
        md, _ = write_tables(args.runs, args.out)
    except (json.JSONDecodeError, KeyError) as err:
        raise UserError(f"unreadable run record: {err}") from err
    print(md.read_text())
    return 0


def entry() -> None:
    from minilm_jax.cli import run_tool

    run_tool(main)


if __name__ == "__main__":
    entry()
