"""The pre-training loop: shards -> sharded jitted steps -> metrics, evaluation, checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from minilm_jax.model import accounting
import minilm_jax.run_identity as identity
from minilm_jax.model.code_identity import arch_code
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.sizes import SPARE_VOCAB_ROWS
from minilm_jax.data.shards import (ShardError, ShardSplit, open_split, read_manifest,
                                     recorded_special_ids)
from minilm_jax.errors import UserError
from minilm_jax.settings.command_line import flatten
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.settings.pretraining import (RESUMABLE_FIELDS, log_eval_steps, snapshot_steps,
                                             validate_pretrain_config)
from minilm_jax.settings.allowed import batch_over_data
from minilm_jax.settings.mlm_cap import effective_max_predictions
from minilm_jax.runs.running import write_run_start
from minilm_jax.storage import RunPath, make_folder, run_path
from minilm_jax.train import batches as batch_lib
from minilm_jax.data import learned
from minilm_jax.train.run_loop import LoopSpec, Window, check_workdir, open_run, run_loop
from minilm_jax.train.checkpoint import Checkpoints, abstract_like
from minilm_jax.train.distributed import from_process_0, gathered
from minilm_jax.train.dispatch import TrainingDiverged  # noqa: F401 (re-exported for callers)
from minilm_jax.train.evaluation import EvaluationHook, ShardPerplexity, evaluation_due
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.run_log import MetricsWriter, has_record, log_line, read_metrics
from minilm_jax.train.records import PretrainSummary
from minilm_jax.train.program import pretrain_program
from minilm_jax.train.state import TrainState
from minilm_jax.train.throughput import device_memory_stats, measured_matmul_peak


def params_digest(params) -> str:
    """sha256 over every parameter's bytes, in tree order (exact-reproducibility checks)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(gathered(params))):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def check_shards(config: ml_collections.ConfigDict, model_vocab: int, model_max_len: int,
                 pad_id: int) -> dict[str, Any]:
    """The shard manifest, after checking it fits the config (sequence length, tokenizer, pad id)."""
    if not config.data.shards:
        raise UserError("config.data.shards is empty: pass --config.data.shards=DIR (a token-shard "
                        "directory built by `python -m minilm_jax.corpus shards`)")
    manifest = read_manifest(config.data.shards)
    if manifest["seq_len"] != model_max_len:
        raise ShardError(f"shards in {config.data.shards} have seq_len {manifest['seq_len']}, but "
                         f"model.max_len is {model_max_len}")
    tok_vocab = int(manifest["tokenizer"]["vocab_size"])
    if tok_vocab > model_vocab:
        raise ShardError(f"shards were made with a tokenizer of {tok_vocab} tokens, more than "
                         f"model.vocab_size={model_vocab}")
    unused = model_vocab - tok_vocab
    if unused > SPARE_VOCAB_ROWS and not config.data.get("allow_vocab_mismatch", False):
        raise ShardError(
            f"model.vocab_size={model_vocab} but the shards' tokenizer has {tok_vocab} tokens: "
            f"{unused:,} embedding rows would never be used and would still count in parameters, "
            f"FLOPs and scaling fits; pass --config.model.vocab_size={tok_vocab + SPARE_VOCAB_ROWS} "
            f"(the tokenizer + {SPARE_VOCAB_ROWS} spare rows), or "
            "--config.data.allow_vocab_mismatch=True if this is intended")
    if manifest["pad_id"] != pad_id:
        raise ShardError(f"shards use pad id {manifest['pad_id']}, model.pad_id is {pad_id}")
    check_special_ids(config.mlm, recorded_special_ids(manifest))
    expected = config.data.get("tokenizer_sha256", "")
    if expected and manifest["tokenizer"]["sha256"] != expected:
        raise ShardError(f"shards were made with tokenizer {manifest['tokenizer']['sha256'][:12]}, "
                         f"the config expects {expected[:12]}")
    if config.data.train_split not in manifest["splits"]:
        raise ShardError(f"no '{config.data.train_split}' split in {config.data.shards} "
                         f"(has {sorted(manifest['splits'])})")
    return manifest


