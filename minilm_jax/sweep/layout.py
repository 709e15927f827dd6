"""The sweep's folder layout, its one owner: every module that writes or reads a sweep root asks
:class:`SweepLayout` (and :func:`finetune_jobs` for the fine-tuning runs, whose configs
:func:`~minilm_jax.sweep.spec.finetune_run_config` builds) where things are.

    <root>/
      sweep.json                         the sweep config the root was started with
      status/<digest>.json               each stage's state (minilm_jax.sweep.status)
      claims/<digest>.json               which worker holds which unit (minilm_jax.sweep.claims)
      results.jsonl  report/             the results table and the report
      study_b/                           study B's report (a study_b sweep)
      runs/<run>/pretrain/               a pre-training workdir
      runs/<run>/evals/<name>-<hash>/    a zero-shot evaluation of its checkpoints
      runs/<run>/finetune/<task>/        fine-tuning: the task folder itself (one init), or
          {pretrained,random}/           ... one folder per init (finetune_init=both), or
          pretrained@<fraction>/         ... one per snapshot (finetune_checkpoints)
      random/<point>__<hash>/<task>/     with snapshots: one random-init twin per architecture and
                                         fine-tuning recipe, shared by the runs of that architecture
      populations/<digest>/              stacked checkpoints of runs trained as one population
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

import ml_collections

from minilm_jax.settings.model_fields import take_checkpoint_arch
from minilm_jax.settings.command_line import flatten
from minilm_jax.settings.pretraining import snapshot_steps
from minilm_jax.storage import RunPath, run_path

from .spec import Run, finetune_run_config
from .status import STATUS_DIR

INITS = ("pretrained", "random")


@dataclasses.dataclass(frozen=True)
class SweepLayout:
    """Where everything of the sweep rooted at ``root`` (a folder or a ``gs://`` location) lives."""

    root: RunPath

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", run_path(str(self.root)))

    @property
    def config_path(self) -> RunPath:
        return self.root / "sweep.json"

    @property
    def status_dir(self) -> RunPath:
        return self.root / STATUS_DIR

    @property
    def claims_dir(self) -> RunPath:
        return self.root / "claims"

    @property
    def results_path(self) -> RunPath:
        return self.root / "results.jsonl"

    @property
    def report_dir(self) -> RunPath:
        return self.root / "report"

    @property
    def study_b_report_dir(self) -> RunPath:
        """Study B's own report (python -m minilm_jax.report.study_b)."""
        return self.root / "study_b"

    def run_dir(self, run: str) -> RunPath:
        return self.root / "runs" / run

    def pretrain_dir(self, run: str) -> RunPath:
        return self.run_dir(run) / "pretrain"

    def evaluation_dir(self, run: str, name: str, entry: Mapping[str, Any]) -> RunPath:
        """Where evaluator ``name`` with config ``entry`` writes ``run``'s rows: named by a hash of
        the entry and of the pre-training it scores (the final parameters' digest in its summary),
        so a re-trained run or a changed entry is scored afresh, never mixed with older rows."""
        try:
            trained = json.loads((self.pretrain_dir(run) / "summary.json").read_text()).get(
                "final_params_sha256", "")
        except (OSError, ValueError):
            trained = ""
        digest = hashlib.sha256(json.dumps([dict(entry), trained], sort_keys=True,
                                           default=list).encode())
        return self.run_dir(run) / "evals" / f"{name}-{digest.hexdigest()[:10]}"

    def finetune_dir(self, run: str, task: str, init: str, fraction: float | None,
                     both_inits: bool) -> RunPath:
        """A pre-trained (or, without snapshots, random-init) fine-tuning run of ``run``."""
        task_dir = self.run_dir(run) / "finetune" / task
        if init == "pretrained" and fraction is not None:
            return task_dir / f"pretrained@{float(fraction):g}"
        return task_dir / init if both_inits else task_dir

    def twin_dir(self, key: str, task: str) -> RunPath:
        """The random-init twin of the architecture and recipe ``key`` (:func:`twin_key`)."""
        return self.root / "random" / key / task

    def population_dir(self, names: Sequence[str]) -> RunPath:
        """The folder of the population of runs (or jobs) ``names``: their stacked checkpoints."""
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
        return self.root / "populations" / digest


@dataclasses.dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning sub-run of a sweep run: one task, one init, one checkpoint."""

    task: str
    init: str  # pretrained | random
    workdir: RunPath
    config: ml_collections.ConfigDict
    fraction: float | None = None  # pre-trained from the snapshot at this fraction of pre-training

    @property
    def label(self) -> str:
        if self.init == "random":
            return "random"
        return "pretrained" if self.fraction is None else f"pretrained@{self.fraction:g}"

    @property
    def stage(self) -> str:
        """The job's stage name in ``status.json``."""
        return f"finetune:{self.task}:{self.label}"


def twin_key(run: Run, config: ml_collections.ConfigDict) -> str:
    """Identity of a random-init twin: the architecture and the fine-tuning recipe (seeds included),
    not the checkpoint (nor how the run is launched or executed: ``distributed.*``,
    ``train.members``), so runs of one architecture share one twin."""
    flat = {k: v for k, v in flatten(config).items()
            if not k.startswith(("init.", "distributed.")) and k != "train.members"}
    flat["model"] = {k: v for k, v in flatten(run.config.model).items()}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{run.point}__{digest}"


def finetune_jobs(sweep: ml_collections.ConfigDict, run: Run, root: RunPath | SweepLayout
                  ) -> list[FinetuneJob]:
    """The fine-tuning sub-runs of ``run``, each with its folder (see the module docstring)."""
    layout = root if isinstance(root, SweepLayout) else SweepLayout(root)
    pre_dir = layout.pretrain_dir(run.name)
    inits = INITS if sweep.finetune_init == "both" else (sweep.finetune_init,)

    def job_config(task: str, init: str) -> ml_collections.ConfigDict:
        config = finetune_run_config(sweep, task, pre_dir)
        config.init.mode = init
        take_checkpoint_arch(config, run.config.model.arch)
        return config

    jobs = []
    for task in sweep.finetune_tasks:
        if "pretrained" in inits:
            for fraction in tuple(sweep.finetune_checkpoints) or (None,):
                config = job_config(task, "pretrained")
                if fraction is not None:
                    fraction = float(fraction)
                    step = max(1, round(fraction * int(run.config.train.num_steps)))
                    assert step in snapshot_steps(run.config), (step, run.name)
                    config.init.which = f"step:{step}"
                jobs.append(FinetuneJob(task, "pretrained", layout.finetune_dir(
                    run.name, task, "pretrained", fraction, len(inits) > 1), config, fraction))
        if "random" in inits:
            config = job_config(task, "random")
            workdir = (layout.twin_dir(twin_key(run, config), task) if sweep.finetune_checkpoints
                       else layout.finetune_dir(run.name, task, "random", None, len(inits) > 1))
            jobs.append(FinetuneJob(task, "random", workdir, config))
    return jobs
