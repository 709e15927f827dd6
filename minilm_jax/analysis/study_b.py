"""Study B's four analyses over a finished ``study_b`` sweep (SPEC B), per pre-training run
(fine-tuning seeds as the unit); :mod:`minilm_jax.analysis.study_b_seeds` re-states them with the
pre-training seed as the unit.

The sweep's bases are ``l1`` (1 layer) and ``l6`` (6 layers); each run is a model (its base), a
pre-training subset (its ``data.shards`` folder ``n<N>``) and a pre-training seed: with
``pretrain_seeds`` the runs are ``l1__seed=<s>``, ``l1__shards=n<N>__seed=<s>``, ``l6__seed=<s>``
(protocol v1/v2's ``l1``, ``l1__shards=n<N>``, ``l1__seed=<s>``, ``l6`` are read the same way).
The committee's members are the ``l1`` runs on the largest subset, one per pre-training seed.
Every run is fine-tuned on each task with the same fine-tuning seeds, from its checkpoint and
(once per architecture) from random init. Scores are the test accuracy of each seed's epoch
selected on the validation split carved from train.

1. **Gap** pre-trained - random per (model, subset, pre-training seed, task): paired by
   fine-tuning seed (the same data order and head initialisation), t interval, n = seeds.
2. **Gap vs subset size**: per pre-training seed and task, the change of the pre-trained score
   from the smallest to the largest subset (paired by fine-tuning seed).
3. **Gap vs token overlap**: the share of the task's token occurrences whose token occurs in the
   subset's pre-training text (and the type-level share), per (task, subset). Within a task,
   overlap grows with subset size, so this is not separable from (2) here.
4. **Soft committee**: for each fine-tuning seed, the members' test probabilities (or logits) are
   averaged; accuracy is the mean over every member subset of size K (its sd over subsets is kept);
   the mean over seeds with a t interval, against the 6-layer model of the lowest pre-training
   seed (paired by fine-tuning seed); every 6-layer seed's and every member's scores are kept for
   the analysis over pre-training seeds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from minilm_jax.analysis.stats import mean_sd, paired_gap, t_interval
from minilm_jax.errors import UserError
from minilm_jax.sweep.layout import SweepLayout, finetune_jobs
from minilm_jax.sweep.spec import Run, expand, finetune_run_config
from minilm_jax.tasks.committee_math import accuracy_vs_k
from minilm_jax.train.records import (FinetuneSummary, is_done, read_finetune_summary,
                                      read_pretrain_summary)

SHALLOW, DEEP = "l1", "l6"


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
    cells: dict[tuple[str, int], dict[int, str]]  # (model, subset) -> {pre-training seed: run}
    subsets: dict[int, list[str]]  # subset size -> the l1 runs pre-trained on it, by seed
    members: list[str]  # committee members: l1 runs on the largest subset, one per seed
    deep: dict[int, str]  # pre-training seed -> l6 run (on the largest subset)

    @classmethod
    def of(cls, sweep: ml_collections.ConfigDict, root: Path) -> "Design":
        runs = {run.name: run for run in expand(sweep)}
        cells: dict[tuple[str, int], dict[int, str]] = {}
        for name, run in runs.items():
            model = run.memberships[0].base
            if model not in (SHALLOW, DEEP):
                raise UserError(f"a study B sweep declares bases '{SHALLOW}' and '{DEEP}' only; "
                                f"run {name} is of {model!r}")
            cell = cells.setdefault((model, _subset_size(run)), {})
            if run.pretrain_seed in cell:
                raise UserError(f"runs {cell[run.pretrain_seed]} and {name} are the same model, "
                                f"subset and pre-training seed ({run.pretrain_seed})")
            cell[run.pretrain_seed] = name
        cells = {k: dict(sorted(v.items())) for k, v in sorted(cells.items())}
        subsets = {size: list(by_seed.values()) for (model, size), by_seed in cells.items()
                   if model == SHALLOW}
        if not subsets or not any(model == DEEP for model, _ in cells):
            raise UserError(f"a study B sweep declares bases '{SHALLOW}' and '{DEEP}'; got {list(runs)}")
        largest = max(subsets)
        deep = cells.get((DEEP, largest))
        if not deep:
            raise UserError(f"the study B sweep has no '{DEEP}' run on the largest subset "
                            f"n{largest}")
        return cls(sweep, Path(root), runs, cells, subsets,
                   list(cells[(SHALLOW, largest)].values()), deep)

    @property
    def largest(self) -> int:
        return max(self.subsets)

    def seed_of(self, run: str) -> int:
        return self.runs[run].pretrain_seed

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
    """Analysis 1: one row per (task, model, subset, pre-training seed) with pre-trained, random,
    majority and the gap paired by fine-tuning seed (``seed``: the pre-training seed)."""
    rows = []
    cells = [(model, size, seed, run) for (model, size), by_seed in design.cells.items()
             for seed, run in by_seed.items()]
    for task in design.sweep.finetune_tasks:
        for model, size, seed, run in cells:
            pre, rnd = design.scores(run, task, "pretrained"), design.scores(run, task, "random")
            rows.append({"task": task, "model": model, "run": run, "seed": seed,
                         "subset": size, "pretrained": mean_sd(list(pre.by_seed.values())),
                         "random": mean_sd(list(rnd.by_seed.values())), "majority": pre.majority,
                         "gap": paired_gap(pre.by_seed, rnd.by_seed),
                         "pretrained_by_seed": pre.by_seed, "random_by_seed": rnd.by_seed,
                         "random_workdir": str(rnd.workdir)})
    return rows


def size_trend(design: Design, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Analysis 2 per pre-training seed: largest minus smallest subset per task (paired by
    fine-tuning seed), ``per_task[task][seed]``; r(gap, log10 size) is
    :func:`minilm_jax.analysis.study_b_seeds.size_over_seeds`."""
    shallow = [r for r in rows if r["model"] == SHALLOW]
    small, large = min(design.subsets), max(design.subsets)
    per_task: dict[str, dict[int, Any]] = {}
    for task in design.sweep.finetune_tasks:
        at = {(r["subset"], r["seed"]): r for r in shallow if r["task"] == task}
        per_task[task] = {seed: paired_gap(at[(large, seed)]["pretrained_by_seed"],
                                           at[(small, seed)]["pretrained_by_seed"])
                          for (size, seed) in sorted(at) if size == large and (small, seed) in at}
    return {"smallest": small, "largest": large, "per_task": per_task}


