"""Equal differences are not certainty: a cross-validated verdict whose every (seed, fold)
difference is the same, a paired gap over seeds with one difference, a one-value-per-seed effect
with no spread: each says the spread is zero and the interval and p are undefined (never a
zero-width interval); and a regression file's cross-validation is not called stratified (its
folds are a seeded shuffle: :func:`minilm_jax.tasks.sampling.fold_assignment`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.analysis import cross_validation
from minilm_jax.analysis.finetune_tables import find_summaries, write_tables
from minilm_jax.analysis.replication import seed_effect
from minilm_jax.analysis.stats import corrected_resampled_gap, paired_gap
from minilm_jax.report.fmt import effect, interval
from minilm_jax.analysis.stats import t_interval

FOLDS, SEEDS, HELD, TRAINED = 5, (0, 1), 6, 24


def write_fold_runs(root: Path, scores: dict[str, dict[tuple[int, int], float]],
                    task: str = "table") -> None:
    """Fold runs as the fine-tuning command leaves them (summary.json, held-out predictions)."""
    rng = np.random.default_rng(3)
    for init, by_cell in scores.items():
        for (seed, fold), score in by_cell.items():
            folder = root / init / f"s{seed}-fold{fold}"
            (folder / "predictions").mkdir(parents=True)
            labels = np.asarray([(fold + i) % 2 for i in range(HELD)],
                                np.float32 if task == "table_regression" else np.int64)
            np.save(folder / "predictions" / "holdout.final.npy",
                    rng.normal(size=(1, HELD, 1 if task == "table_regression" else 2)))
            np.save(folder / "predictions" / "holdout.labels.npy", labels)
            summary = {"task": task, "init": init, "point": "E32-H32-I128-L1-A2",
                       "status": "completed", "seeds": [seed],
                       "cross_validation": {"folds": FOLDS, "fold": fold, "seed": seed,
                                            "classes": ["neg", "pos"]},
                       "final": {"mean": {"score": score}, "std": {"score": 0.0},
                                 "members": [{"score": score}]},
                       "examples": {"train": TRAINED - 4, "validation": 4, "holdout": HELD},
                       "majority": {"holdout": {"score": 50.0}}}
            (folder / "summary.json").write_text(json.dumps(summary))


def tables(tmp_path: Path, scores, task: str = "table") -> tuple[str, dict]:
    write_fold_runs(tmp_path / "cv", scores, task)
    markdown, payload = write_tables([tmp_path / "cv"], tmp_path / "out")
    return markdown.read_text(), json.loads(payload.read_text())["cross_validated"][0]


def cells() -> list[tuple[int, int]]:
    return [(s, k) for s in SEEDS for k in range(FOLDS)]


@pytest.mark.parametrize("difference", [0.0, 2.0])
def test_equal_cross_validated_differences_have_no_interval(tmp_path, difference):
    """Integer scores, so every difference is exactly ``difference``."""
    base = {c: float(50 + 3 * i) for i, c in enumerate(cells())}
    scores = {"pretrained": {c: v + difference for c, v in base.items()}, "random": base}
    markdown, saved = tables(tmp_path, scores)
    n = len(cells())
    d = np.asarray([scores["pretrained"][c] - scores["random"][c] for c in cells()])
    assert np.ptp(d) == 0.0 and d.mean() == difference  # the data: J equal differences
    runs = [cross_validation.FoldRun.read(p) for p in find_summaries([tmp_path / "cv"])]
    gap = cross_validation.verdict(runs, "ckpt").gap
    assert gap.zero_spread and not gap.defined and gap.n == n and gap.mean == difference
    assert all(math.isnan(v) for v in (gap.low, gap.high, gap.p))
    assert f"{difference:+.1f} [{difference:+.1f}, {difference:+.1f}]" not in markdown
    assert (f"| {difference:+.1f} (corrected resampled t, n = {n}, every difference equal: zero "
            "spread, so the 95% interval and p are undefined) |") in markdown
    assert (f"Verdict: undefined: every one of the {n} (seed, fold) runs gave the same difference "
            f"({difference:+.1f})") in markdown
    assert "Power: undefined" in markdown and "detects a true gain" not in markdown
    gain = saved["gain"]  # strict JSON: undefined is null, never NaN
    assert (gain["mean"], gain["sd"], gain["n"]) == (difference, 0.0, n)
    assert gain["low"] is None and gain["high"] is None and gain["p"] is None


def test_paired_gaps_and_seed_effects_with_zero_spread_say_so():
    a, b = {0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 3.0, 2: 7.0}  # every difference +2
    gap = paired_gap(a, b)
    assert gap.zero_spread and gap.mean == 2.0 and gap.n == 3 and math.isnan(gap.low)
    assert gap.text() == ("+2.0 (paired t, n = 3, every difference equal: zero spread, so the 95% "
                          "interval and p are undefined)")
    assert gap.verdict().startswith("undefined (every difference equal: zero spread")
    assert corrected_resampled_gap([1.5] * 4, 0.25).text().startswith(
        "+1.5 (corrected resampled t, n = 4, every difference equal")
    same = seed_effect("x", {1: 2.0, 2: 2.0, 3: 2.0})
    assert same.zero_spread and same.mean == 2.0 and same.sd == 0.0
    assert math.isnan(same.low) and math.isnan(same.high) and math.isnan(same.p)
    assert "zero spread" in same.text() and "[+2.0, +2.0]" not in same.text()
    assert same.verdict() == "undefined (all 3 values equal: zero spread)"
    assert effect(same) == "+2.0 (all n = 3 equal: zero spread, no interval)"
    assert interval(t_interval([4.0, 4.0])) == "4.0 (all n = 2 equal: zero spread, no interval)"
    spread = paired_gap({0: 3.0, 1: 6.0}, {0: 1.0, 1: 3.0})  # differences 2 and 3: defined
    assert spread.defined and not spread.zero_spread and spread.low < 2.5 < spread.high


def test_a_regression_files_folds_are_not_called_stratified(tmp_path):
    rng = np.random.default_rng(0)
    scores = {init: {c: float(rng.normal(40, 5)) for c in cells()}
              for init in ("pretrained", "random")}
    markdown, _ = tables(tmp_path / "reg", scores, "table_regression")
    assert f"Design: {FOLDS}-fold cross-validation (folds cut by a seeded shuffle" in markdown
    assert "stratified" not in markdown.replace("not stratified", "")
    classes, _ = tables(tmp_path / "cls", scores)
    assert f"Design: stratified {FOLDS}-fold cross-validation" in classes


def test_a_regression_files_folds_are_a_seeded_shuffle_of_all_rows(tmp_path):
    """What the design line says, checked against the loader: fold k of a regression file holds
    the rows dealt to k from one random.Random(cv_seed) shuffle of all rows, whatever their
    values (a classification file's folds are dealt class by class)."""
    import random

    from configs.finetune import get_config

    from minilm_jax.tasks.task_data import load_task_data

    path = tmp_path / "values.csv"
    path.write_text("text,label\n" + "".join(f"sentence number {i},{(i % 7) / 2}\n"
                                             for i in range(40)))
    rows = list(range(40))
    random.Random(5).shuffle(rows)
    want = sorted(f"table_regression/all/{r + 2}" for n, r in enumerate(rows) if n % 4 == 1)
    config = get_config("table_regression")
    config.data.dir = str(path)
    config.data.cv_folds, config.data.cv_fold, config.data.cv_seed = 4, 1, 5
    held = load_task_data(config).evals["holdout"]
    assert sorted(ex.uid for ex in held) == want