def check_special_ids(mlm: ml_collections.ConfigDict, specials: dict[str, int]) -> None:
    """The masking recipe names the shards' tokenizer's own special tokens (the recipe's ids are
    RoBERTa's, 0-4; a BERT vocab.txt puts [CLS] [SEP] [UNK] [MASK] at 101, 102, 100, 103): the
    mask token is its mask, and its <s>, </s> and <unk> are never selected for prediction."""
    if "mask" in specials and int(mlm.mask_id) != specials["mask"]:
        raise ShardError(f"the shards' tokenizer has its mask token at id {specials['mask']}, "
                         f"mlm.mask_id is {mlm.mask_id}: pass --config.mlm.mask_id="
                         f"{specials['mask']}")
    never = {int(i) for i in mlm.never_mask_ids}
    named = {specials[k] for k in ("bos", "eos", "unk") if specials.get(k) is not None}
    if named - never:
        ids = ",".join(str(i) for i in sorted(never | named))
        raise ShardError(f"special tokens {sorted(named - never)} of the shards' tokenizer "
                         f"(<s>, </s>, <unk>: {sorted(named)}) are not in mlm.never_mask_ids "
                         f"{tuple(sorted(never))}: they would be predicted; pass "
                         f"--config.mlm.never_mask_ids={ids}")


def run_identity(config: ml_collections.ConfigDict, manifest: dict) -> dict[str, Any]:
    """What a pre-training run is (recorded in ``config.json`` and sealed into every checkpoint;
    :mod:`minilm_jax.run_identity`): its flattened config, the tokenizer and the bytes of the
    token shards it reads, the code of a user's encoder, the library version."""
    current = {k: v for k, v in flatten(config).items()
               if k != "evals" and not k.startswith("evals.")}  # evaluations: run control
    current["data.tokenizer_sha256_seen"] = manifest["tokenizer"]["sha256"]
    current["inputs.shards"] = identity.shards_digest(manifest)
    current[identity.LIBRARY_VERSION] = identity.library_version()
    code = arch_code(config.model.arch, model_from_config(config))  # a user's encoder's source
    if code:
        current[identity.MODEL_CODE] = code
    return current


def summary_record(status: str, step: int, wall: float, model_cfg: ModelConfig,
                   param_counts: accounting.ParamCounts, flops_paper: float,
                   flops_complete: float, manifest: dict[str, Any]) -> PretrainSummary:
    """A run's :class:`PretrainSummary` without its best, test and digest fields (the caller's)."""
    return PretrainSummary(
        status=status, step=step, wall_seconds_this_session=wall,
        point=model_cfg.point, model=model_cfg.to_dict(),
        params=dataclasses.asdict(param_counts),
        flops_per_sequence={"paper": flops_paper, "complete": flops_complete},
        versions={"python": platform.python_version(), "jax": jax.__version__,
                  "flax": __import__("flax").__version__,
                  "optax": __import__("optax").__version__,
                  "orbax": __import__("orbax.checkpoint").checkpoint.__version__},
        devices=[str(d) for d in jax.devices()][:8], num_devices=jax.device_count(),
        shards=manifest["tokenizer"], counts_source=accounting.counts_source(model_cfg))


def mask_rate_record(mlm: Any, max_len: int, history: RunPath) -> dict[str, Any]:
    """The asked ``mlm.mask_prob`` beside the realised rate: predicted / maskable positions summed
    over the training rows of ``history`` (a run's ``metrics.jsonl``, read by process 0; every
    process gets its sums), with the per-sequence cap used and whether it was derived."""
    sums = [0.0, 0.0]
    if jax.process_index() == 0 and history.exists():
        for row in read_metrics(history):
            if row.get("split") == "train" and "maskable" in row:
                sums[0] += float(row["predictions"])
                sums[1] += float(row["maskable"])
    predictions, maskable = from_process_0(sums)
    return {"asked": float(mlm.mask_prob), "realised": predictions / maskable if maskable else None,
            "predictions": predictions, "maskable": maskable,
            "max_predictions": effective_max_predictions(mlm, max_len),
            "derived": int(mlm.max_predictions) == 0}


def check_batch_fits(config: ml_collections.ConfigDict, sequences: int) -> None:
    """Refuse a ``train.batch_size`` over the ``sequences`` of the shards' train split."""
    problem = batch_over_data(config.train.batch_size, sequences,
                              f"sequences of the '{config.data.train_split}' split of "
                              f"{config.data.shards}")
    if problem:
        raise ConfigError(problem)


def mask_window(sums: np.ndarray) -> dict[str, float]:
    """A training row's predicted and maskable positions (summed since the previous row) and
    their ratio, the realised mask rate."""
    predictions, maskable = (float(v) for v in sums)
    return {"predictions": predictions, "maskable": maskable,
            **({"mask_rate": predictions / maskable} if maskable else {})}


def passes_line(steps: int, batch_size: int, sequences: int) -> str:
    """What a run's steps read of its train split, said before its first step."""
    passes = steps * batch_size / sequences
    return (f"data: {steps:,} steps x {batch_size:,} sequences = {passes:.3g} passes over the "
            f"{sequences:,} training sequences" + (" (each pass in a new order)" if passes > 1
                                                   else ""))


