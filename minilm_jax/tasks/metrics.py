"""Evaluation metrics over all predictions of a split (never averaged over batches).

All functions take numpy-compatible arrays (jax arrays work) and return Python
floats in natural units (accuracy in [0, 1], correlations in [-1, 1]).
Degenerate inputs give defined values instead of NaN: MCC is 0 when either the
predictions or the labels are constant; Pearson/Spearman are 0 when either side
is constant; F1 is 0 when there are no positive predictions and no positive labels.
Classification predictions may be class ids ``[N]`` or scores ``[N, C]`` (argmax).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .glue import GLUE_TASKS
from .registry import get_task


def sample_std(values: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (ddof=1); 0.0 for a single value: every spread over seeds,
    members or committees the project reports."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def _class_ids(predictions: Any) -> np.ndarray:
    p = np.asarray(predictions)
    if p.ndim == 2:
        p = p.argmax(axis=-1)
    if p.ndim != 1:
        raise ValueError(f"predictions must be [N] class ids or [N, C] scores, got shape {p.shape}")
    return p


def _pair(predictions: Any, labels: Any, classes: bool) -> tuple[np.ndarray, np.ndarray]:
    p = _class_ids(predictions) if classes else np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"{p.shape[0]} predictions but {y.shape[0]} labels")
    if y.shape[0] == 0:
        raise ValueError("cannot compute a metric over zero examples")
    if classes:
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError("class labels must be integers")
            y = y.astype(np.int64)
        if np.any(y < 0):
            raise ValueError("labels contain negative ids (unlabelled examples?)")
    elif not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("regression predictions and labels must be finite")
    return p, y


def accuracy(predictions: Any, labels: Any) -> float:
    """Share of predictions equal to the label."""
    p, y = _pair(predictions, labels, classes=True)
    return float(np.mean(p == y))


def f1_binary(predictions: Any, labels: Any, positive: int = 1) -> float:
    """F1 of the ``positive`` class: ``2 TP / (2 TP + FP + FN)`` (0 when that is 0/0)."""
    p, y = _pair(predictions, labels, classes=True)
    tp = np.sum((p == positive) & (y == positive))
    fp = np.sum((p == positive) & (y != positive))
    fn = np.sum((p != positive) & (y == positive))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def macro_f1(predictions: Any, labels: Any) -> float:
    """The unweighted mean over the classes present in labels or predictions of each class's F1."""
    p, y = _pair(predictions, labels, classes=True)
    scores = [2 * np.sum((p == c) & (y == c)) / (np.sum(p == c) + np.sum(y == c))
              for c in np.union1d(p, y)]
    return float(np.mean(scores))


def matthews_corrcoef(predictions: Any, labels: Any) -> float:
    """Matthews correlation (multiclass R_K statistic; binary phi). 0 when undefined."""
    p, y = _pair(predictions, labels, classes=True)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    yi, pi = inverse[:len(y)], inverse[len(y):]
    k = len(classes)
    t_sum = np.bincount(yi, minlength=k).astype(np.float64)
    p_sum = np.bincount(pi, minlength=k).astype(np.float64)
    n = float(len(y))
    correct = float(np.sum(yi == pi))
    cov_yp = correct * n - t_sum @ p_sum
    cov_yy = n * n - t_sum @ t_sum
    cov_pp = n * n - p_sum @ p_sum
    denom = cov_yy * cov_pp
    return float(cov_yp / np.sqrt(denom)) if denom > 0 else 0.0


def average_ranks(x: Any) -> np.ndarray:
    """Ranks (1-based) along the last axis, ties sharing their average rank."""
    x = np.asarray(x)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    s = np.take_along_axis(x, order, axis=-1)
    idx = np.broadcast_to(np.arange(n), s.shape)
    starts = np.ones(s.shape, dtype=bool)
    starts[..., 1:] = s[..., 1:] != s[..., :-1]
    ends = np.ones(s.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n - 1), -1), axis=-1), -1)
    ranks = np.empty(s.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN where either side is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx = np.sum(xc * xc, axis=-1)
    syy = np.sum(yc * yc, axis=-1)
    num = np.sum(xc * yc, axis=-1)
    constant = (x.max(axis=-1) == x.min(axis=-1)) | (y.max(axis=-1) == y.min(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.sqrt(sxx * syy)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def pearson(predictions: Any, labels: Any) -> float:
    """Pearson correlation; 0 when either side is constant."""
    p, y = _pair(predictions, labels, classes=False)
    r = float(pearson_rows(p, y.astype(np.float64)))
    return 0.0 if np.isnan(r) else r


def spearman(predictions: Any, labels: Any) -> float:
    """Spearman correlation (Pearson of average ranks); 0 when either side is constant."""
    p, y = _pair(predictions, labels, classes=False)
    r = float(pearson_rows(average_ranks(p), average_ranks(y.astype(np.float64))))
    return 0.0 if np.isnan(r) else r


def _mnli_key(split: str) -> str:
    key = split.lower()
    if key in ("mm", "mismatched") or "mismatched" in key:
        return "accuracy_mm"
    if key in ("m", "matched") or "matched" in key:
        return "accuracy_m"
    raise KeyError(f"MNLI split key {split!r} is neither matched nor mismatched")


METRICS = {"accuracy": accuracy, "f1": f1_binary, "macro_f1": macro_f1, "mcc": matthews_corrcoef,
           "pearson": pearson, "spearman": spearman}


def task_metrics(task: str, predictions: Any, labels: Any) -> dict[str, float]:
    """The official metrics of a task over one split: the registry entry's ``metric_names``.

    CoLA ``mcc``; STS-B ``pearson``, ``spearman``; MRPC/QQP ``accuracy``, ``f1``; most others
    ``accuracy``. MNLI: pass mappings ``{"dev_matched": ..., "dev_mismatched": ...}`` for
    predictions and labels to get ``accuracy_m`` and ``accuracy_mm``; or use task ``"mnli-m"`` /
    ``"mnli-mm"`` with arrays for one of them.
    """
    key = task.strip().lower()
    if key in ("mnli-m", "mnli-mm"):
        return {"accuracy_m" if key == "mnli-m" else "accuracy_mm": accuracy(predictions, labels)}
    names = get_task(key).metric_names
    if names == ("accuracy_m", "accuracy_mm"):
        if not isinstance(predictions, Mapping) or not isinstance(labels, Mapping):
            raise TypeError("MNLI needs mappings split -> array for predictions and labels "
                            "(or task 'mnli-m' / 'mnli-mm')")
        return {_mnli_key(s): accuracy(predictions[s], labels[s]) for s in predictions}
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"task {task!r}: no metric function for {unknown}; known: {sorted(METRICS)}")
    return {name: METRICS[name](predictions, labels) for name in names}


def glue_score(task: str, metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its official metrics (MNLI: mean of m and mm)."""
    names = get_task(task).metric_names
    missing = [m for m in names if m not in metrics]
    if missing:
        raise KeyError(f"metrics for {task!r} lack {missing}; got {sorted(metrics)}")
    return float(np.mean([metrics[m] for m in names]))


def glue_average(scores: Mapping[str, float] | Sequence[float]) -> float:
    """Unweighted mean of per-task scores (as returned by :func:`glue_score`)."""
    values = list(scores.values()) if isinstance(scores, Mapping) else list(scores)
    if not values:
        raise ValueError("glue_average of no tasks")
    return float(np.mean(values))


__all__ = ["accuracy", "f1_binary", "macro_f1", "matthews_corrcoef", "pearson", "spearman",
           "average_ranks", "pearson_rows", "task_metrics", "glue_score", "glue_average",
           "GLUE_TASKS"]
