"""The fine-tuning loop: task data -> S vmapped members on a mesh -> per-epoch evaluation on the
validation split (model selection only: history, early stopping, each member's selected epoch), the
reported splits (GLUE dev, test, holdout) scored once at the end with the final and the selected
parameters; length-bucketed batches, Orbax checkpoints with resume, JSONL/TensorBoard metrics, a run
summary. With several processes each feeds its rows of every batch, process 0's validation metrics
decide model selection everywhere, and process 0 alone writes the run's files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.storage import atomic_write_bytes, atomic_write_json, run_path
from minilm_jax.run_config import flatten, model_from_config
from minilm_jax.tasks.batching import bucket_length, cut_to_bucket, pad_to_batches
from minilm_jax.tasks.encoding import encode_examples
from minilm_jax.tokenizer import Tokenizer, load_tokenizer
from minilm_jax.train import batches as batch_lib
from minilm_jax.train.distributed import from_process_0
from minilm_jax.train.mesh import batch_sharding, check_batch_divisible, make_mesh, replicated
from minilm_jax.train import runner
from minilm_jax.train.run_log import MetricsWriter, log_line
from minilm_jax.train.records import FinetuneSummary
from minilm_jax.train.state import MembersState
from minilm_jax.train.optim import make_optimizer, make_schedule

from .config import (RESUMABLE_FIELDS, changed_model_fields, validate_finetune_config,
                     with_overrides)
from .pretrained import PretrainedRun
from .selection import (VALIDATION, majority_baseline, mean_std, sample_std, split_metrics,
                        unk_counts, unk_warnings)
from .step import (MEMBER_STRATEGIES, make_finetune_step, make_predict_step, make_select,
                   members_state)
from minilm_jax.tasks.loaders import TaskData
from minilm_jax.tasks.task_data import drop_unknown_chars, load_task_data, load_vocabulary

INPUTS = ("tokens", "segments", "token_types")


def _npy_bytes(array: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class Finetuner(runner.LoopSpec):
    """One fine-tuning run of ``config.task`` for S seeds, from a checkpoint or from random init."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, init_mode: str):
        if init_mode not in ("pretrained", "random"):
            raise UserError(f"init mode must be 'pretrained' or 'random', not {init_mode!r}")
        validate_finetune_config(config)  # every field's range, before anything else
        self.config, self.workdir, self.init_mode = config, run_path(workdir), init_mode
        self.pretrained = (PretrainedRun.open(config.init.checkpoint, config.init.which)
                           if config.init.checkpoint else None)
        if init_mode == "pretrained" and self.pretrained is None:
            raise UserError("init.mode=pretrained needs --config.init.checkpoint=<pre-training "
                            "workdir> (or use init.mode=random)")
        self.model_cfg = with_overrides(
            self.pretrained.model.replace(**changed_model_fields(config)) if self.pretrained
            else model_from_config(config),
            config.model_overrides)
        self.tokenizer = self._tokenizer()
        self.data: TaskData = load_task_data(config, load_vocabulary(config.data.vocab_filter))
        self.dropped_chars = (drop_unknown_chars(self.data, self.tokenizer)
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
            return encode_examples(examples, self.tokenizer, self.max_len, self.regression)

        self.train_arrays = encode(self.data.train)
        self.train_lengths = self.train_arrays["segments"].astype(bool).sum(axis=1)
        self.reported = list(self.data.evals)  # scored once, at the end
        # Every split that is ever scored: validation (selection) first, then the reported ones.
        self.eval_arrays = {VALIDATION: encode(self.data.validation),
                            **{s: encode(v) for s, v in self.data.evals.items()}}
        self.unk = {split: unk_counts(arrays, self.tokenizer)
                    for split, arrays in {"train": self.train_arrays, **self.eval_arrays}.items()}
        for line in unk_warnings(self.unk):
            print(line, flush=True)
        self.seeds = [int(s) for s in config.train.seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"train.seeds must be distinct and non-empty, got {self.seeds}")
        tc = config.train
        if tc.members not in MEMBER_STRATEGIES:
            raise UserError(f"train.members must be one of {', '.join(MEMBER_STRATEGIES)}, "
                            f"not {tc.members!r}")
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
        check_batch_divisible(tc.batch_size, self.mesh, "train.batch_size")
        check_batch_divisible(config.eval.batch_size, self.mesh, "eval.batch_size")
        n_train = len(self.data.train)
        self.steps_per_epoch = max(1, math.ceil(n_train / tc.batch_size))
        self.total_steps = int(tc.epochs) * self.steps_per_epoch
        if self.total_steps <= 0:
            raise UserError(f"train.epochs must be positive (got {tc.epochs})")
        self.eval_steps = [e * self.steps_per_epoch
                           for e in range(1, int(tc.epochs) + 1) if e % config.eval.every_epochs == 0
                           or e == tc.epochs]
        self.indexers = [batch_lib.BatchIndexer(seed, n_train, tc.batch_size) for seed in self.seeds]
        self._build()
        # Everything is checked: only now is anything written (a rejected command leaves no trace).
        self.identity = flatten(config)
        self.identity["init.mode"] = self.init_mode
        self.identity["tokenizer_sha256"] = self.tokenizer.sha256
        self.identity["model_built"] = self.model_cfg.to_dict()  # what config.json's fields made
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lock = runner.check_workdir(self.workdir, self.identity, RESUMABLE_FIELDS,
                                         "a fine-tuning run")

    # ----------------------------------------------------------------------------- setup
    def _tokenizer(self) -> Tokenizer:
        path = self.config.data.tokenizer or (self.pretrained.tokenizer_path if self.pretrained else "")
        if not path:
            raise UserError("no tokenizer: pass --config.data.tokenizer=FILE (the checkpoint's shard "
                            "manifest records none)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        tokenizer = load_tokenizer(path)
        if self.pretrained is not None:
            self.pretrained.check_tokenizer(tokenizer)
        elif tokenizer.vocab_size > self.model_cfg.vocab_size:
            raise UserError(f"tokenizer {path} has {tokenizer.vocab_size} tokens, more than "
                            f"model.vocab_size={self.model_cfg.vocab_size}")
        if tokenizer.pad_id != self.model_cfg.pad_id:
            raise UserError(f"tokenizer pad id {tokenizer.pad_id} differs from the model's "
                            f"pad_id {self.model_cfg.pad_id}")
        if self.config.data.max_len > self.model_cfg.max_len:
            raise UserError(f"data.max_len={self.config.data.max_len} exceeds the model's sequence "
                            f"length {self.model_cfg.max_len}")
        return tokenizer

    def _build(self) -> None:
        cfg, num_labels = self.model_cfg, self.spec.num_labels
        self.optimizer = make_optimizer(self.config.optim, self.total_steps)
        self.schedule = make_schedule(self.config.optim, self.total_steps)
        encoder_state = self.pretrained.encoder_state() if self.init_mode == "pretrained" else None
        built = members_state(cfg, num_labels, self.optimizer, self.seeds, self.mesh, encoder_state)
        self.graphdef, self.param_counts = built.graphdef, built.param_counts
        self.state_sharding = built.shardings
        self.state: MembersState = built.init(encoder_state)
        self.batch_shardings = {k: batch_sharding(self.mesh, batch_axis=2, ndim=4) for k in INPUTS}
        self.batch_shardings["labels"] = batch_sharding(self.mesh, batch_axis=2, ndim=3)
        members = self.config.train.members
        step = make_finetune_step(self.graphdef, self.optimizer, self.schedule, self.regression,
                                  members)
        self.train_step = jax.jit(step, in_shardings=(self.state_sharding, self.batch_shardings),
                                  out_shardings=(self.state_sharding, replicated(self.mesh)),
                                  donate_argnums=0)
        row = batch_sharding(self.mesh, batch_axis=0, ndim=2)
        self.eval_input_sharding = row
        self.predict = jax.jit(make_predict_step(self.graphdef, members),
                               in_shardings=(self.state_sharding["params"], self.state_sharding["rest"],
                                             row, row, row),
                               out_shardings=replicated(self.mesh))
        self.select = jax.jit(make_select(), in_shardings=(self.state_sharding, replicated(self.mesh)),
                              out_shardings=self.state_sharding, donate_argnums=0)

    # ----------------------------------------------------------------------------- data
    def host_batch(self, step: int, steps: int) -> dict[str, np.ndarray]:
        """``[steps, S, B_host, T]``: member s sees the order of ``BatchIndexer(seed_s)``; ``T`` is
        the bucket of the longest sequence among all members' global batches of these steps."""
        rows = np.stack([np.stack([ix.indices(step + k) for ix in self.indexers])
                         for k in range(steps)])  # [K, S, B] global rows, the same on every host
        length = bucket_length(int(self.train_lengths[rows].max()), self.max_len, self.buckets)
        host = np.stack([np.stack([batch_lib.host_rows(r) for r in per_step]) for per_step in rows])
        batch = {name: self.train_arrays[name][:, :length][host] for name in INPUTS}
        batch["labels"] = self.train_arrays["labels"][host]
        return batch

    # ----------------------------------------------------------------------------- evaluation
    def predict_split(self, split: str, which: str = "final") -> np.ndarray:
        """Logits ``[S, N, C]`` of every member for every example of ``split``, each once, with the
        current (``final``) or each member's ``selected`` parameters. Each process feeds its block of
        every batch; the logits come back whole (replicated) on every process."""
        if which not in ("final", "selected"):
            raise ValueError(f"which must be 'final' or 'selected', not {which!r}")
        source = self.state if which == "final" else self.state["selected"]
        arrays = {k: self.eval_arrays[split][k] for k in INPUTS}
        outputs = []
        for batch, valid in pad_to_batches(arrays, self.config.eval.batch_size):
            batch = cut_to_bucket(batch, self.buckets, INPUTS)
            placed = batch_lib.to_global({k: batch_lib.host_rows(v) for k, v in batch.items()},
                                         self.eval_input_sharding)
            logits = self.predict(source["params"], source["rest"], *[placed[k] for k in INPUTS])
            outputs.append(np.asarray(logits.addressable_data(0))[:, valid])
        return np.concatenate(outputs, axis=1)

    def member_metrics(self, logits: dict[str, np.ndarray]) -> list[dict[str, float]]:
        """Per-member official metrics and ``score`` (GLUE-style, x100) over the given splits."""
        labels = {split: self.eval_arrays[split]["labels"] for split in logits}
        return [split_metrics(self.spec.name,
                              {split: (v[s, :, 0] if self.regression else v[s])
                               for split, v in logits.items()}, labels)
                for s in range(len(self.seeds))]

    # ----------------------------------------------------------------------------- history
    def _history_path(self) -> Path:
        return self.workdir / "history.json"

    def _load_history(self, upto_step: int) -> list[dict[str, Any]]:
        """Process 0's ``history.json`` up to ``upto_step``, on every process."""
        path = self._history_path()
        saved = json.loads(path.read_text()) if jax.process_index() == 0 and path.exists() else []
        return [h for h in from_process_0(saved) if h["step"] <= upto_step]

    def _save_predictions(self, logits: dict[str, np.ndarray], which: str) -> None:
        """``predictions/<split>.<which>.npy`` [S, N, C] and ``<split>.labels.npy``."""
        if jax.process_index() != 0:
            return
        out = self.workdir / "predictions"
        out.mkdir(exist_ok=True)
        for split, array in logits.items():
            atomic_write_bytes(out / f"{split}.{which}.npy", _npy_bytes(array))
            atomic_write_bytes(out / f"{split}.labels.npy",
                               _npy_bytes(self.eval_arrays[split]["labels"]))

    # ----------------------------------------------------------------------------- loop specialisation
    save_after_evaluation = True  # an evaluation updates the selected parameters and the history

    def dispatch(self, state: MembersState, host_batch: dict[str, np.ndarray]):
        return self.train_step(state, batch_lib.to_global(host_batch, self.batch_shardings))

    def record_metrics(self, first: int, count: int, host: dict[str, Any]) -> None:
        self._window_examples += count * self.config.train.batch_size * len(self.seeds)

    def log_line(self, step: int, host: dict[str, Any], window: runner.Window) -> dict[str, str]:
        losses = np.asarray(host["loss"])  # [K, S]
        values = {"loss": float(losses[-1].mean()), "loss_per_member": losses[-1].tolist(),
                  "lr": float(np.asarray(host["lr"])[-1]),
                  "grad_norm": float(np.asarray(host["grad_norm"])[-1].mean()),
                  "epoch": step / self.steps_per_epoch}
        if window.compiled:  # the first window includes compilation: no speed figure
            values["examples_per_sec"] = self._window_examples / window.elapsed()
        self.writer.write(step, "train", values)
        self._window_examples = 0
        return {"loss": f"{values['loss']:.3f}"}

    def dispatch_boundaries(self) -> list[int]:
        return self.eval_steps

    def evaluation_due(self, prev: int, step: int) -> bool:
        return step in self.eval_steps

    def evaluate_at(self, step: int, state: MembersState) -> tuple[MembersState, bool]:
        self.state = state
        self._history.append(self._evaluate(step, self.writer, self._history))
        if jax.process_index() == 0:
            atomic_write_json(self._history_path(), self._history)
        return self.state, self._early_stop(self._history)

    # ----------------------------------------------------------------------------- run
    def train(self) -> dict[str, Any]:
        config, tc = self.config, self.config.train
        ckpts, self.writer, start, self.state = runner.open_run(
            self.workdir, config.checkpoint, self.state, identity=self.identity,
            resumable=RESUMABLE_FIELDS, keep_best=False)
        self._history = history = self._load_history(start)
        self._window_examples = 0
        t0 = time.time()
        # a run that stopped early and is started again: nothing left to train
        stopped = bool(history) and history[-1]["step"] == start and self._early_stop(history)
        result = runner.run_loop(self, self.state, start, ckpts, self.writer,
                                 steps_per_dispatch=tc.steps_per_dispatch, log_every=tc.log_every,
                                 prefetch_depth=2, progress=tc.progress,
                                 desc=f"finetune {self.spec.name}", nothing_left=stopped)
        self.state, status = result.state, result.status
        # The reported splits are scored here and only here: once with the final parameters, once
        # with each member's selected ones (not for a preempted run: its resumption does it).
        reported = (self._score_reported() if status != "preempted" and history else None)
        summary = self._summary(status, history, reported, time.time() - t0)
        self.writer.close()
        ckpts.close()
        return summary

    def _evaluate(self, step: int, writer: MetricsWriter, history: list[dict]) -> dict[str, Any]:
        """Score the validation split; members that beat their best validation score so far copy
        their parameters into ``state["selected"]``."""
        # Process 0's metrics decide on every process (the same selection, the same early stop).
        members = from_process_0(self.member_metrics({VALIDATION: self.predict_split(VALIDATION)}))
        scores = np.asarray([m["score"] for m in members])
        best_before = (np.max([[m["score"] for m in h["members"]] for h in history], axis=0)
                       if history else np.full(len(members), -np.inf))
        improved = scores > best_before
        self.state = self.select(self.state, improved)  # a host array: the same on every process
        entry = {"step": step, "epoch": step / self.steps_per_epoch, "split": VALIDATION,
                 "members": members, "improved": improved.tolist(),
                 "score_mean": float(scores.mean()), "score_std": sample_std(scores)}
        writer.write(step, VALIDATION, {
            "score": entry["score_mean"], "score_std": entry["score_std"], "epoch": entry["epoch"],
            **{k: float(np.mean([m[k] for m in members])) for k in members[0]}})
        log_line(f"{self.spec.name} validation epoch {entry['epoch']:g} (step {step}): score "
                 f"{entry['score_mean']:.2f} (sd {entry['score_std']:.2f}, {len(members)} seeds)")
        return entry

    def _early_stop(self, history: list[dict]) -> bool:
        """No member improved its validation score in the last ``patience`` evaluations."""
        patience = int(self.config.train.early_stopping_patience)
        if patience <= 0 or len(history) <= patience:
            return False
        scores = np.asarray([[m["score"] for m in h["members"]] for h in history])  # [E, S]
        best_recent = scores[-patience:].max(axis=0)
        best_before = scores[:-patience].max(axis=0)
        return bool(np.all(best_recent <= best_before))

    def _score_reported(self) -> dict[str, list[dict[str, float]]]:
        """Members' metrics on the reported splits with the ``final`` and the ``selected``
        parameters; their logits go to ``predictions/``."""
        out = {}
        for which in ("final", "selected"):
            logits = {split: self.predict_split(split, which) for split in self.reported}
            self._save_predictions(logits, which)
            out[which] = self.member_metrics(logits)
        return out

    def _summary(self, status: str, history: list[dict],
                 reported: dict[str, list[dict[str, float]]] | None, wall: float) -> dict[str, Any]:
        """Write the run's :class:`FinetuneSummary` (process 0); return it as JSON."""
        summary: dict[str, Any] = {
            "status": status, "task": self.spec.name, "init": self.init_mode,
            "pretrained": self.pretrained.describe() if self.pretrained else None,
            "point": self.model_cfg.point, "model": self.model_cfg.to_dict(), "seeds": self.seeds,
            "examples": self.data.counts(), "reported_splits": self.reported,
            "steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "wall_seconds_this_session": wall, "params_total": self.param_counts.total,
            "tokenizer": {"path": self.tokenizer.path, "sha256": self.tokenizer.sha256},
            "vocab_filter": self.config.data.vocab_filter or None,
            "dropped_chars": self.dropped_chars,
            "unk": self.unk,
            "majority": majority_baseline(
                self.spec.name, self.train_arrays["labels"],
                {split: arrays["labels"] for split, arrays in self.eval_arrays.items()},
                self.regression),
        }
        if self.data.filter_report is not None:
            report = self.data.filter_report
            summary["filter"] = {"total": report.total, "kept": report.kept,
                                 "top_oov": report.oov.most_common(10)}
        if history:
            scores = np.asarray([[m["score"] for m in h["members"]] for h in history])  # [E, S]
            chosen = scores.argmax(axis=0)  # the first best epoch, as ``_evaluate`` keeps it
            epochs = [history[int(e)]["epoch"] for e in chosen]
            valid = [history[int(e)]["members"][s] for s, e in enumerate(chosen)]
            summary["validation"] = {"epochs": epochs, "members": valid, **mean_std(valid)}
            if reported is not None:
                final = reported["final"]
                summary["final"] = {"epochs": [history[-1]["epoch"]] * len(final),
                                    "members": final, **mean_std(final)}
                summary["selected"] = {"epochs": epochs, "members": reported["selected"],
                                       "selected_on": VALIDATION, **mean_std(reported["selected"])}
        record = FinetuneSummary(**summary)
        if jax.process_index() == 0:
            record.write(self.workdir)
        return record.to_json()