class Pretrainer(LoopSpec):
    """Builds everything for one run; :meth:`run` trains to ``train.num_steps`` (the shared
    :func:`~minilm_jax.train.run_loop.run_loop`, specialised by the methods below)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path,
                 evaluations: Sequence[EvaluationHook] = ()):
        self.config = config
        self.workdir = run_path(workdir)
        self.model_cfg = validate_pretrain_config(config)  # every field's range, first
        self.evaluations = list(evaluations)  # zero-shot, at snapshots / the end / every N steps
        self.manifest = check_shards(config, self.model_cfg.vocab_size, self.model_cfg.max_len,
                                     self.model_cfg.pad_id)
        self.train_split = open_split(config.data.shards, config.data.train_split,
                                      verify=config.data.verify_checksums)
        check_batch_fits(config, self.train_split.num_sequences)
        self.eval_split = self._optional_split(config.data.eval_split)
        self.test_split = self._optional_split(config.data.test_split)

        tc = config.train
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
        self.program = pretrain_program(config, self.mesh, self.model_cfg)
        self.total_steps = self.program.total_steps
        self.graphdef = self.program.state.graphdef
        self.param_counts = self.program.state.param_counts
        self.initial = self.program.state.unbuilt()  # built when first read, if ever
        self.indexer = batch_lib.BatchIndexer(config.seed, self.train_split.num_sequences,
                                              tc.batch_size)
        self.flops_paper = accounting.paper_train_flops_per_sequence(self.model_cfg)
        self.flops_complete = accounting.train_flops_per_sequence(
            self.model_cfg,
            num_predictions=effective_max_predictions(config.mlm, self.model_cfg.max_len))
        # Everything is checked: only now is anything written (a rejected command leaves no trace).
        self.identity = run_identity(config, self.manifest)
        make_folder(self.workdir)
        self.reference = learned.reference_perplexities(config.data.shards,
                                                        config.data.eval_split)
        self.resumable = RESUMABLE_FIELDS
        self.lock = check_workdir(self.workdir, self.identity, self.resumable)
        try:  # before the first step: readers of the running run find its tokenizer there
            write_run_start(self.workdir, self.manifest, self.model_cfg.to_dict(),
                            config.data.shards)
        except BaseException:
            self.lock.release()
            raise

    def _optional_split(self, name: str) -> ShardSplit | None:
        if name and name in self.manifest["splits"]:
            return open_split(self.config.data.shards, name, verify=self.config.data.verify_checksums)
        return None

    # ----------------------------------------------------------------------------------------
    def evaluate(self, split: ShardSplit, params=None, rest=None) -> dict[str, float]:
        """Masked-LM loss and perplexity over every sequence of ``split`` exactly once: the
        engine's own evaluation, of the same shape as every other
        (:class:`~minilm_jax.train.evaluation.ShardPerplexity`)."""
        params = self.state["params"] if params is None else params
        rest = self.state["rest"] if rest is None else rest
        perplexity = ShardPerplexity(split, self.config.eval, self.model_cfg.pad_id,
                                     self.program.eval_step, self.program.eval_shardings)
        return perplexity(0, self.graphdef, params, rest)

    def host_batch(self, step: int, steps: int) -> dict[str, np.ndarray]:
        return batch_lib.train_batch(self.train_split, self.indexer, step, self.model_cfg.pad_id,
                                     steps=steps, micro=self.config.train.grad_accum)

    # ------------------------------------------------------------------------- loop specialisation
    def dispatch(self, state: TrainState, host_batch: dict[str, np.ndarray]):
        return self.program.train_step(state,
                                       batch_lib.to_global(host_batch, self.program.batch_sharding))

    def record_metrics(self, first: int, count: int, host: dict[str, Any]) -> None:
        self._window_tokens += float(np.sum(host["tokens"]))
        self._window_seqs += count * self.config.train.batch_size
        self._window_masked += np.asarray([np.sum(host["predictions"], dtype=np.float64),
                                           np.sum(host["maskable"], dtype=np.float64)])

    def log_line(self, step: int, host: dict[str, Any], window: Window) -> dict[str, str]:
        tc, loss = self.config.train, float(np.asarray(host["loss"])[-1])
        seqs_s = self._window_seqs / window.elapsed()
        values = {
            "loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "lr": float(np.asarray(host["lr"])[-1]),
            "grad_norm": float(np.asarray(host["grad_norm"])[-1]),
            "tokens_seen": float(step * tc.batch_size * self.model_cfg.max_len),
            "flops_paper": step * tc.batch_size * self.flops_paper,
            "flops_complete": step * tc.batch_size * self.flops_complete,
            "host_wait_sec": window.host_wait,
            **mask_window(self._window_masked),
        }
        if window.compiled:  # the first window includes compilation: no speed figures
            values.update(tokens_per_sec=self._window_tokens / window.elapsed(),
                          sequences_per_sec=seqs_s, mfu=seqs_s * self.flops_complete / self._peak)
        self.writer.write(step, "train", values)
        self._window_tokens, self._window_seqs = 0.0, 0
        self._window_masked = np.zeros(2)
        shown = {"loss": f"{loss:.3f}", "lr": f"{values['lr']:.2e}"}
        if "tokens_per_sec" in values:
            shown["tok/s"] = f"{values['tokens_per_sec']:,.0f}"
        return shown

    def evaluation_due(self, prev: int, step: int) -> bool:
        return self.eval_split is not None and evaluation_due(
            prev, step, self.config.eval.every_steps, self.ckpts.snapshot_steps + self._log_steps)

    def evaluate_at(self, step: int, state: TrainState) -> tuple[TrainState, bool]:
        result = self.evaluate(self.eval_split, state["params"], state["rest"])
        self.writer.write(step, "validation", result)
        log_line(f"validation step {step}: loss {result['loss']:.4f} perplexity "
                 f"{result['perplexity']:.2f}{learned.beside(result['perplexity'], self.reference)}")
        if result["loss"] < self._best_loss:
            self._best_loss = result["loss"]
            self.ckpts.hold_best(step, state, {**result, "step": step})
        self.ckpts.save_snapshot(step, state)
        if self.evaluations and self._zero_shot_due(step):
            scalars: dict[str, float] = {}
            for evaluation in self.evaluations:
                scalars.update(evaluation(step, self.graphdef, state["params"], state["rest"],
                                          result["perplexity"]))
            self.writer.write(step, "zero_shot", scalars)
            log_line(f"zero-shot step {step}: " + ", ".join(f"{k} {v:.1f}%"
                                                            for k, v in scalars.items()))
        return state, False

    def _zero_shot_due(self, step: int) -> bool:
        every = int(self.config.eval.zero_shot_every)
        return (step in self.ckpts.snapshot_steps or step == self.total_steps
                or (every > 0 and step % every == 0))

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        config, tc = self.config, self.config.train
        self.ckpts, self.writer, start, self.state = open_run(
            self.workdir, config.checkpoint, self.starting_state(), identity=self.identity,
            resumable=self.resumable, keep_best=config.checkpoint.keep_best,
            snapshot_steps=snapshot_steps(config))
        self._log_steps = log_eval_steps(config)
        self._best_loss = (self.ckpts.best_metrics() or {}).get("loss", float("inf"))
        self._peak = float(tc.peak_flops) or measured_matmul_peak(self.model_cfg.dtype)
        self._window_tokens, self._window_seqs = 0.0, 0
        self._window_masked = np.zeros(2)  # predicted and maskable positions since the last row
        log_line(passes_line(self.total_steps, tc.batch_size, self.train_split.num_sequences))
        t0 = time.time()
        result = run_loop(self, self.state, start, self.ckpts, self.writer,
                          steps_per_dispatch=tc.steps_per_dispatch, log_every=tc.log_every,
                          prefetch_depth=config.data.prefetch, progress=tc.progress,
                          desc="pretrain")
        self.state = result.state
        summary = self._summary(result.status, result.step, time.time() - t0, self.ckpts,
                                self.writer)
        self.writer.close()
        self.ckpts.close()
        return summary

    def _summary(self, status: str, step: int, wall: float, ckpts: Checkpoints,
                 writer: MetricsWriter) -> dict[str, Any]:
        """Write the run's :class:`PretrainSummary` (process 0); return it as JSON."""
        record = summary_record(status, step, wall, self.model_cfg, self.param_counts,
                                self.flops_paper, self.flops_complete, self.manifest)
        best = ckpts.restore_best(abstract_like(self.state)) if status == "completed" else None
        if best is not None:
            best_step, best_state, best_metrics = best
            record.best = {"step": int(best_step), "validation_loss": best_metrics["loss"],
                           "validation_perplexity": best_metrics["perplexity"]}
            if self.config.eval.test_at_end and self.test_split is not None:
                test = self.evaluate(self.test_split, best_state["params"], best_state["rest"])
                if not has_record(self.workdir, int(best_step), "test"):  # a finished run again
                    writer.write(int(best_step), "test", test)
                record.best.update(test_loss=test["loss"], test_perplexity=test["perplexity"])
        record.final_params_sha256 = params_digest(self.state["params"])
        record.device_memory = device_memory_stats()
        writer.flush()
        record.mask_rate = mask_rate_record(self.config.mlm, self.model_cfg.max_len,
                                            self.workdir / "metrics.jsonl")
        record.epochs = step * self.config.train.batch_size / self.train_split.num_sequences
        line = learned.record_outcome(record, self.reference, self.config)
        if line:
            log_line(line)
        if jax.process_index() == 0:
            record.write(self.workdir)
        return record.to_json()
