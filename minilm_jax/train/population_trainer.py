"""The pre-training loop of a population: N members (:mod:`minilm_jax.train.population`) trained by
one compiled program through the shared :func:`~minilm_jax.train.run_loop.run_loop`.

The population's own workdir holds its ``config.json`` (every member's identity), the stacked
checkpoints it resumes from (so a kill or SIGTERM resumes every member at the same step, exactly),
its aggregate speed rows and its ``summary.json``. Each member's workdir is a run folder like a
separate run's: ``config.json``, ``metrics.jsonl``, ``best/``, ``snapshots/``, its final state in
``checkpoints/`` and its ``summary.json``, so fine-tuning, export, sweeps and results read it as
they read any run. A member whose loss turns non-finite keeps its last finite state, is recorded
``diverged`` and the others go on; only when every member has diverged does the run stop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from minilm_jax.data.shards import ShardSplit, open_split
from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.model.stacked import unstack_state
from minilm_jax.settings.pretraining import (RESUMABLE_FIELDS, log_eval_steps, snapshot_steps,
                                             validate_pretrain_config)
from minilm_jax.storage import make_folder, run_path
from minilm_jax.train import batches as batch_lib
from minilm_jax.data import learned
from minilm_jax.runs.running import write_run_start
from minilm_jax.train.run_loop import LoopSpec, Window, check_workdir, open_run, run_loop
from minilm_jax.train.checkpoint import Checkpoints, abstract_like
from minilm_jax.train.dispatch import TrainingDiverged
from minilm_jax.train.evaluation import eval_result, evaluation_due, split_losses
from minilm_jax.settings.mlm_cap import effective_max_predictions
from minilm_jax.train.pretrainer import (check_batch_fits, check_shards, mask_rate_record,
                                         mask_window, params_digest, passes_line, run_identity,
                                         summary_record)
from minilm_jax.train.members import members_strategy
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.population import Member, members_of, population_identity
from minilm_jax.train.program import population_program
from minilm_jax.train.population_folders import (Each, finished_earlier, refuse_lost_bests,
                                                 refuse_lost_members, truncate_members)
from minilm_jax.train.records import PopulationSummary
from minilm_jax.train.run_log import MetricsWriter, has_record, log_line
from minilm_jax.train.throughput import device_memory_stats, measured_matmul_peak

CORE = ("params", "rest", "opt_state", "step")  # a member's state, as a separate run saves it


def member_state(state: dict[str, Any], index: int) -> dict[str, Any]:
    """Member ``index``'s train state, in the layout a separate run saves."""
    return unstack_state({k: state[k] for k in CORE}, index)


