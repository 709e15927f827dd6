"""Pre-train a masked LM on token shards.

    python -m minilm_jax.pretrain --config=configs/pretrain.py:<point> --workdir=DIR \
        --config.data.shards=SHARD_DIR [--config.<field>=<value> ...]

Re-running the same command resumes from the newest complete checkpoint in DIR.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "pre-training config: configs/pretrain.py:<point>")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, summary)")


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.cli import UserError
    from minilm_jax.train.loop import Pretrainer, maybe_initialize_distributed

    if _CONFIG.value is None or not _WORKDIR.value:
        raise UserError("both --config=configs/pretrain.py:<point> and --workdir=DIR are required")
    maybe_initialize_distributed(_CONFIG.value)
    summary = Pretrainer(_CONFIG.value, _WORKDIR.value).run()
    brief = {k: summary[k] for k in ("status", "step", "point", "best") if k in summary}
    print(json.dumps(brief, indent=2))


def _entry() -> None:
    run_main(main)


if __name__ == "__main__":
    _entry()
