"""Evaluations the run loop calls at evaluation steps, all of one shape:
``evaluation(step, graphdef, params, rest, validation_perplexity) -> scalars``.

:class:`ShardPerplexity` is the engine's own (masked-LM loss and perplexity over every sequence of
a shard split, on fixed masks; the run loop selects its best checkpoint by it); zero-shot
evaluations built above the engine (:mod:`minilm_jax.evals.in_training`) have the same shape,
and :mod:`minilm_jax.evals.perplexity` puts this one behind the evaluator seam for any checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import jax
import ml_collections
import numpy as np

from minilm_jax.data.shards import ShardSplit
from minilm_jax.train import batches as batch_lib


def evaluation_due(prev: int, step: int, every: int, extra_steps: list[int]) -> bool:
    """Whether a pre-training run evaluates after advancing from ``prev`` to ``step``: it crossed a
    multiple of ``every`` or one of ``extra_steps`` (snapshots, logged steps)."""
    return step // every > prev // every or any(prev < s <= step for s in extra_steps)


class EvaluationHook(Protocol):
    """An evaluation of the model state at ``step``; returns scalars to log."""

    def __call__(self, step: int, graphdef: Any, params: Any, rest: Any,
                 validation_perplexity: float | None) -> dict[str, float]: ...


def split_losses(split: ShardSplit, eval_config: ml_collections.ConfigDict, pad_id: int,
                 shardings: dict[str, Any], score: Callable[[dict[str, jax.Array], int], Any]
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(loss sum, prediction count, sequences) over every sequence of ``split`` exactly once (at
    most ``eval.max_sequences``), ``score(rows, batch_index)`` giving a batch's (sum, count):
    scalars for a run, ``[N]`` for a population."""
    bs = eval_config.batch_size
    n = split.num_sequences
    if eval_config.max_sequences:
        n = min(n, int(eval_config.max_sequences))
    loss_sum, count = np.zeros(()), np.zeros(())
    for index, start in enumerate(range(0, n, bs)):
        # This process's rows only; the last batch is padded, padded rows are masked out.
        host = batch_lib.eval_batch(split, start, min(start + bs, n), bs, pad_id)
        s, c = score(batch_lib.to_global(host, shardings), index)
        loss_sum = loss_sum + np.asarray(s, np.float64)
        count = count + np.asarray(c, np.float64)
    return loss_sum, count, n


def eval_result(loss_sum: float, count: float, sequences: int) -> dict[str, float]:
    """A validation or test row: loss per prediction, perplexity, predictions, sequences."""
    loss = loss_sum / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "predictions": count,
            "sequences": float(sequences)}



class ShardPerplexity:
    """Masked-LM loss and perplexity of a model state over every sequence of ``split`` exactly
    once (at most ``eval.max_sequences``), with ``eval_step`` (a compiled
    :func:`~minilm_jax.train.step.make_eval_step`: masks fixed by the evaluation seed)."""

    def __init__(self, split: ShardSplit, eval_config: ml_collections.ConfigDict, pad_id: int,
                 eval_step: Callable[..., Any], shardings: dict[str, Any]) -> None:
        self.split, self.eval_config, self.pad_id = split, eval_config, pad_id
        self.eval_step, self.shardings = eval_step, shardings

    def __call__(self, step: int, graphdef: Any, params: Any, rest: Any,
                 validation_perplexity: float | None = None) -> dict[str, float]:
        loss_sum, count, n = split_losses(
            self.split, self.eval_config, self.pad_id, self.shardings,
            lambda rows, index: self.eval_step(params, rest, rows["tokens"], rows["segments"],
                                               rows["valid"], index))
        return eval_result(float(loss_sum), float(count), n)
