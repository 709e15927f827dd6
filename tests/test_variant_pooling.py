"""Correlations that pool checkpoints of several architectures (a variant sweep) say what they pool
and give the correlation within architectures beside them, checked against numpy / scipy: the
zero-shot accuracy vs perplexity (over every scored checkpoint, and within each pre-training seed
over seeds), and the fine-tuning tables' perplexity vs score. Minimal-pair tables name a user
variant's architecture. The synthetic data give the variant both a lower perplexity and a higher
accuracy than the built-in encoder with no relation inside either: the pooled r is strongly
negative, the within-architecture r is not."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from minilm_jax.analysis.finetune_tables import perplexity_correlation
from minilm_jax.analysis.zero_shot import zero_shot_analyses
from minilm_jax.analysis.zero_shot_seeds import zero_shot_seed_analyses
from minilm_jax.evals.pair_tables import report_lines
from minilm_jax.report.zero_shot import section_zero_shot, section_zero_shot_seeds

VARIANT = "my_lab.encoders:GatedEncoder"
LEVELS = {"built-in": (300.0, 55.0), VARIANT: (150.0, 75.0)}  # (perplexity, accuracy)
DESIGNS, SEEDS, STEPS, PAIRS = 3, (0, 1, 2), (1000, 2000), 2000


def within_by_hand(x, y, groups) -> dict[str, float]:
    """Residuals from each group's means, their Pearson r and the partial correlation's t-test
    (n - K - 1 degrees of freedom)."""
    x, y, labels = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    xr, yr = x.copy(), y.copy()
    for g in set(groups):
        xr[labels == g] -= x[labels == g].mean()
        yr[labels == g] -= y[labels == g].mean()
    r = float(np.corrcoef(xr, yr)[0, 1])
    df = len(x) - len(set(groups)) - 1
    return {"r": r, "df": df, "p": 2 * stats.t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df)}


def scored(correct: int) -> dict:
    """A paradigm row's counts: ``correct`` of PAIRS right, pair by pair."""
    return {"correct": correct, "outcomes": "1" * correct + "0" * (PAIRS - correct)}


