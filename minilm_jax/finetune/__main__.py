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


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.cli import UserError

    if _CONFIG.value is None or not _WORKDIR.value:
        raise UserError("both --config=configs/finetune.py:<task> and --workdir=DIR are required")
    from minilm_jax.finetune.run import run_finetune

    summaries = run_finetune(_CONFIG.value, _WORKDIR.value)
    brief = {init: {"status": s["status"], "final": s.get("final", {}).get("mean"),
                    "final_std": s.get("final", {}).get("std", {}).get("score")}
             for init, s in summaries.items()}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    run_main(main)
