"""The cross-validated verdict's numbers (``minilm_jax.analysis.cross_validation``) against an
independent computation: fold runs written as the fine-tuning command writes them (summary.json and
held-out predictions; no training), read back by the results table, and every figure of the gain,
the power line and the pooled scores compared with scipy / sklearn written out here. The gain is
paired by (seed, fold); the data make pairing matter (each (seed, fold)'s held-out rows are easier
or harder for both inits alike), so differences of means or mismatched pairs give other numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import accuracy_score, f1_score

from minilm_jax.analysis import cross_validation
from minilm_jax.analysis.finetune_tables import find_summaries, write_tables

FOLDS, SEEDS, ROWS = 10, (0, 1), 60  # 6 held-out rows per fold, 54 trained on: n_test/n_train 1/9
HELD, TRAINED = ROWS // FOLDS, ROWS - ROWS // FOLDS
CLASSES = ("neg", "pos")


def fold_scores(gain: float, seed: int = 0) -> dict[str, dict[tuple[int, int], float]]:
    """Per init, a score per (seed, fold): a shared difficulty per (seed, fold) (sd 10), the
    pre-trained side ``gain`` higher, each side its own small noise (sd 0.6)."""
    rng = np.random.default_rng(seed)
    cells = [(s, k) for s in SEEDS for k in range(FOLDS)]
    difficulty = {c: 60 + 10 * rng.standard_normal() for c in cells}
    return {"pretrained": {c: difficulty[c] + gain + 0.6 * rng.standard_normal() for c in cells},
            "random": {c: difficulty[c] + 0.6 * rng.standard_normal() for c in cells}}


def write_fold_runs(root: Path, scores: dict[str, dict[tuple[int, int], float]]) -> dict:
    """Each fold run's folder as the fine-tuning command leaves it: summary.json and the held-out
    fold's logits and labels. Returns (init, seed) -> (predicted classes, labels) over all rows."""
    rng = np.random.default_rng(7)
    pooled: dict[tuple[str, int], tuple[list, list]] = {}
    for init, by_cell in scores.items():
        for (seed, fold), score in by_cell.items():
            folder = root / init / f"s{seed}-fold{fold}"
            (folder / "predictions").mkdir(parents=True)
            labels = np.asarray([(fold + i) % 2 for i in range(HELD)], np.int64)
            logits = rng.normal(size=(1, HELD, 2)).astype(np.float32)
            np.save(folder / "predictions" / "holdout.final.npy", logits)
            np.save(folder / "predictions" / "holdout.labels.npy", labels)
            guesses, truth = pooled.setdefault((init, seed), ([], []))
            guesses += list(logits[0].argmax(-1))
            truth += list(labels)
            summary = {"task": "table", "init": init, "point": "E32-H32-I128-L1-A2",
                       "status": "completed", "seeds": [seed],
                       "cross_validation": {"folds": FOLDS, "fold": fold, "seed": seed,
                                            "classes": list(CLASSES)},
                       "final": {"mean": {"score": score}, "std": {"score": 0.0},
                                 "members": [{"score": score}]},
                       "examples": {"train": TRAINED - 6, "validation": 6, "holdout": HELD},
                       "majority": {"holdout": {"score": 50.0 + fold}}}
            (folder / "summary.json").write_text(json.dumps(summary))
    return pooled


def corrected_by_hand(d: np.ndarray, test_over_train: float) -> dict[str, float]:
    j = d.size
    sd = math.sqrt(np.sum((d - d.mean()) ** 2) / (j - 1))
    se = sd * math.sqrt(1 / j + test_over_train)
    q = stats.t.ppf(0.975, j - 1)
    t = d.mean() / se
    return {"mean": d.mean(), "sd": sd, "low": d.mean() - q * se, "high": d.mean() + q * se,
            "p": 2 * stats.t.sf(abs(t), j - 1), "se": se}


def detectable_by_hand(se: float, runs: int) -> float:
    """The true gain the two-sided 5% t-test with ``runs`` - 1 degrees of freedom detects with
    80% power when the gain's standard error is ``se``: the noncentral t's mass beyond the
    critical values, solved for the noncentrality."""
    df = runs - 1
    crit = stats.t.ppf(0.975, df)

    def power(delta: float) -> float:  # P(T > crit) + P(T < -crit), the second by symmetry
        nc = delta / se
        return stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc) - 0.8

    return optimize.brentq(power, 0.5 * se, 8 * se, xtol=1e-12 * se)


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def _verdict_and_tables(tmp_path: Path, scores) -> tuple:
    pooled = write_fold_runs(tmp_path / "cv", scores)
    runs = [cross_validation.FoldRun.read(p) for p in find_summaries([tmp_path / "cv"])]
    verdict = cross_validation.verdict(runs, "ckpt")
    markdown_path, json_path = write_tables([tmp_path / "cv"], tmp_path / "out")
    return (verdict, pooled, markdown_path.read_text(),
            json.loads(json_path.read_text())["cross_validated"][0])


