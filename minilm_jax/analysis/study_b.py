"""Study B's four analyses over a finished ``study_b`` sweep (SPEC B).

The sweep's design names its runs: ``l1`` (1-layer, pre-training seed 0, the largest subset),
``l1__shards=n<N>`` (the same on a smaller subset), ``l1__seed=<s>`` (committee members on the largest
subset), ``l6`` (6 layers, the largest subset). Every run is fine-tuned on each task with the same
fine-tuning seeds, from its checkpoint and (once per architecture) from random init. Scores are the
test accuracy of each seed's epoch selected on the validation split carved from train.

1. **Gap** pre-trained - random per (model, subset, task): paired by fine-tuning seed (the same data
   order and head initialisation), t interval, n = seeds.
2. **Gap vs subset size**: per task, the change of the pre-trained score from the smallest to the
   largest subset (paired by seed), and over all (task, subset) points the Pearson r of the gap
   with log10(subset size) (Fisher-z interval, each run once).
3. **Gap vs token overlap**: the share of the task's token occurrences whose token occurs in the
   subset's pre-training text (and the type-level share), Pearson r with the gap over the same
   points. Within a task, overlap grows with subset size, so this is not separable from (2) here.
4. **Soft committee**: for each fine-tuning seed, the members' test probabilities (or logits) are
   averaged; accuracy is the mean over every member subset of size K (its sd over subsets is kept);
   the mean over seeds with a t interval, against the 6-layer model (paired by seed).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from minilm_jax.analysis.stats import (PearsonResult, mean_sd, paired_gap, pearson_fisher,
                                       t_interval)
from minilm_jax.errors import UserError
from minilm_jax.sweep.layout import SweepLayout, finetune_jobs
from minilm_jax.sweep.spec import Run, expand, finetune_run_config
from minilm_jax.tasks.committee_math import accuracy_vs_k
from minilm_jax.train.records import (FinetuneSummary, is_done, read_finetune_summary,
                                      read_pretrain_summary)

SHALLOW, DEEP = "l1", "l6"
_SUBSET = re.compile(r"^l1__shards=n(\d+)$")
_MEMBER = re.compile(r"^l1__seed=(\d+)$")


@dataclasses.dataclass
class Scores:
    """One fine-tuning run's per-seed test accuracy (selected epoch) and its majority baseline."""

    workdir: Path
    by_seed: dict[int, float]
    majority: float

    @classmethod
    def read(cls, workdir: Path) -> "Scores":
        if not is_done(workdir):
            raise UserError(f"{workdir} has not finished: run the sweep to completion first")
        summary: FinetuneSummary = read_finetune_summary(workdir)
        members = (summary.selected or {}).get("members") or []
        if len(members) != len(summary.seeds):
            raise UserError(f"{workdir}: {len(members)} selected scores for {len(summary.seeds)} seeds")
        return cls(workdir, {int(s): float(m["accuracy"]) for s, m in zip(summary.seeds, members)},
                   float(summary.majority.get("test", {}).get("accuracy", float("nan"))))


@dataclasses.dataclass
class Design:
    """Which run is which in the study B sweep, and where its fine-tuning runs are."""

    sweep: ml_collections.ConfigDict
    root: Path
    runs: dict[str, Run]
    subsets: dict[int, str]  # subset size -> the l1 run pre-trained on it
    members: list[str]  # committee members: l1 runs on the largest subset, by pre-training seed

    @classmethod
    def of(cls, sweep: ml_collections.ConfigDict, root: Path) -> "Design":
        runs = {run.name: run for run in expand(sweep)}
        if SHALLOW not in runs or DEEP not in runs:
            raise UserError(f"a study B sweep declares bases '{SHALLOW}' and '{DEEP}'; got {list(runs)}")
        sizes = {int(m.group(1)): name for name in runs if (m := _SUBSET.match(name))}
        largest = _subset_size(runs[SHALLOW])
        sizes[largest] = SHALLOW
        seeds = sorted(int(m.group(1)) for name in runs if (m := _MEMBER.match(name)))
        return cls(sweep, Path(root), runs, dict(sorted(sizes.items())),
                   [SHALLOW] + [f"l1__seed={s}" for s in seeds])

    def workdir(self, run: str, task: str, init: str) -> Path:
        for job in finetune_jobs(self.sweep, self.runs[run], self.layout):
            if job.task == task and job.init == init:
                return job.workdir
        raise UserError(f"the sweep has no {init} fine-tuning of {run} on {task}")

    @property
    def layout(self) -> SweepLayout:
        return SweepLayout(self.root)

    def scores(self, run: str, task: str, init: str) -> Scores:
        return Scores.read(self.workdir(run, task, init))

    def shards(self, run: str) -> str:
        return str(self.runs[run].config.data.shards)


def _subset_size(run: Run) -> int:
    match = re.search(r"n(\d+)/?$", str(run.config.data.shards))
    if not match:
        raise UserError(f"run {run.name}: data.shards={run.config.data.shards} is not a subset "
                        "folder n<N> (python -m minilm_jax.corpus subsets)")
    return int(match.group(1))


def pretraining_rows(design: Design) -> list[dict[str, Any]]:
    """Each run's best validation perplexity next to its subset's unigram and bigram perplexity
    (counted on the subset's own training split)."""
    from minilm_jax.data.baselines import load_baselines

    rows = []
    for name, run in design.runs.items():
        summary = read_pretrain_summary(design.layout.pretrain_dir(name))
        base = load_baselines(design.shards(name))["splits"]["validation"]
        rows.append({"run": name, "point": run.point, "subset": _subset_size(run),
                     "seed": int(run.config.seed), "steps": summary.step,
                     "perplexity": float((summary.best or {}).get("validation_perplexity", math.nan)),
                     "unigram": math.exp(base["unigram"]), "bigram": math.exp(base["bigram"])})
    return rows


