"""Run one fine-tuning config: one init, or both inits side by side. The results table over the
runs (:mod:`minilm_jax.analysis.finetune_tables`, a study) is the command's to write
(:mod:`minilm_jax.finetune.__main__`), once no init was preempted."""

from __future__ import annotations

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.storage import run_path

from .finetuner import Finetuner


def run_finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run ``config`` in ``workdir`` (both inits under sub-folders for ``init.mode=both``); a
    preempted init stops there (the last summary's status is ``preempted``)."""
    mode = config.init.mode
    if mode not in ("pretrained", "random", "both"):
        raise UserError(f"init.mode must be pretrained, random or both, not {mode!r}")
    inits = ("pretrained", "random") if mode == "both" else (mode,)
    summaries = {}
    for init in inits:
        run_dir = run_path(workdir) / init if mode == "both" else run_path(workdir)
        print(f"== {config.task}: {init} init -> {run_dir}", flush=True)
        summaries[init] = Finetuner(config, run_dir, init).run()
        if summaries[init]["status"] == "preempted":  # SIGTERM stops the whole command
            print("preempted: not starting the other init; re-run the command to resume",
                  flush=True)
            break
    return summaries
