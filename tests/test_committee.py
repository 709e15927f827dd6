"""Soft committees: probability vs logit averaging and accuracy as a function of K."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from minilm_jax.tasks.committee_math import accuracy_vs_k, combine, committee_predict, softmax


def test_prob_and_logit_averaging_differ_by_hand():
    # Member 1 is very confident in class 0; member 2 mildly prefers class 1, twice.
    logits = np.array([[[10.0, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]]])
    # Mean logits = (10/3, 2/3) -> class 0.
    assert committee_predict(logits, "logit").tolist() == [0]
    np.testing.assert_allclose(combine(logits, "logit"), [[10 / 3, 2 / 3]])
    # Mean probs: p0 = (1/(1+e^-10) + 2/(1+e)) / 3 ~ (0.99995 + 0.53788)/3 = 0.5126 -> class 0.
    p0 = (1 / (1 + np.exp(-10)) + 2 / (1 + np.e)) / 3
    np.testing.assert_allclose(combine(logits, "prob")[0, 0], p0)
    # A case where they disagree: (4,0),(0,1),(0,1),(0,1): logits mean (1, .75)->0; probs -> 1.
    logits = np.array([[[4.0, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]])
    assert committee_predict(logits, "logit").tolist() == [0]
    assert committee_predict(logits, "prob").tolist() == [1]
    np.testing.assert_allclose(combine(logits).sum(-1), 1.0)


def test_softmax_stable():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]])


def brute_force(logits, labels, k, method):
    accs = []
    for subset in itertools.combinations(range(len(logits)), k):
        scores = np.mean([softmax(logits[i]) if method == "prob" else logits[i] for i in subset], 0)
        accs.append(np.mean(scores.argmax(-1) == labels))
    return np.mean(accs), len(accs)


@pytest.mark.parametrize("method", ["prob", "logit"])
def test_accuracy_vs_k_all_subsets(method):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    logits = rng.normal(size=(5, 300, 4)) + 1.2 * np.eye(4)[labels]
    points = accuracy_vs_k(logits, labels, method=method)
    assert [p.k for p in points] == [1, 2, 3, 4, 5]
    for p in points:
        mean, count = brute_force(logits, labels, p.k, method)
        assert p.accuracy == pytest.approx(mean) and p.n_subsets == count
    assert points[-1].accuracy > points[0].accuracy  # committees help on independent noise
    assert points[-1].std == 0.0


def test_prefix_mode_and_sampled_subsets():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 100)
    logits = rng.normal(size=(8, 100, 3))
    prefix = accuracy_vs_k(logits, labels, mode="prefix")
    for p in prefix:
        expected = np.mean(committee_predict(logits[:p.k]) == labels)
        assert p.accuracy == pytest.approx(expected) and p.n_subsets == 1
    sampled = accuracy_vs_k(logits, labels, max_subsets=10, seed=3)
    assert [p.n_subsets for p in sampled] == [8, 10, 10, 10, 10, 10, 8, 1]
    assert sampled == accuracy_vs_k(logits, labels, max_subsets=10, seed=3)
    with pytest.raises(ValueError, match="labels"):
        accuracy_vs_k(logits, labels[:50])
    with pytest.raises(ValueError, match=r"\[K, N, C\]"):
        combine(logits[0])
