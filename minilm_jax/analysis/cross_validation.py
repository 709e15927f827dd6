"""The verdict of a cross-validated labelled file: did pre-training help?

Each fold run (``data.cv_folds`` > 0: :mod:`minilm_jax.finetune.run`) fine-tuned one seed with one
fold of that seed's partition held out (stratified by class; a regression file's: a seeded
shuffle), from the pre-trained checkpoint and from random init on the same folds, seeds and data
order. Read back here:

- per (seed, fold): each init's score on its held-out fold (the final epoch, as the plain table's
  gain) and their difference;
- per seed: each init's score over every labelled row, each scored once out of fold (the fold
  runs' saved predictions pooled);
- the gain: the mean of the J = seeds x folds differences with the corrected resampled t-test
  (:func:`~minilm_jax.analysis.stats.corrected_resampled_gap`): the unit of replication is the
  (seed, fold) run, and the correction ``1/J + n_test/n_train`` accounts for the training sets'
  overlap, which a plain t-test over folds ignores (its intervals are too narrow); when every
  difference is the same, the spread is zero and the interval and p are undefined (said so, never
  a zero-width interval);
- power: the smallest gain the design detects with 80% power at the observed spread, and what more
  seeds or labels would make of it;
- per class: recall and F1 of each init over the pooled out-of-fold predictions.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from minilm_jax.analysis.power import detectable_effect
from minilm_jax.analysis.stats import Gap, corrected_resampled_gap, format_p, mean_sd
from minilm_jax.finetune.model_selection import split_metrics
from minilm_jax.storage import RunPath
from minilm_jax.tasks.metrics import f1_binary

SPLIT = "holdout"  # a fold run's held-out fold
WHICH = "final"  # the parameters scored (as the plain table's gain: the final epoch)
INITS = ("pretrained", "random")


@dataclass(frozen=True)
class FoldRun:
    """One fold run's record: init, seed, fold, its score on the held-out fold and its data."""

    init: str
    seed: int
    fold: int
    folds: int
    score: float
    examples: dict[str, int]
    majority: float | None
    workdir: RunPath
    summary: dict[str, Any]

    @classmethod
    def read(cls, path: RunPath) -> "FoldRun":
        s = json.loads(path.read_text())
        cv = s["cross_validation"]
        majority = (s.get("majority") or {}).get(SPLIT) or {}
        return cls(s["init"], int(cv["seed"]), int(cv["fold"]), int(cv["folds"]),
                   float(s[WHICH]["members"][0]["score"]), dict(s.get("examples") or {}),
                   majority.get("score"), path.parent, s)

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """This run's logits ``[N, C]`` on its held-out rows and their labels."""
        folder = self.workdir / "predictions"
        logits = np.load(folder / f"{SPLIT}.{WHICH}.npy")[0]
        return logits, np.load(folder / f"{SPLIT}.labels.npy")


def is_fold_run(summary: dict[str, Any]) -> bool:
    return bool(summary.get("cross_validation"))