class PopulationTrainer(LoopSpec):
    """Builds one population; :meth:`run` trains every member to ``train.num_steps``."""

    def __init__(self, members: Sequence[Member], workdir: str | Path, strategy: str = "auto"):
        self.members = members_of([(m.name, m.workdir, m.config) for m in members])
        self.workdir = run_path(workdir)
        configs = [m.config for m in self.members]
        self.config = configs[0]
        self.model_cfg = validate_pretrain_config(self.config)
        for c in configs[1:]:
            validate_pretrain_config(c)
        self.manifest = check_shards(self.config, self.model_cfg.vocab_size,
                                     self.model_cfg.max_len, self.model_cfg.pad_id)
        data = self.config.data
        self.train_split = open_split(data.shards, data.train_split, verify=data.verify_checksums)
        check_batch_fits(self.config, self.train_split.num_sequences)
        self.eval_split = self._optional_split(data.eval_split)
        self.test_split = self._optional_split(data.test_split)
        self.strategy = members_strategy(strategy, "population.members")
        members_axis = int(self.config.mesh.get("members", 1))
        if members_axis > 1 and jax.process_count() > 1:
            raise UserError("mesh.members > 1 needs a single process (several hosts: "
                            "mesh.members=1)")
        self.mesh = make_mesh(self.config.mesh.data, self.config.mesh.fsdp, members=members_axis)
        self.program = population_program(configs, self.mesh, self.strategy)
        self.size = len(self.members)
        self.total_steps = self.program.total_steps
        self.param_counts = self.program.state.param_counts
        self.initial = self.program.state.unbuilt()  # built when first read, if ever
        tc = self.config.train
        self.indexers = [batch_lib.BatchIndexer(int(c.seed), self.train_split.num_sequences,
                                                tc.batch_size) for c in configs]
        self.flops_paper = accounting.paper_train_flops_per_sequence(self.model_cfg)
        # each member's own: a derived mlm.max_predictions follows the member's mask_prob
        self.member_flops = [accounting.train_flops_per_sequence(
            self.model_cfg, num_predictions=effective_max_predictions(c.mlm, self.model_cfg.max_len))
            for c in configs]
        self.identities = [run_identity(c, self.manifest) for c in configs]
        # the members' shared run control first: the member list (population.members) wins
        self.identity = {k: v for k, v in self.identities[0].items() if k in RESUMABLE_FIELDS}
        self.identity.update(population_identity(
            self.members, [{k: v for k, v in ident.items() if k not in RESUMABLE_FIELDS}
                           for ident in self.identities], self.workdir))
        self.reference = learned.reference_perplexities(data.shards, data.eval_split)
        refuse_lost_members(self.workdir, self.members)
        # Everything is checked: only now is anything written.
        locks = []
        try:
            for path, ident, what in ([(self.workdir, self.identity, "a population")]
                                      + [(m.workdir, i, "a run")
                                         for m, i in zip(self.members, self.identities)]):
                make_folder(path)
                locks.append(check_workdir(path, ident, RESUMABLE_FIELDS, what))
            for member in self.members:  # readers of a member still training find its tokenizer
                write_run_start(member.workdir, self.manifest, self.model_cfg.to_dict(),
                                data.shards)
                # its history exists from the start: a member that diverges before its first
                # record is not taken for one whose history was lost
                history = run_path(member.workdir) / "metrics.jsonl"
                if jax.process_index() == 0 and not history.exists():
                    history.write_text("")
        except BaseException:
            Each(locks).release()
            raise
        self.lock = Each(locks)

    def _optional_split(self, name: str) -> ShardSplit | None:
        if name and name in self.manifest["splits"]:
            return open_split(self.config.data.shards, name,
                              verify=self.config.data.verify_checksums)
        return None

    # ----------------------------------------------------------------------------------------
    def evaluate(self, split: ShardSplit, state: dict[str, Any]) -> list[dict[str, float]]:
        """Each member's masked-LM loss and perplexity over every sequence of ``split``, with the
        ``params`` and ``rest`` of ``state`` (the members' own mask probabilities from
        ``hyper``)."""
        params, rest, mask_prob = state["params"], state["rest"], state["hyper"]["mask_prob"]
        sums, counts, n = split_losses(
            split, self.config.eval, self.model_cfg.pad_id, self.program.eval_shardings,
            lambda rows, index: self.program.eval_step(params, rest, mask_prob, rows["tokens"],
                                                       rows["segments"], rows["valid"], index))
        return [eval_result(float(s), float(c), n) for s, c in zip(sums, counts)]

    def host_batch(self, step: int, steps: int) -> dict[str, np.ndarray]:
        parts = [batch_lib.train_batch(self.train_split, ix, step, self.model_cfg.pad_id,
                                       steps=steps, micro=self.config.train.grad_accum)
                 for ix in self.indexers]
        return {k: np.stack([p[k] for p in parts]) for k in parts[0]}  # [N, K, M, b, T]

    # ------------------------------------------------------------------------- loop specialisation
    def dispatch(self, state, host_batch):
        return self.program.train_step(state,
                                       batch_lib.to_global(host_batch, self.program.batch_sharding))

    def check_losses(self, first: int, host: dict[str, Any]) -> None:
        """Record each member whose loss turned non-finite (it stops; the others go on); stop the
        run only when no member is left."""
        losses, live = np.asarray(host["loss"]), np.asarray(host["live"])  # [K, N]
        for k, i in zip(*np.nonzero(live & ~np.isfinite(losses))):
            if i not in self.diverged:
                self.diverged[int(i)] = first + int(k) + 1
                log_line(f"member {self.members[i].name} diverged at step {first + k + 1} "
                         f"(loss {losses[k, i]:g}); it keeps its state of step {first + k} and "
                         f"stops, the other members go on")
        if len(self.diverged) == self.size:
            raise TrainingDiverged(
                "every member of the population diverged ("
                + ", ".join(f"{m.name} at step {self.diverged[i]}"
                            for i, m in enumerate(self.members))
                + "); each member's summary says where; lower the learning rate or use a new "
                  "--workdir")

    def record_metrics(self, first: int, count: int, host: dict[str, Any]) -> None:
        self._window_tokens += np.sum(np.asarray(host["tokens"], np.float64), axis=0)
        self._window_steps += count
        self._window_masked += np.stack([np.sum(np.asarray(host[k], np.float64), axis=0)
                                         for k in ("predictions", "maskable")], axis=1)  # [N, 2]

    def log_line(self, step: int, host: dict[str, Any], window: Window) -> dict[str, str]:
        tc = self.config.train
        elapsed = window.elapsed()
        seqs_s = self._window_steps * tc.batch_size / elapsed  # per member
        shown = []
        for i, writer in enumerate(self.member_writers):
            if i in self.diverged:
                continue
            loss = float(np.asarray(host["loss"])[-1, i])
            values = {
                "loss": loss, "perplexity": float(np.exp(min(loss, 50.0))),
                "lr": float(np.asarray(host["lr"])[-1, i]),
                "grad_norm": float(np.asarray(host["grad_norm"])[-1, i]),
                "tokens_seen": float(step * tc.batch_size * self.model_cfg.max_len),
                "flops_paper": step * tc.batch_size * self.flops_paper,
                "flops_complete": step * tc.batch_size * self.member_flops[i],
                "host_wait_sec": window.host_wait, **mask_window(self._window_masked[i])}
            if window.compiled:  # a member's own speed: its share of the program's time
                values.update(tokens_per_sec=float(self._window_tokens[i]) / elapsed,
                              sequences_per_sec=seqs_s,
                              mfu=seqs_s * self.member_flops[i] / self._peak)
            writer.write(step, "train", values)
            shown.append(loss)
        if window.compiled:
            total = float(np.sum(self._window_tokens)) / elapsed
            self.writer.write(step, "train", {
                "tokens_per_sec": total, "sequences_per_sec": seqs_s * self.size,
                "mfu": seqs_s * sum(self.member_flops) / self._peak,
                "members": self.size, "live": self.size - len(self.diverged)})
        shown_values = {"loss": f"{np.mean(shown):.3f}" if shown else "-",
                        "live": f"{self.size - len(self.diverged)}/{self.size}"}
        if window.compiled:  # all members together
            shown_values["tok/s"] = f"{float(np.sum(self._window_tokens)) / elapsed:,.0f}"
        self._window_tokens, self._window_steps = np.zeros(self.size), 0
        self._window_masked = np.zeros((self.size, 2))
        return shown_values

    def evaluation_due(self, prev: int, step: int) -> bool:
        return self.eval_split is not None and evaluation_due(
            prev, step, self.config.eval.every_steps, self.snapshot_steps + self._log_steps)

    def evaluate_at(self, step: int, state) -> tuple[Any, bool]:
        results = self.evaluate(self.eval_split, state)
        for i, (member, result) in enumerate(zip(self.members, results)):
            if i in self.diverged:
                continue
            self.member_writers[i].write(step, "validation", result)
            if result["loss"] < self._best_loss[i]:
                self._best_loss[i] = result["loss"]
                self.member_ckpts[i].save_best(step, member_state(state, i),
                                               {**result, "step": step})
            self.member_ckpts[i].save_snapshot(step, member_state(state, i))
        live = [r["perplexity"] for i, r in enumerate(results) if i not in self.diverged]
        if live:
            log_line(f"validation step {step}: perplexity {min(live):.2f} to {max(live):.2f} "
                     f"over {len(live)} members{learned.beside(min(live), self.reference)}")
        return state, False

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        config, tc = self.config, self.config.train
        self.snapshot_steps = snapshot_steps(config)
        self.ckpts, self.writer, start, self.state = open_run(
            self.workdir, config.checkpoint, self.starting_state(), identity=self.identity,
            resumable=RESUMABLE_FIELDS, keep_best=False)
        finished = finished_earlier(self.workdir, self.members, self.total_steps,
                                    config.checkpoint.keep_best, start)
        if finished is not None:  # run again: nothing to train, nothing new to write
            log_line(f"population {self.workdir} finished earlier at step {start}: nothing to "
                     "train; its members' summaries are as they were")
            self.writer.close()
            self.ckpts.close()
            return finished
        self.member_ckpts = [
            Checkpoints(m.workdir, keep=config.checkpoint.keep, every_steps=tc.num_steps,
                        every_minutes=1e9, keep_best=config.checkpoint.keep_best,
                        snapshot_steps=self.snapshot_steps, identity=ident,
                        resumable=RESUMABLE_FIELDS)
            for m, ident in zip(self.members, self.identities)]
        self.member_writers = [MetricsWriter(m.workdir) for m in self.members]
        truncate_members({m.name: w for m, w in zip(self.members, self.member_writers)}, start)
        steps = np.asarray(jax.device_get(self.state["step"]))
        live = np.asarray(jax.device_get(self.state["live"]))
        self.diverged = {i: int(steps[i]) + 1 for i in range(self.size) if not live[i]}
        self._best_loss = [(c.best_metrics() or {}).get("loss", float("inf"))
                           for c in self.member_ckpts]
        refuse_lost_bests(self.workdir, self.members, self._best_loss,
                          config.checkpoint.keep_best, start)
        self._log_steps = log_eval_steps(config)
        self._peak = float(tc.peak_flops) or measured_matmul_peak(self.model_cfg.dtype)
        self._window_tokens, self._window_steps = np.zeros(self.size), 0
        self._window_masked = np.zeros((self.size, 2))  # each member's predicted, maskable
        log_line(passes_line(self.total_steps, tc.batch_size, self.train_split.num_sequences))
        writers = Each([self.writer, *self.member_writers])
        t0 = time.time()
        try:
            result = run_loop(self, self.state, start, self.ckpts, writers,
                              steps_per_dispatch=tc.steps_per_dispatch,
                              log_every=tc.log_every, prefetch_depth=config.data.prefetch,
                              progress=tc.progress, desc="population")
        except TrainingDiverged:  # every member diverged; the state was donated to the last step
            self._member_summaries("diverged", start, time.time() - t0, state=None)
            raise
        finally:
            writers.flush()
        self.state = result.state
        summary = self._member_summaries(result.status, result.step, time.time() - t0,
                                         self.state)
        writers.close()
        self.ckpts.close()
        for c in self.member_ckpts:
            c.close()
        return summary

    def _member_summaries(self, status: str, step: int, wall: float,
                          state: dict[str, Any] | None) -> dict[str, Any]:
        """Save each member's final ``state`` (None: not available, when every member diverged),
        write each member's summary and the population's."""
        steps = (np.asarray(jax.device_get(state["step"])) if state is not None
                 else np.asarray([self.diverged[i] - 1 for i in range(self.size)]))
        best_states = [None] * self.size
        records = []
        for i, (member, ckpts) in enumerate(zip(self.members, self.member_ckpts)):
            member_status = "diverged" if i in self.diverged else status
            record = summary_record(member_status, int(steps[i]), wall, self.model_cfg,
                                    self.param_counts, self.flops_paper, self.member_flops[i],
                                    self.manifest)
            record.diverged_at = self.diverged.get(i)
            record.population = str(self.workdir)
            if state is not None:
                mine = member_state(state, i)
                ckpts.save(int(steps[i]), mine)
                record.final_params_sha256 = params_digest(mine["params"])
                if status == "completed":
                    best = ckpts.restore_best(abstract_like(mine))
                    if best is not None:
                        best_step, best_states[i], metrics = best
                        record.best = {"step": int(best_step), "validation_loss": metrics["loss"],
                                       "validation_perplexity": metrics["perplexity"]}
            records.append(record)
        if (status == "completed" and self.config.eval.test_at_end and self.test_split is not None
                and any(b is not None for b in best_states)):
            chosen = [b if b is not None else member_state(state, i)
                      for i, b in enumerate(best_states)]  # a member without a best: not reported
            stacked = {k: jax.tree.map(lambda *xs: np.stack(xs), *[b[k] for b in chosen])
                       for k in ("params", "rest")}
            stacked = jax.device_put(stacked, {k: self.program.state.shardings[k]
                                               for k in ("params", "rest")})
            for i, test in enumerate(self.evaluate(self.test_split,
                                                   {**stacked, "hyper": state["hyper"]})):
                if best_states[i] is None:
                    continue
                best_step = records[i].best["step"]
                if not has_record(self.members[i].workdir, best_step, "test"):  # a summary rebuilt
                    self.member_writers[i].write(best_step, "test", test)
                records[i].best.update(test_loss=test["loss"], test_perplexity=test["perplexity"])
        memory = device_memory_stats()
        for writer in self.member_writers:
            writer.flush()
        for record, member in zip(records, self.members):
            record.device_memory = memory
            record.mask_rate = mask_rate_record(member.config.mlm, self.model_cfg.max_len,
                                                member.workdir / "metrics.jsonl")
            record.epochs = (record.step * self.config.train.batch_size
                             / self.train_split.num_sequences)
            line = learned.record_outcome(record, self.reference, member.config)
            if line:
                log_line(f"member {member.name}: {line}")
            if jax.process_index() == 0:
                record.write(member.workdir)
        summary = PopulationSummary(
            status=status, step=step, strategy=self.strategy, wall_seconds_this_session=wall,
            members=[{"name": m.name, "workdir": str(m.workdir), "status": r.status,
                      "step": r.step, "best": r.best, "diverged_at": r.diverged_at}
                     for m, r in zip(self.members, records)])
        if jax.process_index() == 0:
            summary.write(self.workdir)
        return summary.to_json()