def gap_rows(design: Design) -> list[dict[str, Any]]:
    """Analysis 1: one row per (model, subset, task) with pre-trained, random, majority and the gap."""
    rows = []
    targets = [(SHALLOW if size == max(design.subsets) else name, size)
               for size, name in design.subsets.items()] + [(DEEP, max(design.subsets))]
    for task in design.sweep.finetune_tasks:
        for run, size in targets:
            pre, rnd = design.scores(run, task, "pretrained"), design.scores(run, task, "random")
            rows.append({"task": task, "model": DEEP if run == DEEP else SHALLOW, "run": run,
                         "subset": size, "pretrained": mean_sd(list(pre.by_seed.values())),
                         "random": mean_sd(list(rnd.by_seed.values())), "majority": pre.majority,
                         "gap": paired_gap(pre.by_seed, rnd.by_seed),
                         "pretrained_by_seed": pre.by_seed, "random_by_seed": rnd.by_seed})
    return rows


def size_trend(design: Design, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Analysis 2: largest minus smallest subset per task (paired by seed), and r(gap, log10 size)."""
    shallow = [r for r in rows if r["model"] == SHALLOW]
    small, large = min(design.subsets), max(design.subsets)
    per_task = {}
    for task in design.sweep.finetune_tasks:
        at = {r["subset"]: r for r in shallow if r["task"] == task}
        per_task[task] = paired_gap(at[large]["pretrained_by_seed"], at[small]["pretrained_by_seed"])
    points = [(math.log10(r["subset"]), r["gap"].mean) for r in shallow]
    return {"smallest": small, "largest": large, "per_task": per_task,
            "pearson": pearson_fisher([x for x, _ in points], [y for _, y in points]),
            "points": len(points)}


def overlap_rows(design: Design, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Analysis 3: token overlap of each task's fine-tuning texts with each subset's pre-training
    text (occurrence and type shares), next to that point's gap."""
    from minilm_jax.corpus.overlap import shard_token_presence, token_overlap
    from minilm_jax.data.shards import read_manifest
    from minilm_jax.tasks.task_data import load_task_data
    from minilm_jax.tokenizer import load_tokenizer

    out = []
    texts: dict[str, list[str]] = {}
    for task in design.sweep.finetune_tasks:
        config = finetune_run_config(design.sweep, task, Path("unused"))
        data = load_task_data(config)
        examples = list(data.train) + list(data.validation) + [e for split in data.evals.values()
                                                                for e in split]
        texts[task] = [e.text_a for e in examples] + [e.text_b for e in examples if e.text_b]
    presence: dict[str, Any] = {}  # shard folder -> which token ids its train split holds
    task_ids: dict[str, list[list[int]]] = {}  # task -> its texts encoded (one tokenizer for all)
    for row in rows:
        if row["model"] != SHALLOW:
            continue
        shards = design.shards(row["run"])
        tok = load_tokenizer(read_manifest(shards)["tokenizer"]["path"])
        if shards not in presence:
            presence[shards] = shard_token_presence(shards, ["train"], tok.vocab_size)
            presence[shards][list(tok.special_ids)] = False
        if row["task"] not in task_ids:
            task_ids[row["task"]] = tok.encode_batch(texts[row["task"]])
        share = token_overlap(presence[shards], task_ids[row["task"]], tok.special_ids)
        out.append({"task": row["task"], "subset": row["subset"], "gap": row["gap"].mean, **share})
    return out


def overlap_trend(points: list[dict[str, Any]]) -> dict[str, PearsonResult]:
    gaps = [p["gap"] for p in points]
    return {"occurrence_share": pearson_fisher([p["occurrence_share"] for p in points], gaps),
            "type_share": pearson_fisher([p["type_share"] for p in points], gaps)}


def committee(design: Design, task: str, method: str = "prob") -> dict[str, Any]:
    """Analysis 4 for one task: committee accuracy vs K (mean over fine-tuning seeds of the mean
    over member subsets) and the largest committee against the 6-layer model."""
    logits, labels = [], None
    for member in design.members:
        pred = design.workdir(member, task, "pretrained") / "predictions"
        run_logits = np.load(pred / "test.selected.npy")  # [S, N, C]
        run_labels = np.load(pred / "test.labels.npy")
        if labels is not None and not np.array_equal(labels, run_labels):
            raise UserError(f"{pred}: test examples differ from the other members'")
        labels = run_labels
        logits.append(run_logits)
    stacked = np.stack(logits)  # [K, S, N, C]
    seeds = sorted(design.scores(SHALLOW, task, "pretrained").by_seed)
    by_k: dict[int, dict[int, float]] = {}
    spread: dict[int, list[float]] = {}  # sd over member subsets, per seed
    subsets: dict[int, int] = {}
    for s, seed in enumerate(seeds):
        for point in accuracy_vs_k(stacked[:, s], labels, method=method):
            by_k.setdefault(point.k, {})[seed] = 100 * point.accuracy
            spread.setdefault(point.k, []).append(100 * point.std)
            subsets[point.k] = point.n_subsets
    deep = design.scores(DEEP, task, "pretrained").by_seed
    k_max = max(by_k)
    return {"task": task, "method": method, "members": len(design.members),
            "by_k": {k: {**t_interval(list(v.values())), "member_subsets": subsets[k],
                         "sd_over_subsets": float(np.mean(spread[k]))} for k, v in by_k.items()},
            "deep": t_interval(list(deep.values())),
            "largest_minus_deep": paired_gap(by_k[k_max], deep),
            "single_minus_deep": paired_gap(by_k[1], deep)}