def overlap_rows(design: Design, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Analysis 3: token overlap of each task's fine-tuning texts with each subset's pre-training
    text (occurrence and type shares), one point per (task, subset) of ``rows``' 1-layer runs (the
    seeds of a subset read the same text)."""
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
    seen = set()
    for row in rows:
        if row["model"] != SHALLOW or (row["task"], row["subset"]) in seen:
            continue
        seen.add((row["task"], row["subset"]))
        shards = design.shards(row["run"])
        tok = load_tokenizer(read_manifest(shards)["tokenizer"]["path"])
        if shards not in presence:
            presence[shards] = shard_token_presence(shards, ["train"], tok.vocab_size)
            presence[shards][list(tok.special_ids)] = False
        if row["task"] not in task_ids:
            task_ids[row["task"]] = tok.encode_batch(texts[row["task"]])
        share = token_overlap(presence[shards], task_ids[row["task"]], tok.special_ids)
        out.append({"task": row["task"], "subset": row["subset"], **share})
    return out


def committee(design: Design, task: str, method: str = "prob") -> dict[str, Any]:
    """Analysis 4 for one task: committee accuracy vs K (mean over fine-tuning seeds of the mean
    over member subsets) and the largest committee against the 6-layer model of the lowest
    pre-training seed; ``largest_by_seed`` (fine-tuning seed -> the largest committee's accuracy),
    ``members_by_seed`` and ``deep_by_seed`` (pre-training seed -> fine-tuning seed -> accuracy of
    each member alone and of each 6-layer model) are what
    :func:`minilm_jax.analysis.study_b_seeds.committee_over_seeds` reads."""
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
    seeds = sorted(design.scores(design.members[0], task, "pretrained").by_seed)
    by_k: dict[int, dict[int, float]] = {}
    spread: dict[int, list[float]] = {}  # sd over member subsets, per seed
    subsets: dict[int, int] = {}
    for s, seed in enumerate(seeds):
        for point in accuracy_vs_k(stacked[:, s], labels, method=method):
            by_k.setdefault(point.k, {})[seed] = 100 * point.accuracy
            spread.setdefault(point.k, []).append(100 * point.std)
            subsets[point.k] = point.n_subsets
    members_by_seed = {  # each member alone: its argmax accuracy per fine-tuning seed
        design.seed_of(m): {seed: 100 * float(np.mean(stacked[k, s].argmax(-1) == labels))
                            for s, seed in enumerate(seeds)}
        for k, m in enumerate(design.members)}
    deep_by_seed = {p: design.scores(run, task, "pretrained").by_seed
                    for p, run in design.deep.items()}
    deep_seed = min(deep_by_seed)
    deep = deep_by_seed[deep_seed]
    k_max = max(by_k)
    return {"task": task, "method": method, "members": len(design.members),
            "member_seeds": sorted(members_by_seed),
            "by_k": {k: {**t_interval(list(v.values())), "member_subsets": subsets[k],
                         "sd_over_subsets": float(np.mean(spread[k]))} for k, v in by_k.items()},
            "deep_seed": deep_seed, "deep": t_interval(list(deep.values())),
            "largest_minus_deep": paired_gap(by_k[k_max], deep),
            "single_minus_deep": paired_gap(by_k[1], deep),
            "largest_by_seed": by_k[k_max], "members_by_seed": members_by_seed,
            "deep_by_seed": deep_by_seed}
