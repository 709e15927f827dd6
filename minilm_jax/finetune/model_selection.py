"""Scoring pieces of a fine-tuning run: per-split metrics and score (per member), mean and sample
std over seeds, ``<unk>`` counts of encoded splits, and the majority-class (or training-mean)
baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from minilm_jax.tasks.metrics import accuracy, glue_score, sample_std, task_metrics

VALIDATION = "validation"
UNK_WARN_RATE = 0.01


def mean_std(members: Sequence[Mapping[str, float | None]]) -> dict[str, Any]:
    """``{"mean", "std", "n", "std_ddof": 1}`` over members (per metric; std is the sample std)."""
    keys = list(members[0])
    return {"mean": {k: float(np.mean([m[k] for m in members])) for k in keys},
            "std": {k: sample_std([m[k] for m in members]) for k in keys},
            "n": len(members), "std_ddof": 1}


def _score(task: str, metrics: Mapping[str, float]) -> float:
    try:
        return glue_score(task, metrics)
    except KeyError:  # e.g. MNLI scored on one split: the mean of what there is
        return float(np.mean([v for k, v in metrics.items() if "/" not in k]))


def split_metrics(task: str, predictions: Mapping[str, np.ndarray],
                  labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Official metrics x100 over splits, and ``score``.

    MNLI's matched/mismatched splits give ``accuracy_m`` / ``accuracy_mm`` (its validation split,
    carved from train, gives ``accuracy``); for other tasks the first split's metrics are plain and
    further splits' are prefixed ``<split>/``.
    """
    splits = list(predictions)
    if task == "mnli" and all("matched" in s for s in splits):
        metrics = task_metrics("mnli", dict(predictions), dict(labels))
    else:
        def one(split: str) -> dict[str, float]:
            if task == "mnli":  # a split that is neither dev_matched nor dev_mismatched
                return {"accuracy": accuracy(predictions[split], labels[split])}
            return task_metrics(task, predictions[split], labels[split])

        metrics = one(splits[0])
        for split in splits[1:]:
            metrics.update({f"{split}/{k}": v for k, v in one(split).items()})
    metrics = {k: 100.0 * v for k, v in metrics.items()}
    metrics["score"] = _score(task, metrics)
    return metrics


def member_metrics(task: str, logits: Mapping[str, np.ndarray],
                   arrays: Mapping[str, Mapping[str, np.ndarray]], regression: bool
                   ) -> list[dict[str, float]]:
    """Per-member official metrics and ``score`` (GLUE-style, x100) over the splits of ``logits``
    (``[S, N, C]`` per split; regression's ``C = 1``), against the ``labels`` of each split's
    encoded ``arrays``."""
    labels = {split: arrays[split]["labels"] for split in logits}
    return [split_metrics(task, {split: (v[s, :, 0] if regression else v[s])
                                 for split, v in logits.items()}, labels)
            for s in range(len(next(iter(logits.values()))))]


def unk_counts(arrays: Mapping[str, np.ndarray], tokenizer: Any) -> dict[str, Any]:
    """``{"tokens", "unk", "rate"}``: ``unk_id`` among the input tokens that are neither padding nor
    special (``<s> </s> <mask>`` / ``[CLS] [SEP] [MASK]``) of an encoded split."""
    tokens = np.asarray(arrays["tokens"])
    specials = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id]
    real = (np.asarray(arrays["segments"]) != 0) & ~np.isin(tokens, specials)
    total = int(real.sum())
    unk = int(np.sum(real & (tokens == tokenizer.unk_id)))
    return {"tokens": total, "unk": unk, "rate": unk / total if total else 0.0}


def unk_warnings(unk: Mapping[str, Mapping[str, Any]], threshold: float = UNK_WARN_RATE) -> list[str]:
    """One warning line per split whose ``<unk>`` rate exceeds ``threshold``."""
    return [f"warning: {split}: {c['rate']:.1%} of the input tokens are <unk> ({c['unk']} of "
            f"{c['tokens']}); the tokenizer does not cover this text" for split, c in unk.items()
            if c["rate"] > threshold]


def majority_baseline(task: str, train_labels: np.ndarray, labels: Mapping[str, np.ndarray],
                      regression: bool) -> dict[str, dict[str, Any]]:
    """Per split: the metrics (x100) and ``score`` of always predicting the most frequent training
    label (ties: the lowest id). Regression predicts the training mean; correlations of a constant
    prediction are undefined, so every metric and the score are ``None`` (with ``prediction``)."""
    out: dict[str, dict[str, Any]] = {}
    train_labels = np.asarray(train_labels)
    if regression:
        mean = float(np.mean(train_labels))
        for split, y in labels.items():
            names = split_metrics(task, {split: np.full(len(y), mean)}, {split: y})
            out[split] = {**{k: None for k in names}, "prediction": mean}
        return out
    values, counts = np.unique(train_labels, return_counts=True)
    majority = int(values[np.argmax(counts)])
    for split, y in labels.items():
        out[split] = {**split_metrics(task, {split: np.full(len(y), majority)}, {split: y}),
                      "prediction": majority}
    return out
