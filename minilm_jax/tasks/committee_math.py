"""Soft committees of independently trained members (study B), in numpy.

Members' logits are stacked as ``[K, N, C]`` (K members, N examples, C classes).
``method="prob"`` (default) averages softmax probabilities, ``"logit"`` averages
logits; the committee predicts the argmax of the average.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .metrics import sample_std

Method = Literal["prob", "logit"]


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _member_scores(member_logits: Any, method: Method) -> np.ndarray:
    logits = np.asarray(member_logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"member logits must be [K, N, C], got shape {logits.shape}")
    if method == "prob":
        return softmax(logits)
    if method == "logit":
        return logits
    raise ValueError(f"unknown method {method!r} (use 'prob' or 'logit')")


def combine(member_logits: Any, method: Method = "prob") -> np.ndarray:
    """Committee scores ``[N, C]``: mean probabilities (``prob``) or mean logits (``logit``)."""
    return _member_scores(member_logits, method).mean(axis=0)


def committee_predict(member_logits: Any, method: Method = "prob") -> np.ndarray:
    """Committee class predictions ``[N]``."""
    return combine(member_logits, method).argmax(axis=-1)


@dataclass(frozen=True)
class CommitteePoint:
    """Accuracy of committees of ``k`` members: mean and sample std (ddof=1; 0 for one subset)
    over ``n_subsets`` subsets."""

    k: int
    accuracy: float
    std: float
    n_subsets: int


def _subsets(k_max: int, k: int, mode: str, max_subsets: int,
             rng: np.random.Generator) -> list[tuple[int, ...]]:
    if mode == "prefix":
        return [tuple(range(k))]
    if mode != "subsets":
        raise ValueError(f"unknown mode {mode!r} (use 'subsets' or 'prefix')")
    if math.comb(k_max, k) <= max_subsets:
        return list(itertools.combinations(range(k_max), k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_subsets:
        chosen.add(tuple(sorted(rng.choice(k_max, size=k, replace=False).tolist())))
    return sorted(chosen)


def accuracy_vs_k(member_logits: Any, labels: Any, method: Method = "prob",
                  mode: Literal["subsets", "prefix"] = "subsets", max_subsets: int = 200,
                  seed: int = 0) -> list[CommitteePoint]:
    """Committee accuracy for every K = 1..K_max.

    ``mode="subsets"`` (default) averages over member subsets of size K: all
    ``C(K_max, K)`` of them when there are at most ``max_subsets``, otherwise
    ``max_subsets`` distinct subsets drawn with ``seed``. ``mode="prefix"`` uses
    the first K members only (one committee per K, std 0).
    """
    scores = _member_scores(member_logits, method)
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} examples in logits but {y.shape[0]} labels")
    rng = np.random.default_rng(seed)
    points = []
    for k in range(1, scores.shape[0] + 1):
        accs = [float(np.mean(scores[list(s)].mean(axis=0).argmax(axis=-1) == y))
                for s in _subsets(scores.shape[0], k, mode, max_subsets, rng)]
        points.append(CommitteePoint(k, float(np.mean(accs)), sample_std(accs), len(accs)))
    return points
