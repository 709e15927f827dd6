"""Run a sweep as one worker: pre-train every run, score it zero-shot, fine-tune it (pre-trained
and random init) on the configured tasks, keep going past failures, rebuild the results table.

Any number of workers (processes on one machine, SLURM array tasks, TPU hosts) may run one sweep
root together: each takes the next unfinished unit (a pre-training run or population, an evaluation,
a fine-tuning job or population) by claiming it (:mod:`minilm_jax.sweep.claims`), waits while the
units left are held by others or wait for a pre-training another worker runs, and ends when every
unit is settled. A unit left by a killed worker is resumed from its checkpoint by the next worker.
Folders: :mod:`minilm_jax.sweep.layout`. Re-running skips finished work and resumes interrupted
runs; a unit that failed is tried again by a worker of a later launch (the workers one launcher
starts share its launch time, ``claims.LAUNCHED_AT_ENV``: one that starts late does not retry a
unit a sibling failed). Runs pre-trained as one population (``pack=auto``) are fine-tuned as one
too: a task's pre-trained jobs of every packed run (same shapes, only the checkpoint differs)
train in one program, each job still in its own folder; a re-run whose config would change what
a workdir was trained with is refused before anything runs (:meth:`SweepRunner._refuse_changed`).
The report is built by the command (:mod:`minilm_jax.sweep.workers`), not here.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import ml_collections

import minilm_jax.held_folders as held_folders
from minilm_jax.errors import Interrupted, UserError
from minilm_jax.evals.common import from_config as evaluator_from_config
from minilm_jax.settings.finetuning import validate_finetune_config
from minilm_jax.model import accounting
from minilm_jax.settings.mlm_cap import effective_max_predictions
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.storage import RunPath
from minilm_jax.tasks.registry import task_names
from minilm_jax.train.dispatch import StopRequest, stop_signals
from minilm_jax.train.records import DONE, is_done
from minilm_jax.train.run_loop import LoopSpec

from .claims import LAUNCHED_AT_ENV, ClaimBoard, worker_id
from .evals_stage import EvaluationStage, plain_entries, twin_seed
from .layout import FinetuneJob, SweepLayout, finetune_jobs
from .population_packing import packs
from .results import write_results
from .spec import Run, expand, finetune_run_config
from .status import SweepStatus
from .unit_identity import changed_units

WAIT_SECONDS = 30.0  # a worker with nothing to claim looks again after this (or three
# heartbeats, if shorter: it must watch a claim to judge it stale), or on a change

Stage = tuple[str, RunPath, Callable[[], LoopSpec], list[RunPath]]


def plan_table(runs: list[Run], sweep: ml_collections.ConfigDict, peak_flops: float) -> str:
    """Dry-run listing: parameters, training FLOPs and an estimated time per run."""
    lines = [f"{'run':<40} {'point':<30} {'params':>11} {'FLOPs (paper)':>14} "
             f"{'FLOPs (complete)':>17} {'est. time':>10}  groups"]
    total_seconds = 0.0
    for run in runs:
        cfg = model_from_config(run.config)
        params = accounting.formula_params(cfg).total
        seqs = run.config.train.num_steps * run.config.train.batch_size
        paper = seqs * accounting.paper_train_flops_per_sequence(cfg)
        complete = seqs * accounting.train_flops_per_sequence(
            cfg, num_predictions=effective_max_predictions(run.config.mlm, cfg.max_len))
        seconds = complete / (peak_flops * sweep.assumed_mfu)
        total_seconds += seconds
        groups = ", ".join(m.group for m in run.memberships)
        lines.append(f"{run.name:<40} {run.point:<30} {params:>11,.0f} {paper:>14.3e} "
                     f"{complete:>17.3e} {seconds / 60:>9.1f}m  {groups}")
    lines.append(f"{len(runs)} runs; estimated pre-training time {total_seconds / 3600:.2f} h at "
                 f"{sweep.assumed_mfu:.0%} of the measured matmul peak ({peak_flops:.3g} FLOP/s); "
                 f"fine-tuning on {len(sweep.finetune_tasks)} task(s) x "
                 f"{2 if sweep.finetune_init == 'both' else 1} init(s) per run not included")
    return "\n".join(lines)


def stop_error(outcome: dict[str, Any]) -> Interrupted | None:
    """The one-line error that ends a sweep command stopped by a signal (exit 130 for Ctrl-C, 143
    for SIGTERM), or None when the sweep was not stopped."""
    stopped = outcome.get("interrupted")
    if not stopped:
        return None
    signal_name = stopped["signal"] or "SIGTERM"
    name = "Ctrl-C" if signal_name == "SIGINT" else signal_name
    status = 130 if signal_name == "SIGINT" else 143
    if not stopped["stage"]:  # it came while the results and report were rebuilt
        return Interrupted(
            f"sweep stopped by {name} after its last stage: every stage had finished, and the "
            "results and report were rebuilt before it stopped", exit_status=status)
    if stopped.get("started") is False:  # it came before the next stage started
        return Interrupted(
            f"sweep stopped by {name} before starting {stopped['run']} {stopped['stage']} "
            "(nothing of it ran; every stage before it is saved); results and report are "
            "incomplete: run the same command again to go on", exit_status=status)
    return Interrupted(
        f"sweep stopped by {name} at {stopped['run']} {stopped['stage']} (its step is saved); "
        "results and report are incomplete: run the same command again to resume",
        exit_status=status)


def _launched_at() -> float:
    """This worker's launch time: its launcher's (LAUNCHED_AT_ENV), else now."""
    value = os.environ.get(LAUNCHED_AT_ENV, "")
    try:
        return min(float(value), time.time()) if value else time.time()
    except ValueError:
        raise UserError(f"{LAUNCHED_AT_ENV}={value!r} is not a time in seconds") from None


def hold_root(root: RunPath) -> None:
    """Hold the sweep root (a local folder) by its identity: a write after it was moved, renamed
    or deleted is one ``error:`` line (:class:`minilm_jax.held_folders.FolderGone`), and nothing
    is written at its old path."""
    held_folders.hold(root, "sweep root")


class SweepRunner:
    """Expands a sweep and runs it under ``root`` as one worker."""

    def __init__(self, sweep: ml_collections.ConfigDict, root: str | Path):
        self.sweep = sweep
        self.layout = SweepLayout(root)
        self.root = self.layout.root
        for task in sweep.finetune_tasks:
            if task not in task_names():
                raise UserError(f"sweep finetune_tasks: unknown task {task!r}; known: "
                                f"{', '.join(task_names())}")
        self.runs = expand(sweep)
        self.packs = packs(self.runs, sweep.get("pack", "auto"))
        self._only = ""  # --only: runs outside it are not packed into a population either
        for task in sweep.finetune_tasks:  # bad fine-tuning overrides fail now, not after pre-training
            validate_finetune_config(finetune_run_config(sweep, task, Path(".")))
        self.evals = plain_entries(sweep.get("evals"))
        self._evaluators = [evaluator_from_config(name, entry)  # a bad entry fails now
                            for name, entry in sorted(self.evals.items())]
        self.status = SweepStatus(self.root)
        self.claims = ClaimBoard(self.layout.claims_dir, self.root)
        self._stop = StopRequest()
        self._finished: set[str] = set()  # workdirs seen finished (they stay so)
        self._checked: str | None = None  # the --only value check() passed with

    def _done(self, workdir: RunPath) -> bool:
        """Whether ``workdir`` holds a finished run; a finished one is not read again (each look
        is a read of its summary, a request in a ``gs://`` root)."""
        if str(workdir) in self._finished:
            return True
        if is_done(workdir):
            self._finished.add(str(workdir))
            return True
        return False

    def _attempt(self, name: str, stage: str, make: Callable[[], LoopSpec]) -> str:
        """Build the stage's run (``make``) and run it: ``done``, ``failed`` (recorded with its
        error; the sweep goes on) or ``interrupted`` (SIGTERM or Ctrl-C stopped it after saving
        a step; recorded with that step, and the sweep stops)."""
        self.status.record(name, stage, "running", worker=worker_id())
        spec = None
        try:
            spec = make()
            summary = spec.run()
            if "members" in summary:  # a population: this run is one member, others are settled
                summary = self._settle_members(name, stage, summary)
        except Interrupted:  # Ctrl-C: the run saved its step and wrote its summary
            summary = {"status": "preempted"}
        except held_folders.FolderGone:  # the root moved away: nothing is recorded at its path
            raise
        except (Exception, SystemExit) as err:  # isolate: one failing run must not stop the rest
            message = f"{type(err).__name__}: {err}"
            self.status.record(name, stage, "failed", error=message[:2000],
                               traceback=traceback.format_exc()[-4000:], worker=worker_id())
            print(f"!! {name} {stage} failed: {message.splitlines()[0][:300]}", flush=True)
            return "failed"
        if summary.get("status") in DONE:
            self.status.record(name, stage, "done", worker=worker_id())
            return "done"
        signal_name = (spec.stopped_by if spec else None) or self._stop.signal or "SIGTERM"
        self._stop.signal = self._stop.signal or signal_name
        self.status.record(name, stage, "interrupted", signal=signal_name,
                           step=spec.stopped_at if spec else None, worker=worker_id())
        return "interrupted"

    def _settle_members(self, name: str, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Record the other members of a population this run was trained in; this run's entry
        (a diverged member: raised as a failure naming the step)."""
        mine = None
        for member in summary["members"]:
            if member["status"] == "diverged":
                error = (f"TrainingDiverged: non-finite training loss at step "
                         f"{member['diverged_at']} (population member; the others went on)")
            if member["name"] == name:
                mine = member
            elif member["status"] in DONE:
                self.status.record(member["name"], stage, "done")
            elif member["status"] == "diverged":
                self.status.record(member["name"], stage, "failed", error=error)
        if mine is None:
            raise UserError(f"run {name} is not a member of the population it started")
        if mine["status"] == "diverged":
            raise UserError(f"diverged at step {mine['diverged_at']} (non-finite training loss; "
                            "the population's other members went on)")
        return mine

    def run(self, only: str = "", stage: str = "") -> dict[str, Any]:
        """Run (or skip, when finished) every unit of the selected runs (``only``: names containing
        it; ``stage``: only that stage, e.g. ``finetune:bbc_topic:random``) that no other worker
        holds, until every unit is settled, then rebuild the results table. SIGTERM or Ctrl-C stops
        this worker after the stage in progress saved its step (``interrupted`` in the outcome
        says where)."""
        self.check(only)
        self.root.mkdir(parents=True, exist_ok=True)
        hold_root(self.root)  # moved or deleted while this worker runs: it stops, in one line
        try:
            with stop_signals() as self._stop:
                selected, interrupted = self._run_stages(only, stage)
                results = write_results(self.runs, self.layout, self.sweep)
        finally:  # held while it runs only (a process may go on to other roots)
            held_folders.release(self.root)
        names = {run.name for run in selected}  # --only: judged on the runs it selected
        outcome: dict[str, Any] = {"runs": len(selected), "failures": self.status.failures(names),
                                   "results": str(results)}
        if interrupted:
            outcome["interrupted"] = {"run": interrupted[0], "stage": interrupted[1],
                                      "signal": self._stop.signal}
            if self._never_started:
                outcome["interrupted"]["started"] = False
        return outcome

    def check(self, only: str = "") -> None:
        """Refuse, before anything under the root is written, a sweep that cannot run as given:
        a zero-shot suite out of reach, or runs (those ``only`` selects) whose workdirs were
        trained with another config. Checked once per runner."""
        if self._checked == only:
            return
        for evaluator in self._evaluators:  # a suite out of reach fails before any training
            evaluator.check()
        self._refuse_changed([r for r in self.runs if not only or only in r.name])
        self._checked = only

    def stages(self, run: Run) -> Iterator[Stage]:
        """(stage, workdir, build its run, the folders it holds) of ``run``: pre-training, each
        zero-shot evaluation of the sweep's ``evals`` section, then each fine-tuning job."""
        from minilm_jax.finetune.finetuner import Finetuner
        from minilm_jax.train.pretrainer import Pretrainer

        pre_dir = self.layout.pretrain_dir(run.name)
        pack = [r for r in self.packs[run.name]
                if r is run or (self._only in r.name
                                and not self._done(self.layout.pretrain_dir(r.name)))]
        if len(pack) > 1:
            yield ("pretrain", pre_dir, lambda: self._population(pack),
                   [self.layout.pretrain_dir(r.name) for r in pack])
        else:
            yield "pretrain", pre_dir, lambda: Pretrainer(run.config, pre_dir), [pre_dir]
        for name, entry in sorted(self.evals.items()):
            folder = self.layout.evaluation_dir(run.name, name, entry)
            yield (f"evals:{name}", folder,
                   lambda name=name, entry=entry, folder=folder: EvaluationStage(
                       name, entry, pre_dir, run.config, twin_seed(run), folder),
                   [folder])
        for job in finetune_jobs(self.sweep, run, self.layout):
            together = self._finetune_pack(run, job)
            if len(together) > 1:
                yield (job.stage, job.workdir,
                       lambda stage=job.stage, together=together: self._finetune_population(
                           stage, together), [j.workdir for _, j in together])
            else:
                yield (job.stage, job.workdir,
                       lambda job=job: Finetuner(job.config, job.workdir, job.init), [job.workdir])

    def _finetune_pack(self, run: Run, job: FinetuneJob) -> list[tuple[str, FinetuneJob]]:
        """(run name, job) of every run packed with ``run`` whose pre-training finished and whose
        matching pre-trained job (same task, same snapshot) has not: fine-tuned together."""
        together = [(run.name, job)]
        if job.init != "pretrained":  # random-init twins are shared by a design's runs
            return together
        for other in self.packs[run.name]:
            if (other.name == run.name or self._only not in other.name
                    or not self._done(self.layout.pretrain_dir(other.name))):
                continue
            for theirs in finetune_jobs(self.sweep, other, self.layout):
                if (theirs.task, theirs.label) == (job.task, job.label) and not self._done(
                        theirs.workdir):
                    together.append((other.name, theirs))
        return together

    def _finetune_population(self, stage: str, together: list[tuple[str, FinetuneJob]]
                             ) -> LoopSpec:
        """The population that fine-tunes the jobs of ``together`` in one program."""
        from minilm_jax.finetune.finetuner import Finetuner

        print(f"   fine-tuning {len(together)} runs' checkpoints as one population: "
              f"{', '.join(n for n, _ in together)}", flush=True)
        job = together[0][1]
        return Finetuner(job.config,
                         self.layout.population_dir([f"{n}/{stage}" for n, _ in together]),
                         job.init, [(n, j.config, j.workdir) for n, j in together])

    def _population(self, pack: list[Run]) -> LoopSpec:
        """The population that pre-trains the unfinished runs of ``pack`` together."""
        from minilm_jax.train.population import members_of
        from minilm_jax.train.population_trainer import PopulationTrainer

        names = [r.name for r in pack]
        print(f"   pre-training {len(pack)} runs as one population: {', '.join(names)}",
              flush=True)
        members = members_of([(r.name, self.layout.pretrain_dir(r.name), r.config)
                              for r in pack])
        return PopulationTrainer(members, self.layout.population_dir(names))

    def _failed_since(self, run: str, stage: str, started: float) -> bool:
        """Whether ``stage`` of ``run`` failed after this worker's launch (not tried again now)."""
        entry = self.status.entry(run, stage)
        return entry.get("state") == "failed" and float(entry.get("time", 0)) >= started

    def _run_stages(self, only: str, only_stage: str = ""
                    ) -> tuple[list[Run], tuple[str, str] | None]:
        """Take and run the selected runs' unfinished units in order, until every one is settled
        or this worker is stopped: (the selected runs, (run, stage) where a signal stopped it, or
        None)."""
        selected = [r for r in self.runs if not only or only in r.name]
        self._only, self._never_started = only, False
        started, interrupted, seen = _launched_at(), None, set()
        while interrupted is None:
            waiting = False  # a unit held by another worker, or waiting for its pre-training
            looked = self.claims.snapshot([self.layout.status_dir])  # what this pass saw
            for i, run in enumerate(selected, 1):
                worked = False
                for stage, workdir, make, holds in self.stages(run):
                    if only_stage and stage != only_stage and stage != "pretrain":
                        continue
                    label = "pre-training" if stage == "pretrain" else stage.split(":", 1)[1]
                    if self._done(workdir):
                        if (run.name, stage) not in seen and (stage != "pretrain" or
                                                              not only_stage):
                            print(f"   {label.replace(':', ' ', 1)}: finished earlier: skipped"
                                  if stage != "pretrain" else
                                  f"== [{i}/{len(selected)}] {run.name}: pre-training finished "
                                  "earlier: skipped", flush=True)
                        seen.add((run.name, stage))
                        continue
                    if stage == "pretrain" and only_stage not in ("", "pretrain"):
                        break  # --stage runs one stage of runs whose pre-training finished
                    if stage != "pretrain" and not self._done(self.layout.pretrain_dir(run.name)):
                        waiting |= not self._failed_since(run.name, "pretrain", started)
                        break  # not fine-tuned before its pre-training finishes (or at all)
                    if self._failed_since(run.name, stage, started):
                        continue
                    if self._stop.signal:  # arrived between stages: start nothing more (the
                        # stage never ran: its state stays what it was, e.g. pending)
                        self._never_started = True
                        interrupted = (run.name, stage)
                        break
                    claim = self.claims.try_claim(holds, stage)
                    if claim is None:
                        waiting = True
                        continue
                    with claim:
                        # finished, or failed, while we looked (another worker released it)
                        if self._done(workdir) or self._failed_since(run.name, stage, started):
                            continue
                        print(f"== [{i}/{len(selected)}] {run.name} ({run.point})" if stage ==
                              "pretrain" else f"== {run.name} {label.replace(':', ': ', 1)} -> "
                              f"{workdir}", flush=True)
                        worked = True
                        state = self._attempt(run.name, stage, make)
                    if state == "interrupted":
                        interrupted = (run.name, stage)
                        break
                    if stage == "pretrain" and state != "done":
                        break  # a run whose pre-training failed is not fine-tuned
                if worked:
                    write_results(self.runs, self.layout, self.sweep)
                if interrupted:
                    break
            if interrupted is None and not waiting:
                break
            if interrupted is None:
                self.claims.wait_for_change(min(WAIT_SECONDS, 3 * self.claims.heartbeat),
                                            [self.layout.status_dir], since=looked)
        if self._stop.signal and not interrupted:  # after the last stage's run loop
            interrupted = (selected[-1].name if selected else "", "after its last stage")
        self.settle(selected)
        return selected, interrupted

    def settle(self, runs: list[Run]) -> None:
        """Record ``done`` for every stage of ``runs`` whose workdir holds a finished run but whose
        record says otherwise (a random twin one run failed and another finished, a stage that
        finished in an earlier sweep, a kill between the summary and the record)."""
        recorded = self.status.read()
        for run in runs:
            for stage, workdir, _, _ in self.stages(run):
                entry = recorded.get(run.name, {}).get(stage)
                if entry and entry.get("state") != "done" and self._done(workdir):
                    self.status.record(run.name, stage, "done")

    def _refuse_changed(self, runs: list[Run]) -> None:
        """Refuse, before anything runs, a sweep whose runs would differ from what their workdirs
        were trained with (the sweep config or an input changed since): results are never
        silently mixed."""
        changed = changed_units(runs, self.sweep, self.layout)
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise UserError(f"sweep root {self.root} holds runs trained with a different config "
                            f"or inputs: {', '.join(changed[:3])}{more}; use a new --root, or "
                            "delete those folders to re-run them")
