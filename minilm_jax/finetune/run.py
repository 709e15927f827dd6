"""Run one fine-tuning config: one init, or both inits side by side. The results table over the
runs (:mod:`minilm_jax.analysis.finetune_tables`, a study) is the command's to write
(:mod:`minilm_jax.finetune.__main__`), once no init was preempted.

One labelled file with ``data.cv_folds`` > 0 (:func:`~minilm_jax.tasks.table.cross_validated`) is
cross-validated: per init, a run per fine-tuning seed and fold (``s<seed>-fold<k>``: that seed's
own partition, stratified by class (a regression file's: a seeded shuffle), fold k held out), all
trained as one population in one program."""

from __future__ import annotations

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath, run_path
from minilm_jax.tasks.table import cross_validated

from minilm_jax.settings.finetuning import validate_finetune_config
from .finetuner import Finetuner


def fold_runs(config: ml_collections.ConfigDict, workdir: RunPath
              ) -> list[tuple[str, ml_collections.ConfigDict, RunPath]]:
    """``(name, config, folder)`` of every fold run of a cross-validated ``config``: seed by seed,
    fold by fold."""
    runs = []
    for seed in config.train.seeds:
        for fold in range(int(config.data.cv_folds)):
            run = ml_collections.ConfigDict(config.to_dict())
            run.train.seeds = (int(seed),)
            run.data.cv_fold, run.data.cv_seed = fold, int(seed)
            name = f"s{int(seed)}-fold{fold}"
            runs.append((name, run, workdir / name))
    return runs


def run_finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run ``config`` in ``workdir`` (both inits under sub-folders for ``init.mode=both``); a
    preempted init stops there (the last summary's status is ``preempted``)."""
    mode = config.init.mode
    if mode not in ("pretrained", "random", "both"):
        raise UserError(f"init.mode must be pretrained, random or both, not {mode!r}")
    inits = ("pretrained", "random") if mode == "both" else (mode,)
    validate_finetune_config(config)  # before the fold runs, which each take one of its seeds
    folds = cross_validated(config.task, config.data) and config.data.cv_fold < 0
    summaries = {}
    for init in inits:
        run_dir = run_path(workdir) / init if mode == "both" else run_path(workdir)
        runs = fold_runs(config, run_dir) if folds else ()
        what = (f"{len(runs)} runs ({config.data.cv_folds} folds x {len(config.train.seeds)} "
                "seeds) in one program" if folds else "")
        print(f"== {config.task}: {init} init -> {run_dir}" + (f" ({what})" if what else ""),
              flush=True)
        summaries[init] = Finetuner(config, run_dir, init, runs=runs).run()
        if summaries[init]["status"] == "preempted":  # SIGTERM stops the whole command
            print("preempted: not starting the other init; re-run the command to resume",
                  flush=True)
            break
    return summaries


def summary_line(init: str, summary: dict, where: RunPath) -> str:
    """The command's line for one init: its status, then its final and selected scores, each
    ``mean ± sample std (n = runs)``, and where its summary is."""
    line = f"{init} init: {summary['status']}"
    for which in ("final", "selected"):
        if summary.get(which):
            score = summary[which]
            line += (f"; {which} score {score['mean']['score']:.1f} ± "
                     f"{score['std']['score']:.1f} (n = {score.get('n', '?')})")
    return line + f" (summary: {where})"
