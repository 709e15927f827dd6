r"""Fine-tune a pre-trained checkpoint (or its random-init twin) on one task and evaluate it.

    python -m minilm_jax.finetune --config=finetune:<task> --workdir=DIR \
        --config.init.checkpoint=PRETRAIN_WORKDIR [--config.init.mode=both] \
        [--config.data.dir=...] [--config.train.seeds=0,1,2] [--config.<field>=<value> ...]

``init.mode=both`` runs DIR/pretrained and DIR/random and writes DIR/results.md + results.json.
Each epoch is evaluated on a validation split carved from train (model selection only); the reported
splits (GLUE dev, test, holdout) are scored once at the end, with the final and with each seed's
selected parameters (summary ``final`` and ``selected``: mean, sample std, n).
Re-running the same command resumes from the newest checkpoint of each run.
Several hosts: the same command on each, with ``--config.distributed.initialize=True`` (docs/accelerators.md,
"Multi-host fine-tuning").
"""

from __future__ import annotations

import json

from minilm_jax.cli import define_run_flags, run_main

_RUN_FLAGS = define_run_flags("fine-tuning", "finetune:<task>")


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.finetune.run import run_finetune
    from minilm_jax.train.distributed import maybe_initialize_distributed

    config, workdir = _RUN_FLAGS()
    maybe_initialize_distributed(config)
    summaries = run_finetune(config, workdir)
    brief = {init: {"status": s["status"],
                    **{f"{which}{part}": s.get(which, {}).get(key)
                       for which in ("selected", "final")
                       for part, key in (("", "mean"), ("_std", "std"))},
                    "n": s.get("selected", {}).get("n")}
             for init, s in summaries.items()}
    print(json.dumps(brief, indent=2))


def entry() -> None:
    run_main(main, recipe="finetune")


if __name__ == "__main__":
    entry()
