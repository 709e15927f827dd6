"""Fine-tune a pre-trained checkpoint (or its random-init twin) on one task and evaluate it.

    python -m minilm_jax.finetune --config=configs/finetune.py:<task> --workdir=DIR \
        --config.init.checkpoint=PRETRAIN_WORKDIR [--config.init.mode=both] \
        [--config.data.dir=...] [--config.train.seeds=0,1,2] [--config.<field>=<value> ...]

``init.mode=both`` runs DIR/pretrained and DIR/random and writes DIR/results.md + results.json.
Re-running the same command resumes from the newest checkpoint of each run.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "fine-tuning config: configs/finetune.py:<task>")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, summary)")


def run_finetune(config, workdir: str) -> dict:
    """Run ``config`` in ``workdir`` (both inits under sub-folders for ``init.mode=both``)."""
    from pathlib import Path

    from minilm_jax.cli import UserError
    from minilm_jax.finetune.loop import Finetuner
    from minilm_jax.finetune.results import write_tables

    mode = config.init.mode
    if mode not in ("pretrained", "random", "both"):
        raise UserError(f"init.mode must be pretrained, random or both, not {mode!r}")
    inits = ("pretrained", "random") if mode == "both" else (mode,)
    summaries = {}
    for init in inits:
        run_dir = Path(workdir) / init if mode == "both" else Path(workdir)
        print(f"== {config.task}: {init} init -> {run_dir}", flush=True)
        summaries[init] = Finetuner(config, run_dir, init).run()
    write_tables([workdir], workdir)
    return summaries


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.cli import UserError

    if _CONFIG.value is None or not _WORKDIR.value:
        raise UserError("both --config=configs/finetune.py:<task> and --workdir=DIR are required")
    summaries = run_finetune(_CONFIG.value, _WORKDIR.value)
    brief = {init: {"status": s["status"], "final": s.get("final", {}).get("mean"),
                    "final_std": s.get("final", {}).get("std", {}).get("score")}
             for init, s in summaries.items()}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    run_main(main)
