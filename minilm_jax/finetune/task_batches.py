"""The task's data as a fine-tuning program's batches: the tokenizer checked against the model, the
splits loaded (filtered to a vocabulary, characters the tokenizer lacks dropped, when asked) and
encoded once, each member's training batches in its own seed's order and the evaluation batches,
both cut to the padding bucket of their longest sequence."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.run_identity import examples_digest
from minilm_jax.model.config import ModelConfig
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.tasks.batching import bucket_length, cut_to_bucket, pad_to_batches
from minilm_jax.tasks.encoding import encode_examples
from minilm_jax.tasks.loaders import TaskData
from minilm_jax.tasks.task_data import drop_unknown_chars, load_task_data, load_vocabulary
from minilm_jax.tokenizer import Tokenizer, load_tokenizer
from minilm_jax.train import batches as batch_lib

from .model_selection import VALIDATION, unk_counts, unk_warnings

INPUTS = ("tokens", "segments", "token_types")


def task_tokenizer(config: ml_collections.ConfigDict, pretrained: PretrainedRun | None,
                   model_cfg: ModelConfig) -> Tokenizer:
    """The tokenizer ``data.tokenizer`` names (else the checkpoint's), refused when it is not the
    checkpoint's or does not fit the model (vocabulary, pad id, sequence length)."""
    path = config.data.tokenizer or (pretrained.tokenizer_path if pretrained else "")
    if not path:
        raise UserError("no tokenizer: pass --config.data.tokenizer=FILE (the checkpoint's shard "
                        "manifest records none)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    tokenizer = load_tokenizer(path)
    if pretrained is not None:
        pretrained.check_tokenizer(tokenizer)
    elif tokenizer.vocab_size > model_cfg.vocab_size:
        raise UserError(f"tokenizer {path} has {tokenizer.vocab_size} tokens, more than "
                        f"model.vocab_size={model_cfg.vocab_size}")
    if tokenizer.pad_id != model_cfg.pad_id:
        raise UserError(f"tokenizer pad id {tokenizer.pad_id} differs from the model's "
                        f"pad_id {model_cfg.pad_id}")
    if config.data.max_len > model_cfg.max_len:
        raise UserError(f"data.max_len={config.data.max_len} exceeds the model's sequence "
                        f"length {model_cfg.max_len}")
    return tokenizer


def task_data_digest(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The identity of the examples a run of ``config`` reads (rows per split, sha256;
    :func:`minilm_jax.run_identity.examples_digest`), as :class:`TaskBatches` records it."""
    return examples_digest(load_task_data(config, load_vocabulary(config.data.vocab_filter)))


class TaskBatches:
    """The task's splits, encoded: ``train_arrays`` and ``eval_arrays`` (every split ever scored:
    validation, for model selection, first, then the ``reported`` ones, scored once at the end),
    ``<unk>`` counts per split; training batches once :meth:`order` gave each member its seed."""

    def __init__(self, config: ml_collections.ConfigDict, tokenizer: Tokenizer):
        self.data: TaskData = load_task_data(config, load_vocabulary(config.data.vocab_filter))
        self.digest = examples_digest(self.data)  # the examples as read: the run's input
        self.dropped_chars = (drop_unknown_chars(self.data, tokenizer)
                              if config.data.drop_unknown_chars else None)
        self.spec = self.data.spec
        self.regression = self.spec.is_regression
        self.max_len, self.buckets = int(config.data.max_len), int(config.data.pad_buckets)
        if self.buckets < 0:
            raise UserError(f"data.pad_buckets must be >= 0 (0: always pad to max_len), "
                            f"got {self.buckets}")
        if VALIDATION in self.data.evals:
            raise UserError(f"a reported split may not be called {VALIDATION!r} (the model-selection "
                            "split carved from train)")

        def encode(examples):
            return encode_examples(examples, tokenizer, self.max_len, self.regression)

        self.train_arrays = encode(self.data.train)
        self.train_lengths = self.train_arrays["segments"].astype(bool).sum(axis=1)
        self.reported = list(self.data.evals)  # scored once, at the end
        # Every split that is ever scored: validation (selection) first, then the reported ones.
        self.eval_arrays = {VALIDATION: encode(self.data.validation),
                            **{s: encode(v) for s, v in self.data.evals.items()}}
        self.unk = {split: unk_counts(arrays, tokenizer)
                    for split, arrays in {"train": self.train_arrays, **self.eval_arrays}.items()}
        for line in unk_warnings(self.unk):
            print(line, flush=True)
        self.indexers: list[batch_lib.BatchIndexer] = []

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps of one pass over the training examples."""
        return max(1, math.ceil(len(self.data.train) / batch_size))

    def order(self, member_seeds: Sequence[int], batch_size: int) -> None:
        """Give member s the training order of ``BatchIndexer(member_seeds[s])``."""
        self.indexers = [batch_lib.BatchIndexer(seed, len(self.data.train), batch_size)
                         for seed in member_seeds]

    def rows(self, step: int, steps: int) -> np.ndarray:
        """``[steps, S, B]`` global training rows: member s in the order of ``BatchIndexer(seed_s)``
        (the same on every host)."""
        return np.stack([np.stack([ix.indices(step + k) for ix in self.indexers])
                         for k in range(steps)])

    def longest(self, rows: np.ndarray) -> int:
        """The longest sequence among ``rows``."""
        return int(self.train_lengths[rows].max())

    def gather(self, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """``rows`` as this host's ``[steps, S, B_host, length]`` batch (and ``labels``)."""
        host = np.stack([np.stack([batch_lib.host_rows(r) for r in per_step]) for per_step in rows])
        batch = {name: self.train_arrays[name][:, :length][host] for name in INPUTS}
        batch["labels"] = self.train_arrays["labels"][host]
        return batch

    def host_batch(self, step: int, steps: int) -> dict[str, np.ndarray]:
        """``[steps, S, B_host, T]``: member s sees the order of ``BatchIndexer(seed_s)``; ``T`` is
        the bucket of the longest sequence among all members' global batches of these steps."""
        return population_batch([self], step, steps)

    def eval_batches(self, split: str, batch_size: int, sharding: Any
                     ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """Every example of ``split`` once, in batches of ``batch_size`` (the last one padded) cut
        to their bucket and placed with ``sharding`` (each process feeds its block): (the placed
        batch, the rows of real examples)."""
        return eval_batches_of(self.eval_arrays[split], batch_size, sharding, self.buckets)

    def uids(self, split: str) -> list[str]:
        """The ids of ``split``'s examples, in the order of its arrays."""
        examples = self.data.validation if split == VALIDATION else self.data.evals[split]
        return [ex.uid for ex in examples]


def eval_batches_of(arrays: dict[str, np.ndarray], batch_size: int, sharding: Any, buckets: int
                    ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """:meth:`TaskBatches.eval_batches` of encoded ``arrays``."""
    inputs = {k: arrays[k] for k in INPUTS}
    for batch, valid in pad_to_batches(inputs, batch_size):
        batch = cut_to_bucket(batch, buckets, INPUTS)
        placed = batch_lib.to_global({k: batch_lib.host_rows(v) for k, v in batch.items()},
                                     sharding)
        yield placed, valid


def pooled_split(tasks: Sequence[TaskBatches], split: str
                 ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The distinct examples of ``split`` over ``tasks`` (by id: cross-validation folds share
    rows) as one encoded array set, and each task's rows in it (in its own order): scored once
    for all members instead of once per task."""
    if len(tasks) == 1:
        arrays = tasks[0].eval_arrays[split]
        return arrays, [np.arange(len(arrays["labels"]))]
    position: dict[str, int] = {}
    picks: list[tuple[TaskBatches, int]] = []
    where = []
    for task in tasks:
        rows = []
        for i, uid in enumerate(task.uids(split)):
            if uid not in position:
                position[uid] = len(picks)
                picks.append((task, i))
            rows.append(position[uid])
        where.append(np.asarray(rows, np.int64))
    keys = tasks[0].eval_arrays[split].keys()
    pool = {k: np.stack([task.eval_arrays[split][k][i] for task, i in picks]) for k in keys}
    return pool, where


def population_batch(tasks: Sequence[TaskBatches], step: int, steps: int) -> dict[str, np.ndarray]:
    """The members of ``tasks`` in order (each task's members with their own data: e.g. one
    cross-validation fold each), ``[steps, S, B_host, T]`` with one ``T`` for all: the bucket of
    the longest sequence among every member's global batches of these steps."""
    rows = [task.rows(step, steps) for task in tasks]
    first = tasks[0]
    length = bucket_length(max(t.longest(r) for t, r in zip(tasks, rows)), first.max_len,
                           first.buckets)
    parts = [task.gather(r, length) for task, r in zip(tasks, rows)]
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def run_tasks(configs: Sequence[ml_collections.ConfigDict], tokenizer: Tokenizer
              ) -> list[TaskBatches]:
    """One :class:`TaskBatches` per run config, shared by runs whose task and data fields agree
    (a population of checkpoints: one; cross-validation folds: one each)."""
    made: dict[str, TaskBatches] = {}
    out = []
    for config in configs:
        key = repr((config.task, sorted(config.data.to_dict().items())))
        if key not in made:
            made[key] = TaskBatches(config, tokenizer)
        out.append(made[key])
    return out


def distinct(tasks: Sequence[TaskBatches]) -> list[TaskBatches]:
    """Each run's task data once, in run order."""
    return list({id(t): t for t in tasks}.values())


def members_by_task(tasks: Sequence[TaskBatches], spans: Sequence[tuple[int, int]]
                    ) -> list[tuple[TaskBatches, np.ndarray]]:
    """Each distinct task data and the members (program indices) of the runs that use it (run
    i: ``tasks[i]``, members ``spans[i] = (first, size)``); one task's members must be
    contiguous (the batch of :func:`population_batch`)."""
    out = []
    for task in distinct(tasks):
        members = np.concatenate([np.arange(first, first + size)
                                  for (first, size), t in zip(spans, tasks) if t is task])
        if np.any(np.diff(members) != 1):
            raise ValueError("the runs sharing task data must be contiguous members")
        out.append((task, members))
    return out