def pair_rows() -> list[dict]:
    """``minimal_pairs`` rows: per architecture, DESIGNS design places x SEEDS seeds, each run
    scored at STEPS and its random twin; the variant's rows carry its ``arch``."""
    rng = np.random.default_rng(11)
    rows = []
    for arch, (ppl_level, acc_level) in LEVELS.items():
        extra = {"arch": arch} if arch != "built-in" else {}
        for k in range(DESIGNS):
            for seed in SEEDS:
                run = f"{'v' if extra else 'b'}{k}__seed={seed}"
                common = {"kind": "minimal_pairs", "evaluation": "zorro", "suite": "zorro",
                          "rule": "holistic", "run": run, "design": f"{run[0]}{k}",
                          "pretrain_seed": seed, "point": "P", "paradigm": "p",
                          "phenomenon": "agreement", "pairs": PAIRS, "scored": PAIRS,
                          "skipped_unk": 0, "skipped_vocab": 0, **extra}
                rows.append({**common, "init": "random", "step": 0,
                             "validation_perplexity": None, **scored(PAIRS // 2)})
                for step in STEPS:
                    accuracy = acc_level + float(rng.normal(0, 3.0))
                    rows.append({**common, "init": "pretrained", "step": step,
                                 "validation_perplexity": ppl_level + float(rng.normal(0, 10.0)),
                                 **scored(int(round(accuracy * PAIRS / 100)))})
    return rows


def points(rows, seed=None) -> tuple[list[float], list[float], list[str]]:
    """(perplexity, accuracy in %, architecture) of every scored pre-trained checkpoint."""
    mine = [r for r in rows if r["init"] == "pretrained"
            and (seed is None or r["pretrain_seed"] == seed)]
    return ([r["validation_perplexity"] for r in mine], [100 * r["correct"] / r["scored"]
                                                       for r in mine],
            [r.get("arch", "built-in") for r in mine])


def test_zero_shot_accuracy_vs_perplexity_gives_the_within_architecture_r():
    rows = pair_rows()
    x, y, groups = points(rows)
    found = zero_shot_analyses(rows)[0]
    pooled = stats.pearsonr(x, y).statistic
    assert found.correlation.r == pytest.approx(pooled, rel=1e-9) and pooled < -0.8
    want = within_by_hand(x, y, groups)
    assert abs(want["r"]) < 0.4
    assert found.pooling.counts == {"built-in": len(x) // 2, VARIANT: len(x) // 2}
    assert found.pooling.within.r == pytest.approx(want["r"], rel=1e-9)
    assert found.pooling.within.p == pytest.approx(want["p"], rel=1e-9)
    text = "\n".join(section_zero_shot([found], [""]))
    assert (f"pools 2 architectures: `built-in` ({len(x) // 2} checkpoints), `{VARIANT}` "
            f"({len(x) // 2} checkpoints)") in text
    shown = re.search(r"Within architectures \(each architecture's mean perplexity and mean "
                      r"accuracy removed.*?Pearson r = (-?\d\.\d{3}) .*?df = (\d+)", text)
    assert float(shown.group(1)) == pytest.approx(want["r"], abs=5e-4)
    assert int(shown.group(2)) == want["df"]
    # each run's architecture is named in the run table
    assert f"| v0__seed=0 | `{VARIANT}` | 2000 |" in text and "| b0__seed=0 | `built-in` |" in text
    one = zero_shot_analyses([r for r in rows if "arch" not in r])[0]  # one architecture
    assert one.pooling is None
    assert "pools" not in "\n".join(section_zero_shot([one], [""]))


def test_zero_shot_a2_within_each_seed_pools_architectures_and_says_so():
    rows = pair_rows()
    found = zero_shot_seed_analyses(rows)[0]
    within_z = []
    for seed in SEEDS:
        x, y, groups = points(rows, seed)
        want = within_by_hand(x, y, groups)
        assert found.a2.per_seed[seed].r == pytest.approx(stats.pearsonr(x, y).statistic,
                                                          rel=1e-9)
        assert found.a2.within.per_seed[seed].r == pytest.approx(want["r"], rel=1e-9)
        within_z.append(math.atanh(want["r"]))
    assert found.a2.within.mean_r == pytest.approx(math.tanh(np.mean(within_z)), rel=1e-9)
    text = "\n".join(section_zero_shot_seeds([found]))
    n = len(points(rows)[0]) // 2
    assert (f"each seed's r pools 2 architectures (`built-in` ({n} checkpoints), `{VARIANT}` "
            f"({n} checkpoints))") in text
    shown = re.search(r"within architectures \(each architecture's means removed in each seed\): "
                      r"mean r = ([+-]\d\.\d\d)", text)
    assert float(shown.group(1)) == pytest.approx(math.tanh(np.mean(within_z)), abs=0.005)


def test_finetune_tables_correlation_over_two_architectures(tmp_path):
    rng = np.random.default_rng(5)
    rows, x, y, groups = [], [], [], []
    for arch, (ppl_level, score_level) in LEVELS.items():
        for k in range(5):
            ppl, scores = ppl_level + rng.normal(0, 10.0), score_level + rng.normal(0, 3.0, 2)
            for task, score in zip(("t1", "t2"), scores):
                rows.append({"init": "pretrained", "checkpoint": f"{arch}/{k} (step 8)",
                             "pretrain_validation_perplexity": float(ppl), "task": task,
                             "final_score": float(score), "arch": arch})
            x.append(float(ppl))
            y.append(float(np.mean(scores)))
            groups.append(arch)
    order = sorted(range(len(x)), key=lambda i: f"{groups[i]}/{i % 5} (step 8)")
    x, y, groups = [x[i] for i in order], [y[i] for i in order], [groups[i] for i in order]
    text = perplexity_correlation(rows, tmp_path)
    pooled = re.search(r"- Pearson r = (-?\d\.\d{3})", text)
    assert float(pooled.group(1)) == pytest.approx(stats.pearsonr(x, y).statistic, abs=5e-4)
    assert f"pools 2 architectures: `built-in` (5 checkpoints), `{VARIANT}` (5 checkpoints)" in text
    want = within_by_hand(x, y, groups)
    shown = re.search(r"Within architectures .*?Pearson r = (-?\d\.\d{3})", text)
    assert float(shown.group(1)) == pytest.approx(want["r"], abs=5e-4)
    one = perplexity_correlation([r for r in rows if r["arch"] == "built-in"], tmp_path)
    assert "pools" not in one and "Within architectures" not in one


def test_minimal_pair_tables_name_a_variants_architecture():
    rows = [r for r in pair_rows() if r["run"] == "v0__seed=0" and r["step"] in (0, 2000)]
    for r in rows:
        r["code_changes"] = ["my_lab/encoders.py: 1a2b -> 3c4d"]
    lines = report_lines(rows, "Minimal pairs: zorro, P at step 2000 (run)")
    assert lines[0] == f"# Minimal pairs: zorro, P at step 2000 (run), model.arch `{VARIANT}`"
    assert f"## zorro, rule `holistic` (step 2000, model.arch `{VARIANT}`)" in lines
    assert any("my_lab/encoders.py: 1a2b -> 3c4d" in line for line in lines)
    plain = report_lines([r for r in pair_rows() if r["run"] == "b0__seed=0" and r["step"] != 1000],
                         "Minimal pairs")
    assert not any("model.arch" in line for line in plain)
