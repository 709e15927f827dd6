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

from minilm_jax.cli import define_run_flags, run_main

_RUN_FLAGS = define_run_flags("fine-tuning", "finetune:<task>")


def main(argv: list[str]) -> None:
    del argv
    import jax

    from minilm_jax.analysis.finetune_tables import write_tables
    from minilm_jax.finetune.run import run_finetune, summary_line
    from minilm_jax.storage import run_path
    from minilm_jax.train.distributed import maybe_initialize_distributed

    config, workdir = _RUN_FLAGS()
    maybe_initialize_distributed(config)
    summaries = run_finetune(config, workdir)
    preempted = any(s["status"] == "preempted" for s in summaries.values())
    if not preempted and jax.process_index() == 0:  # every init finished; one writer (multi-host)
        write_tables([workdir], workdir)
    table = run_path(workdir) / "results.md"
    if len(summaries) == 2 and table.is_file():  # both inits: the table is the answer
        print(table.read_text(), end="")
        print(f"(table: {table}; every number also in results.json beside it)")
        return
    for init, s in summaries.items():
        print(summary_line(init, s, run_path(workdir) / "summary.json"))


def entry() -> None:
    run_main(main, recipe="finetune")


if __name__ == "__main__":
    entry()
