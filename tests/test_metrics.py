"""Metrics against scikit-learn / scipy on real-sized random inputs and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from minilm_jax.tasks.metrics import (accuracy, average_ranks, f1_binary, glue_average,
                                      glue_score, matthews_corrcoef, pearson, spearman,
                                      task_metrics)

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 1043  # CoLA dev size
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    assert accuracy(p, y) == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
    assert f1_binary(p, y) == pytest.approx(sk.f1_score(y, p), abs=1e-12)
    assert matthews_corrcoef(p, y) == pytest.approx(sk.matthews_corrcoef(y, p), abs=1e-12)
    y3 = rng.integers(0, 3, 9815)  # MNLI-m size, 3 classes
    p3 = np.where(rng.random(9815) < 0.5, y3, rng.integers(0, 3, 9815))
    assert matthews_corrcoef(p3, y3) == pytest.approx(sk.matthews_corrcoef(y3, p3), abs=1e-12)
    logits = rng.normal(size=(n, 2))
    assert accuracy(logits, y) == pytest.approx(sk.accuracy_score(y, logits.argmax(1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(0, 5, 1500) * 5) / 5  # STS-B-like scores with many ties
    p = y + rng.normal(0, 1.2, 1500)
    p[:200] = np.round(p[:200])  # ties in predictions too
    assert pearson(p, y) == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-10)
    assert spearman(p, y) == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-10)
    x = rng.integers(0, 20, (7, 50)).astype(float)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x, method="average", axis=-1))


def test_hand_computed_cases():
    y = [1, 1, 1, 0, 0, 0]
    p = [1, 1, 0, 0, 0, 1]
    # TP=2 FP=1 FN=1 TN=2 -> acc 4/6, F1 = 4/6, MCC = (4-1)/sqrt(3*3*3*3) = 1/3
    assert accuracy(p, y) == pytest.approx(4 / 6)
    assert f1_binary(p, y) == pytest.approx(4 / 6)
    assert matthews_corrcoef(p, y) == pytest.approx(1 / 3)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # Pearson by hand: x=(1,2,3), y=(2,4,7): dx=(-1,0,1), dy=(-7/3,-1/3,8/3);
    # sxy = 7/3 + 8/3 = 5, sxx = 2, syy = (49 + 1 + 64)/9 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # Spearman with ties: ranks x=(1,2.5,2.5,4), y=(1,2,3,4) -> r = 2.5/sqrt(4.5*5)... computed by hand
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    dx, dy = rx - rx.mean(), ry - ry.mean()
    assert spearman([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(
        (dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))
    assert (dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_degenerate_inputs_are_defined():
    y = np.array([0, 1, 0, 1, 1])
    const = np.ones(5, dtype=int)
    assert matthews_corrcoef(const, y) == 0.0
    assert matthews_corrcoef(y, const) == 0.0
    assert f1_binary(np.zeros(5, int), np.zeros(5, int)) == 0.0
    assert pearson(np.full(5, 2.5), [1, 2, 3, 4, 5]) == 0.0
    assert spearman(np.full(5, 0.1), [1, 2, 3, 4, 5]) == 0.0
    assert pearson([0.1] * 3, [0.1] * 3) == 0.0
    for value in (matthews_corrcoef(const, y), pearson(np.full(5, 3.0), y)):
        assert not math.isnan(value)
    with pytest.raises(ValueError, match="predictions but"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero"):
        accuracy([], [])
    with pytest.raises(ValueError, match="unlabelled"):
        accuracy([0, 1], [0, -1])


def test_task_metrics_and_glue_score():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([1, 1, 0, 0, 0, 1])
    assert task_metrics("cola", p, y) == {"mcc": pytest.approx(1 / 3)}
    m = task_metrics("MRPC", p, y)
    assert set(m) == {"accuracy", "f1"}
    assert glue_score("mrpc", m) == pytest.approx((4 / 6 + 4 / 6) / 2)
    assert set(task_metrics("qqp", p, y)) == {"accuracy", "f1"}
    assert set(task_metrics("rte", p, y)) == {"accuracy"}
    s = task_metrics("sts-b", [1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    assert glue_score("stsb", s) == pytest.approx((5 / math.sqrt(2 * 114 / 9) + 1.0) / 2)
    mnli = task_metrics("mnli", {"dev_matched": [0, 1, 2, 2], "dev_mismatched": [0, 0]},
                        {"dev_matched": [0, 1, 2, 0], "dev_mismatched": [0, 1]})
    assert mnli == {"accuracy_m": 0.75, "accuracy_mm": 0.5}
    assert glue_score("mnli", mnli) == pytest.approx(0.625)
    assert task_metrics("mnli-mm", [0, 0], [0, 1]) == {"accuracy_mm": 0.5}
    with pytest.raises(KeyError, match="lack"):
        glue_score("mnli", {"accuracy_m": 0.7})
    with pytest.raises(TypeError):
        task_metrics("mnli", [0], [0])
    assert task_metrics("ag_news", [0, 3], [0, 2]) == {"accuracy": 0.5}
    assert glue_average({"cola": 0.2, "mrpc": 0.6, "mnli": 0.7}) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        glue_average({})