def test_the_gain_is_paired_by_seed_and_fold_with_the_corrected_variance(tmp_path):
    scores = fold_scores(gain=3.0)
    verdict, pooled, markdown, saved = _verdict_and_tables(tmp_path, scores)
    cells = sorted(scores["pretrained"])
    d = np.asarray([scores["pretrained"][c] - scores["random"][c] for c in cells])
    ratio = HELD / TRAINED
    want = corrected_by_hand(d, ratio)
    # pairing matters here: the same mean without the pairing, a spread ten times the paired one
    unpaired = np.asarray([scores["pretrained"][c] for c in cells]) - np.mean(
        list(scores["random"].values()))
    assert unpaired.mean() == pytest.approx(d.mean())
    assert unpaired.std(ddof=1) > 5 * d.std(ddof=1)
    assert verdict.test_over_train == pytest.approx(ratio, rel=1e-12)
    gap = verdict.gap
    assert gap.n == len(cells) == FOLDS * len(SEEDS)
    for key in ("mean", "sd", "low", "high", "p"):
        assert getattr(gap, key) == pytest.approx(want[key], rel=1e-9), key
        assert saved["gain"][key] == pytest.approx(want[key], rel=1e-9), key
    assert saved["test_over_train"] == pytest.approx(ratio, rel=1e-12)
    # the table prints the same numbers (one decimal; p to two significant figures)
    row = re.search(r"\| ([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\] \(95% CI, corrected "
                    r"resampled t, n = (\d+), p = ([^)]+)\)", markdown)
    assert row, markdown
    mean, low, high = map(float, row.groups()[:3])
    for got, key in ((mean, "mean"), (low, "low"), (high, "high")):
        assert abs(got - want[key]) <= 0.05 + 1e-9, (key, got, want[key])
    assert int(row.group(4)) == len(cells)
    assert float(row.group(5)) == pytest.approx(want["p"], rel=0.05)
    design = re.search(r"= 1/J \+ (\d\.\d+), J - 1 degrees of freedom", markdown)
    assert float(design.group(1)) == pytest.approx(ratio, abs=5e-4)
    assert "Verdict: pre-training helped" in markdown and want["low"] > 0
    # power: the smallest gain detected with 80% power, from the noncentral t
    found = detectable_by_hand(want["se"], len(cells))
    assert verdict.detectable == pytest.approx(found, rel=1e-6)
    assert saved["detectable_gain_80"] == pytest.approx(found, rel=1e-6)
    power = re.search(r"detects a true gain of (\d+\.\d) points with 80% power \(spread of the "
                      r"differences: sd (\d+\.\d), n = (\d+)\)", markdown)
    assert abs(float(power.group(1)) - found) <= 0.05 + 1e-9
    assert abs(float(power.group(2)) - want["sd"]) <= 0.05 + 1e-9
    # every row scored once per seed, out of fold: accuracy and macro F1 (x100), their mean
    for init in cross_validation.INITS:
        for seed in SEEDS:
            guesses, truth = pooled[(init, seed)]
            score = 50 * (accuracy_score(truth, guesses) + f1_score(truth, guesses,
                                                                     average="macro"))
            assert verdict.pooled[init][seed] == pytest.approx(score, rel=1e-9)
    per_fold = re.search(r"\| 1 \| ([^\n]+) \|\n", markdown).group(1).split(" | ")
    assert len(per_fold) == FOLDS + 1
    for k, cell in enumerate(per_fold[:FOLDS]):
        a, b = numbers(cell)
        assert abs(a - scores["pretrained"][(1, k)]) <= 0.05 + 1e-9
        assert abs(b - scores["random"][(1, k)]) <= 0.05 + 1e-9
    assert verdict.majority == pytest.approx(np.mean([50.0 + k for k in range(FOLDS)]))


def test_no_gain_shown_names_what_more_seeds_or_labels_would_detect(tmp_path):
    """A gain the interval does not separate from 0: the projections against the noncentral t
    (twice the runs), the normal limit (unlimited seeds: the folds' overlap, se ->
    sd sqrt(n_test/n_train)) and 1/sqrt(2) of the spread (twice the labels)."""
    scores = fold_scores(gain=0.1, seed=3)
    verdict, _, markdown, _ = _verdict_and_tables(tmp_path, scores)
    cells = sorted(scores["pretrained"])
    d = np.asarray([scores["pretrained"][c] - scores["random"][c] for c in cells])
    ratio = HELD / TRAINED
    want = corrected_by_hand(d, ratio)
    assert want["low"] < 0 < want["high"]
    assert (verdict.gap.low, verdict.gap.high) == pytest.approx((want["low"], want["high"]),
                                                                rel=1e-9)
    assert "Verdict: no significant difference" in markdown
    runs = len(cells)
    twice = detectable_by_hand(want["sd"] * math.sqrt(1 / (2 * runs) + ratio), 2 * runs)
    limit = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * want["sd"] * math.sqrt(ratio)
    found = detectable_by_hand(want["se"], runs)
    p = verdict.projections
    assert p["twice the seeds"] == pytest.approx(twice, rel=1e-6)
    assert p["unlimited seeds"] == pytest.approx(limit, rel=2e-3)  # 2.8 for 1.96 + 0.84
    assert p["twice the labels"] == pytest.approx(found / math.sqrt(2), rel=1e-6)
    line = re.search(r"twice the seeds -> (\d+\.\d) points detectable \(no number of seeds goes "
                     r"below (\d+\.\d)", markdown)
    assert abs(float(line.group(1)) - twice) <= 0.05 + 1e-9
    assert abs(float(line.group(2)) - limit) <= 0.05 + 0.002 * limit
