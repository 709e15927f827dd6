"""The fine-tuning loop: task data -> S vmapped members on a mesh -> per-epoch evaluation on the
validation split (model selection only: history, early stopping, each member's selected epoch), the
reported splits (GLUE dev, test, holdout) scored once at the end with the final and the selected
parameters; length-bucketed batches, Orbax checkpoints with resume, JSONL/TensorBoard metrics, a run
summary. With several processes each feeds its rows of every batch, process 0's validation metrics
decide model selection everywhere, and process 0 alone writes the run's files.

A population (``Finetuner.population``): several runs that differ only in the pre-trained
checkpoint they start from (same shapes; e.g. one design's pre-training seeds) trained in one
program, checkpoints x seeds members. Each run keeps its own folder, written as a separate run
writes it (``config.json``, ``metrics.jsonl``, ``history.json``, ``predictions/``,
``summary.json``); the population's folder holds the stacked checkpoints it resumes from. A run that
stops early is frozen (its members' updates are masked) while the others go on.

The pieces, as in ``train/``: the task's batches (:mod:`.task_batches`), the compiled programs
(:mod:`.programs`, their step functions :mod:`.step`), the run folders (:mod:`.run_folder`); this
module says what a batch is, when to evaluate and what a summary holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.runs.finetuned import PARTS, drop_checkpoints, finished_summaries, save_parameters
from minilm_jax.storage import run_path
from minilm_jax.tasks.base import TaskSpec
from minilm_jax.tasks.table import cross_validated
from minilm_jax.tasks.loaders import TaskData
from minilm_jax.train import batches as batch_lib
from minilm_jax.train.distributed import from_process_0
from minilm_jax.train.mesh import check_batch_divisible, make_mesh
from minilm_jax.train.population_folders import Each, drop_garbled_lines, truncate_members
from minilm_jax.train.run_loop import LoopSpec, Window, open_run, run_loop
from minilm_jax.train.run_log import MetricsWriter, log_line
from minilm_jax.train.state import MembersState

from minilm_jax.settings.finetuning import check_batch_fits, resumable_fields
from .model_selection import VALIDATION, member_metrics, sample_std
from .programs import classifier_config, finetune_program
from .run_folder import RunFolder, check_population, lock_folders, open_folders
from .step import MEMBER_STRATEGIES
from .task_batches import (INPUTS, TaskBatches, distinct, eval_batches_of, members_by_task,
                           pooled_split, population_batch, run_tasks, task_tokenizer)


class Finetuner(LoopSpec):
    """One fine-tuning run of ``config.task`` for S seeds, from a checkpoint or from random init
    (or, given ``runs`` as (name, config, workdir), a population of such runs from checkpoints
    of one shape; ``workdir`` is then the population's own folder)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, init_mode: str,
                 runs: Sequence[tuple[str, ml_collections.ConfigDict, str | Path]] = ()):
        if init_mode not in ("pretrained", "random"):
            raise UserError(f"init mode must be 'pretrained' or 'random', not {init_mode!r}")
        self.workdir, self.init_mode = run_path(workdir), init_mode
        self.folders = open_folders(runs or [("", config, workdir)], init_mode)
        self.is_population = bool(runs)
        # cross-validation's fold runs (each its own data: one fold of one seed's partition)
        self.folds = all(cross_validated(f.config.task, f.config.data) for f in self.folders)
        if self.is_population:
            check_population(self.folders, init_mode, self.folds)
        self.config, self.pretrained = self.folders[0].config, self.folders[0].pretrained
        self.model_cfg = classifier_config(self.config, self.pretrained,
                                           self.folders[0].asked_arch)
        self.partial = bool(self.config.init.get("partial", False))
        if init_mode == "pretrained":  # the checkpoint must fit the model built (or init.partial)
            self.fresh = self.pretrained.fit(self.model_cfg, self.partial)
        self.tokenizer = task_tokenizer(self.config, self.pretrained, self.model_cfg)
        # one per run; runs of one data config share it (cross-validation folds each have theirs)
        self.tasks = run_tasks([f.config for f in self.folders], self.tokenizer)
        self.task = self.tasks[0]
        self._pools: dict[str, tuple[dict[str, np.ndarray], list[np.ndarray]]] = {}
        self._plan()
        self.program, self.initial = finetune_program(
            self.config, self.model_cfg, self.spec.num_labels, self.task.regression,
            self.member_seeds, self.mesh, self.total_steps, self._encoder_state(),
            population=self.is_population)
        # Everything is checked: only now is anything written (a rejected command leaves no trace).
        identities = [f.identity(self.init_mode, self.tokenizer.sha256, self.model_cfg, t.digest)
                      for f, t in zip(self.folders, self.tasks)]
        self.identity, self.lock = lock_folders(self.workdir, self.folders, identities,
                                                resumable_fields(self.init_mode),
                                                self.is_population)

    # ----------------------------------------------------------------------------- setup
    def _plan(self) -> None:
        """The members (every run's seeds, run by run), the mesh, the steps (per epoch, in all, the
        evaluation steps) and each member's data order."""
        config, tc = self.config, self.config.train
        self.seeds = [int(s) for s in tc.seeds]
        first = 0
        for folder in self.folders:  # members run by run, each with its seeds
            folder.seeds = [int(s) for s in folder.config.train.seeds]
            if not folder.seeds or len(set(folder.seeds)) != len(folder.seeds):
                raise UserError(f"train.seeds must be distinct and non-empty, got {folder.seeds}")
            folder.first, folder.size = first, len(folder.seeds)
            first += folder.size
        self.member_seeds = [s for folder in self.folders for s in folder.seeds]
        if tc.members not in MEMBER_STRATEGIES:
            raise UserError(f"train.members must be one of {', '.join(MEMBER_STRATEGIES)}, "
                            f"not {tc.members!r}")
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
        check_batch_divisible(tc.batch_size, self.mesh, "train.batch_size")
        check_batch_divisible(config.eval.batch_size, self.mesh, "eval.batch_size")
        check_batch_fits(tc.batch_size, [(f.name, len(t.data.train))
                                         for f, t in zip(self.folders, self.tasks)])
        # runs with data of their own (folds) differ by a few rows: the longest sets the epoch
        self.steps_per_epoch = max(t.steps_per_epoch(tc.batch_size) for t in self._distinct())
        self.total_steps = int(tc.epochs) * self.steps_per_epoch
        if self.total_steps <= 0:
            raise UserError(f"train.epochs must be positive (got {tc.epochs})")
        self.eval_steps = [e * self.steps_per_epoch
                           for e in range(1, int(tc.epochs) + 1) if e % config.eval.every_epochs == 0
                           or e == tc.epochs]
        for task, members in self._members_by_task():
            task.order([self.member_seeds[m] for m in members], tc.batch_size)

    def _encoder_state(self) -> Any:
        """The pre-trained encoder every member starts from (one per member of a population), or
        None (random init)."""
        if self.init_mode != "pretrained":
            return None
        if self.partial and not self.fresh.empty:
            log_line(f"init.partial: the model built differs from {self.pretrained.workdir}: "
                     f"{self.fresh.text(limit=8)} (what fits is loaded, the rest initialised "
                     "anew, variant fields taken as asked; recorded in summary.json)")
        fit_to = self.model_cfg if self.partial else None
        encoders = [f.pretrained.encoder_state(fit_to) for f in self.folders]
        return encoders[0] if not self.is_population else jax.tree.map(
            lambda *xs: np.stack([np.asarray(x) for f, x in zip(self.folders, xs)
                                  for _ in range(f.size)]), *encoders)

    def _distinct(self) -> list[TaskBatches]:
        return distinct(self.tasks)

    def _members_by_task(self) -> list[tuple[TaskBatches, np.ndarray]]:
        return members_by_task(self.tasks, [(f.first, f.size) for f in self.folders])

    def _task_of(self, folder: RunFolder) -> TaskBatches:
        return self.tasks[self.folders.index(folder)]

    # ----------------------------------------------------------------------------- data
    @property
    def data(self) -> TaskData:
        return self.task.data

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec

    @property
    def train_arrays(self) -> dict[str, np.ndarray]:
        return self.task.train_arrays

    @property
    def eval_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return self.task.eval_arrays

    @property
    def indexers(self) -> list[batch_lib.BatchIndexer]:
        return self.task.indexers

    def host_batch(self, step: int, steps: int) -> dict[str, np.ndarray]:
        """``[steps, S, B_host, T]``: member s sees the order of ``BatchIndexer(seed_s)``; ``T`` is
        the bucket of the longest sequence among all members' global batches of these steps."""
        return population_batch(self._distinct(), step, steps)

    # ----------------------------------------------------------------------------- evaluation
    def predict_split(self, split: str, which: str = "final",
                      arrays: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Logits ``[S, N, C]`` of every member for every example of ``split`` (of the first run's
        data, or the encoded ``arrays`` given), each once, with the current (``final``) or each
        member's ``selected`` parameters. Each process feeds its block of every batch; the logits
        come back whole (replicated) on every process."""
        if which not in ("final", "selected"):
            raise ValueError(f"which must be 'final' or 'selected', not {which!r}")
        source = self.state if which == "final" else self.state["selected"]
        outputs = []
        for placed, valid in eval_batches_of(
                self.task.eval_arrays[split] if arrays is None else arrays,
                self.config.eval.batch_size, self.program.eval_input_sharding, self.task.buckets):
            logits = self.program.predict(source["params"], source["rest"],
                                          *[placed[k] for k in INPUTS])
            outputs.append(np.asarray(logits.addressable_data(0))[:, valid])
        return np.concatenate(outputs, axis=1)

    def _patience(self) -> int:
        return int(self.config.train.early_stopping_patience)

    def _live(self) -> list[RunFolder]:
        """The runs still training (all but those early stopping froze)."""
        return [f for f in self.folders if not f.stopped(self._patience())]

    # ----------------------------------------------------------------------------- loop specialisation
    # An evaluation changes the state (each member's selected parameters) and the history, but is
    # not a save point of its own: a resumed run restores the last checkpoint's selection, drops the
    # history after its step and evaluates again (the same scores: evaluation is deterministic).

    def dispatch(self, state: MembersState, host_batch: dict[str, np.ndarray]):
        return self.program.train_step(state, batch_lib.to_global(host_batch,
                                                                  self.program.batch_shardings))

    def record_metrics(self, first: int, count: int, host: dict[str, Any]) -> None:
        self._window_examples += count * self.config.train.batch_size * len(self.seeds)

    def log_line(self, step: int, host: dict[str, Any], window: Window) -> dict[str, str]:
        losses, norms = np.asarray(host["loss"]), np.asarray(host["grad_norm"])  # [K, S]
        shown = []
        for folder in self._live():
            mine = losses[-1, folder.members]
            values = {"loss": float(mine.mean()), "loss_per_member": mine.tolist(),
                      "lr": float(np.asarray(host["lr"])[-1]),
                      "grad_norm": float(norms[-1, folder.members].mean()),
                      "epoch": step / self.steps_per_epoch}
            if window.compiled:  # the first window includes compilation: no speed figure
                values["examples_per_sec"] = self._window_examples / window.elapsed()
            self.writers[folder.name].write(step, "train", values)
            shown.append(values["loss"])
        if self.is_population and window.compiled:
            self.writer.write(step, "train", {"examples_per_sec": self._window_examples
                                              * len(self.folders) / window.elapsed(),
                                              "runs": len(self.folders)})
        shown_values = {"loss": f"{np.mean(shown):.3f}" if shown else "-"}
        if window.compiled:  # every run's examples together
            runs = len(self.folders) if self.is_population else 1
            shown_values["ex/s"] = f"{self._window_examples * runs / window.elapsed():,.0f}"
        self._window_examples = 0
        return shown_values

    def dispatch_boundaries(self) -> list[int]:
        return self.eval_steps

    def evaluation_due(self, prev: int, step: int) -> bool:
        return step in self.eval_steps

    def evaluate_at(self, step: int, state: MembersState) -> tuple[MembersState, bool]:
        self.state = state
        self._evaluate(step)
        return self.state, not self._live()

    # ----------------------------------------------------------------------------- run
    def train(self) -> dict[str, Any]:
        config, tc = self.config, self.config.train
        earlier = self._finished_earlier()
        if earlier is not None:
            return earlier
        ckpts, self.writer, start, self.state = open_run(
            self.workdir, config.checkpoint, self.starting_state(), identity=self.identity,
            resumable=resumable_fields(self.init_mode), keep_best=False)
        self.writers = {self.folders[0].name: self.writer}
        if self.is_population:
            self.writers = {f.name: MetricsWriter(f.workdir) for f in self.folders}
            truncate_members(self.writers, start)
        for folder in self.folders:
            folder.load_history(start)
        self._window_examples = 0
        t0 = time.time()
        # runs that stopped early and are started again: nothing left to train (not even the
        # steps to the next evaluation when a population's runs stopped at different ones)
        stopped = not self._live()
        writers = (Each([self.writer, *self.writers.values()]) if self.is_population
                   else self.writer)
        result = run_loop(self, self.state, start, ckpts, writers,
                          steps_per_dispatch=tc.steps_per_dispatch, log_every=tc.log_every,
                          prefetch_depth=2, progress=tc.progress,
                          desc=f"finetune {self.spec.name}", nothing_left=stopped)
        self.state, status = result.state, result.status
        # The reported splits are scored here and only here: once with the final parameters, once
        # with each member's selected ones (not for a preempted run: its resumption does it).
        reported = (self._score_reported()
                    if status != "preempted" and all(f.history for f in self.folders) else None)
        wall = time.time() - t0
        if reported is not None:  # before the summaries: a run whose summary is done kept them
            self._save_parameters()
        summaries = [self._summary(f, self._run_status(f, status), reported, wall)
                     for f in self.folders]
        writers.close()
        ckpts.close()
        if reported is not None and not config.checkpoint.keep_finished:
            self._drop_checkpoints()
        return self._result(status, summaries)

    def _result(self, status: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.is_population:
            return summaries[0]
        return {"status": status, "members": [{"name": f.name, "workdir": str(f.workdir),
                                               "status": s["status"]}
                                              for f, s in zip(self.folders, summaries)]}

    # ----------------------------------------------------------------------------- finished runs
    def _finished_earlier(self) -> dict[str, Any] | None:
        """The result of a run that finished and kept ``parameters.npz`` (nothing is trained or
        scored again); None otherwise, and always with ``checkpoint.keep_finished=True``."""
        if self.config.checkpoint.keep_finished:
            return None
        summaries = finished_summaries([f.workdir for f in self.folders])
        if summaries is None:
            return None
        self._drop_checkpoints()
        if self.is_population:  # a member's garbled lines: dropped and noted, as on resume
            drop_garbled_lines({f.name: f.workdir for f in self.folders})
        where = self.workdir if not self.is_population else f"{len(self.folders)} runs"
        log_line(f"{self.spec.name} ({self.init_mode}): finished earlier in {where}; nothing to "
                 "train (summary.json, predictions/, parameters.npz)")
        done = [s["status"] for s in summaries]
        return self._result("completed" if "completed" in done else done[0], summaries)

    def _save_parameters(self) -> None:
        """Each run's members' final and selected parameters (``parameters.npz``)."""
        save_parameters([(f.workdir, f.members) for f in self.folders],
                        {k: self.state[k] for k in PARTS}, self.state["selected"])

    def _drop_checkpoints(self) -> None:
        drop_checkpoints({self.workdir, *(f.workdir for f in self.folders)})

    def _run_status(self, folder: RunFolder, status: str) -> str:
        """A run of a population that early stopping froze ended ``early_stopped``."""
        if status == "completed" and folder.stopped(self._patience()):
            return "early_stopped"
        return status

    def _evaluate(self, step: int) -> None:
        """Score the validation split; each live run's members that beat their best validation
        score so far copy their parameters into ``state["selected"]``; a run early stopping ends
        is frozen."""
        # Process 0's metrics decide on every process (the same selection, the same early stop).
        members = from_process_0(self._member_metrics([VALIDATION])[1])
        improved = np.zeros(len(members), bool)
        for folder in self._live():
            mine = members[folder.members]
            scores = np.asarray([m["score"] for m in mine])
            improved[folder.members] = scores > folder.best_scores()
            entry = {"step": step, "epoch": step / self.steps_per_epoch, "split": VALIDATION,
                     "members": mine, "improved": improved[folder.members].tolist(),
                     "score_mean": float(scores.mean()), "score_std": sample_std(scores)}
            folder.append_history(entry)
            self.writers[folder.name].write(step, VALIDATION, {
                "score": entry["score_mean"], "score_std": entry["score_std"],
                "epoch": entry["epoch"], **{k: float(np.mean([m[k] for m in mine]))
                                            for k in mine[0]}})
            if not self.folds:
                log_line(f"{self.spec.name}{' ' + folder.name if folder.name else ''} validation "
                         f"epoch {entry['epoch']:g} (step {step}): score {entry['score_mean']:.2f}"
                         f" (sd {entry['score_std']:.2f}, {len(mine)} seeds)")
        if self.folds:  # one line for the fold runs (each has its own history.json)
            scores = [m["score"] for f in self._live() for m in members[f.members]]
            if scores:
                log_line(f"{self.spec.name} validation epoch {step / self.steps_per_epoch:g} "
                         f"(step {step}): score {np.mean(scores):.2f} (sd {sample_std(scores):.2f},"
                         f" {len(scores)} fold runs)")
        # improved: a host array, the same on every process
        self.state = self.program.select(self.state, improved)
        if self.is_population:
            active = np.zeros(len(members), bool)
            for folder in self._live():
                active[folder.members] = True
            self.state = {**self.state, "active": jax.device_put(
                active, self.program.state_sharding["active"])}

    def _member_metrics(self, splits: Sequence[str], which: str = "final"
                        ) -> tuple[dict[int, dict[str, np.ndarray]], list[dict[str, float]]]:
        """Every member's logits on ``splits`` of its own run's data (per distinct task data, by
        ``id``: ``[S, N, C]`` for all members) and every member's metrics over them."""
        by_task = self._members_by_task()
        tasks = [task for task, _ in by_task]
        logits_of: dict[int, dict[str, np.ndarray]] = {id(task): {} for task in tasks}
        for split in splits:  # every distinct row once (folds share rows), for all members
            if split not in self._pools:  # the same rows at every evaluation: pooled once
                self._pools[split] = pooled_split(tasks, split)
            pool, where = self._pools[split]
            logits = self.predict_split(split, which, pool)
            for task, rows in zip(tasks, where):
                logits_of[id(task)][split] = logits[:, rows]
        members: list[dict[str, float]] = [{}] * len(self.member_seeds)
        for task, idx in by_task:
            mine = member_metrics(self.spec.name,
                                  {k: v[idx] for k, v in logits_of[id(task)].items()},
                                  task.eval_arrays, self.task.regression)
            for m, metrics in zip(idx, mine):
                members[m] = metrics
        return logits_of, members

    def _score_reported(self) -> dict[str, list[dict[str, float]]]:
        """Members' metrics on the reported splits with the ``final`` and the ``selected``
        parameters; each run's logits go to its ``predictions/``."""
        out = {}
        for which in ("final", "selected"):
            logits_of, out[which] = self._member_metrics(self.task.reported, which)
            for folder, task in zip(self.folders, self.tasks):
                labels = {split: task.eval_arrays[split]["labels"] for split in task.reported}
                uids = {split: [e.uid for e in task.data.evals[split]] for split in task.reported}
                folder.save_predictions(logits_of[id(task)], labels, which, uids)
        return out

    def _summary(self, folder: RunFolder, status: str,
                 reported: dict[str, list[dict[str, float]]] | None, wall: float) -> dict[str, Any]:
        """Write ``folder``'s :class:`FinetuneSummary` (process 0); return it as JSON."""
        return folder.write_summary(self._task_of(folder), reported, {
            "status": status, "task": self.spec.name, "init": self.init_mode,
            "point": self.model_cfg.point, "model": self.model_cfg.to_dict(),
            "steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "wall_seconds_this_session": wall, "params_total": self.program.param_counts.total,
            "tokenizer": {"path": self.tokenizer.path, "sha256": self.tokenizer.sha256},
            "vocab_filter": self.config.data.vocab_filter or None,
            "init_partial": (self.fresh.to_json() if self.init_mode == "pretrained"
                             and self.partial and not self.fresh.empty else None)})