def pooled(runs: Sequence[FoldRun]) -> tuple[np.ndarray, np.ndarray]:
    """One seed's folds: every row's out-of-fold logits and its label."""
    parts = [r.predictions() for r in sorted(runs, key=lambda r: r.fold)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def predicted(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits[:, 0] if regression else logits.argmax(-1)


@dataclass
class Verdict:
    """Everything the section prints, also written to results.json."""

    task: str
    checkpoint: str
    folds: int
    seeds: list[int]
    rows: int
    test_over_train: float
    scores: dict[str, dict[tuple[int, int], float]]  # init -> (seed, fold) -> score
    pooled: dict[str, dict[int, float]]  # init -> seed -> score over every row
    majority: float | None
    per_class: list[dict[str, Any]]
    gap: Gap
    detectable: float | None
    projections: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "checkpoint": self.checkpoint, "folds": self.folds,
                "seeds": self.seeds, "rows": self.rows, "test_over_train": self.test_over_train,
                "scores": {i: [{"seed": s, "fold": k, "score": v} for (s, k), v in sorted(d.items())]
                           for i, d in self.scores.items()},
                "pooled": {i: {str(s): v for s, v in d.items()} for i, d in self.pooled.items()},
                "majority": self.majority, "per_class": self.per_class,
                "gain": {"mean": _number(self.gap.mean), "low": _number(self.gap.low),
                         "high": _number(self.gap.high), "p": _number(self.gap.p),
                         "n": self.gap.n, "sd": _number(self.gap.sd), "method": self.gap.method,
                         "undefined": self.gap.undefined},
                "detectable_gain_80": self.detectable, "projections": self.projections}


def _number(x: float) -> float | None:
    """``x``, or None where it is undefined (NaN): results.json stays strict JSON."""
    return x if math.isfinite(x) else None


def design_kind(task: str, folds: int) -> str:
    """The kind of cross-validation of ``task``'s labelled file, as the folds are cut
    (:func:`~minilm_jax.tasks.sampling.fold_assignment`): stratified by class for a
    classification file, a seeded shuffle for a regression one (real-valued labels have no
    classes to stratify by)."""
    if task == "table_regression":
        return (f"{folds}-fold cross-validation (folds cut by a seeded shuffle, not stratified: "
                "real-valued labels have no classes)")
    return f"stratified {folds}-fold cross-validation"


def detectable(sd: float, runs: int, test_over_train: float) -> float:
    """The smallest true gain the corrected test over ``runs`` differences of spread ``sd``
    detects with 80% power (two-sided, 5%)."""
    se = sd * math.sqrt(1.0 / runs + test_over_train)
    return detectable_effect(se * math.sqrt(runs), runs)


def verdict(runs: Sequence[FoldRun], checkpoint: str) -> Verdict:
    """The cross-validated comparison of one task's fold runs (both inits)."""
    first = runs[0].summary
    task, regression = first["task"], first["task"] == "table_regression"
    by_init: dict[str, list[FoldRun]] = defaultdict(list)
    for run in runs:
        by_init[run.init].append(run)
    scores = {i: {(r.seed, r.fold): r.score for r in rs} for i, rs in by_init.items()}
    seeds = sorted({r.seed for r in runs})
    test = np.mean([r.examples.get(SPLIT, 0) for r in runs])
    train = np.mean([r.examples.get("train", 0) + r.examples.get("validation", 0) for r in runs])
    ratio = float(test / train) if train else float("nan")
    pooled_scores: dict[str, dict[int, float]] = {}
    pooled_predictions: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for init, init_runs in by_init.items():
        per_seed: dict[int, list[FoldRun]] = defaultdict(list)
        for r in init_runs:
            per_seed[r.seed].append(r)
        pooled_scores[init], pooled_predictions[init] = {}, {}
        for seed, seed_runs in per_seed.items():
            if len(seed_runs) != seed_runs[0].folds:
                continue  # a seed with folds missing scores only some rows: not pooled
            logits, labels = pooled(seed_runs)
            guesses = predicted(logits, regression)
            pooled_predictions[init][seed] = (guesses, labels)
            pooled_scores[init][seed] = split_metrics(task, {SPLIT: guesses},
                                                      {SPLIT: labels})["score"]
    common = sorted(set(scores.get("pretrained", {})) & set(scores.get("random", {})))
    gap = corrected_resampled_gap([scores["pretrained"][c] - scores["random"][c] for c in common],
                                  ratio)
    folds = runs[0].folds
    found, projections = None, {}
    if gap.defined and gap.sd > 0:
        found = detectable(gap.sd, gap.n, ratio)
        projections = {"twice the seeds": detectable(gap.sd, 2 * gap.n, ratio),
                       "unlimited seeds": 2.8 * gap.sd * math.sqrt(ratio),
                       "twice the labels": found / math.sqrt(2)}
    majority = [(r.majority, r.examples.get(SPLIT, 0)) for r in runs if r.majority is not None]
    base = (sum(m * n for m, n in majority) / sum(n for _, n in majority)) if majority else None
    per_class = [] if regression else class_table(pooled_predictions)
    rows = sum(r.examples.get(SPLIT, 0) for r in runs if r.init == runs[0].init
               and r.seed == runs[0].seed)
    return Verdict(task, checkpoint, folds, seeds, rows, ratio, scores, pooled_scores, base,
                   per_class, gap, found, projections)


def class_table(pooled_predictions: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
                ) -> list[dict[str, Any]]:
    """Per class: rows, and each init's recall and F1 (x100) over every row, mean over seeds."""
    out: dict[int, dict[str, Any]] = {}
    for init, per_seed in pooled_predictions.items():
        for seed, (pred, labels) in per_seed.items():
            for c in np.unique(labels):
                f = f1_binary(pred, labels, positive=int(c))
                entry = out.setdefault(int(c), {"class": int(c), "rows": int(np.sum(labels == c))})
                recall = float(np.mean(pred[labels == c] == c)) * 100
                entry.setdefault(f"{init}_recall", []).append(recall)
                entry.setdefault(f"{init}_f1", []).append(float(f) * 100)
    return [{k: (float(np.mean(v)) if isinstance(v, list) else v) for k, v in e.items()}
            for _, e in sorted(out.items())]


def _cell(values: Sequence[float]) -> str:
    return mean_sd(values).text() if values else "—"


def markdown(v: Verdict, class_names: Sequence[str] = ()) -> str:
    """The section of results.md: design, gain, power, per-fold and per-class tables."""
    gap = v.gap
    lines = [f"## {v.task}: cross-validated, {v.checkpoint}", "",
             f"Design: {design_kind(v.task, v.folds)} of the one labelled file, "
             f"repeated with {len(v.seeds)} fine-tuning seed(s) ({', '.join(map(str, v.seeds))}), "
             f"each seed its own partition: every one of the {v.rows} rows scored once per seed, "
             "out of fold. Pre-trained and random init ran on the same folds, seeds and data "
             f"order. Scores x100 at the final epoch. Unit of replication: the (seed, fold) run; "
             f"the gain's interval is the corrected resampled t-test (Nadeau & Bengio 2003, "
             f"Bouckaert & Frank 2004: variance x (1/J + n_test/n_train) = 1/J + "
             f"{v.test_over_train:.3f}, J - 1 degrees of freedom), because the folds' training "
             "sets overlap.", ""]
    pre, rnd = v.pooled.get("pretrained", {}), v.pooled.get("random", {})
    majority = "—" if v.majority is None else f"{v.majority:.1f}"
    lines += ["| every row, out of fold | pre-trained | random init | gain (corrected resampled "
              "t) | majority class |", "| --- | --- | --- | --- | --- |",
              f"| {v.task} (n = {v.rows} rows x {len(v.seeds)} seeds) | {_cell(list(pre.values()))}"
              f" | {_cell(list(rnd.values()))} | {gap.text()} | {majority} |", ""]
    if gap.zero_spread:
        lines += [f"Verdict: undefined: every one of the {gap.n} (seed, fold) runs gave the same "
                  f"difference ({gap.mean:+.1f}), so the spread is zero and the "
                  f"{round(100 * gap.confidence)}% interval and p are undefined; {gap.n} equal "
                  "differences are not certainty (see the per-fold table: both inits may score "
                  "alike, e.g. each predicting one class).",
                  "Power: undefined (no spread to size an effect against).", ""]
    elif gap.defined:
        lines.append(f"Verdict: {gap.verdict('pre-training helped', 'random init scored higher')}"
                     f" (n = {gap.n} (seed, fold) runs, p = {format_p(gap.p)}).")
        if v.detectable is None:
            lines.append(f"Power: undefined (every one of the {gap.n} runs gave the same "
                         "difference: no spread to size an effect against).")
        else:
            shown = gap.low > 0 or gap.high < 0
            lines.append(f"Power: this run detects a true gain of {v.detectable:.1f} points with "
                         f"80% power (spread of the differences: sd {gap.sd:.1f}, n = {gap.n}).")
            if not shown:
                p = v.projections
                lines.append(
                    f"No gain shown. What would change that: twice the seeds -> "
                    f"{p['twice the seeds']:.1f} points detectable (no number of seeds goes below "
                    f"{p['unlimited seeds']:.1f}: the folds' overlap); twice the labels -> about "
                    f"{p['twice the labels']:.1f} (if the spread is the held-out folds' sampling "
                    "noise, as it shrinks with 1/sqrt(rows)); more pre-training text or steps "
                    "change the gain itself, not the interval (see the pre-training perplexity "
                    "against its unigram and bigram baselines).")
        lines.append("")
    header = " | ".join(f"fold {k}" for k in range(v.folds))
    lines += [f"Per (seed, fold): pre-trained / random init on the held-out fold "
              f"(about {v.rows // max(v.folds, 1)} rows each), and every row pooled.", "",
              f"| seed | {header} | every row |", "|" + " --- |" * (v.folds + 2)]
    for seed in v.seeds:
        cells = []
        for k in range(v.folds):
            a = v.scores.get("pretrained", {}).get((seed, k))
            b = v.scores.get("random", {}).get((seed, k))
            cells.append(" / ".join("—" if x is None else f"{x:.1f}" for x in (a, b)))
        total = " / ".join("—" if x is None else f"{x:.1f}" for x in (pre.get(seed), rnd.get(seed)))
        lines.append(f"| {seed} | {' | '.join(cells)} | {total} |")
    lines.append("")
    if v.per_class:
        lines += ["Per class, every row out of fold (mean over seeds): recall and F1.", "",
                  "| class | rows | recall: pre-trained / random | F1: pre-trained / random |",
                  "| --- | ---: | --- | --- |"]
        for e in v.per_class:
            name = (class_names[e["class"]] if e["class"] < len(class_names) else str(e["class"]))
            rec = " / ".join(f"{e.get(f'{i}_recall', float('nan')):.1f}" for i in INITS)
            f1 = " / ".join(f"{e.get(f'{i}_f1', float('nan')):.1f}" for i in INITS)
            lines.append(f"| {name} | {e['rows']} | {rec} | {f1} |")
        lines.append("")
    return "\n".join(lines)
