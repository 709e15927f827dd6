"""Pre-train a masked LM on token shards.

    minilm-pretrain --config=pretrain:<point> --workdir=DIR --config.data.shards=SHARD_DIR
        [--config.<field>=<value> ...]

(``python -m minilm_jax.pretrain`` is the same command; ``<point>`` is a named point such as
``paper-1.25m`` or a shape ``E32-H32-I128-L1-A2-V8000``: ``minilm-points`` lists them.)

Re-running the same command resumes from the newest complete checkpoint in DIR.

A population (``--config.population.seeds=0,1,2``, ``--config.population.peak_lr=5e-4,1e-3``, ...:
lists, crossed) trains its members in one compiled program, each a run in ``DIR/members/<name>``.
"""

from __future__ import annotations


from minilm_jax.cli import define_run_flags, run_main

_RUN_FLAGS = define_run_flags("pre-training", "pretrain:<point>")


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.errors import UserError
    from minilm_jax.evals.in_training import step_evaluations
    from minilm_jax.train.distributed import maybe_initialize_distributed
    from minilm_jax.train.pretrainer import Pretrainer
    from minilm_jax.train.population import expand, is_population
    from minilm_jax.train.population_trainer import PopulationTrainer

    config, workdir = _RUN_FLAGS()
    maybe_initialize_distributed(config)
    if is_population(config):
        if config.get("evals"):
            raise UserError("config.evals runs inside single runs; score a population's members "
                            "after training (python -m minilm_jax.evals, or a sweep's evals)")
        trainer = PopulationTrainer(expand(config, workdir), workdir, config.population.members)
        print_export_note(config)
        summary = trainer.run()
        for member in summary["members"]:
            print(f"{member['name']}: {outcome_line(member)}")
        print(f"population {summary['status']} at step {summary['step']}; each member's summary: "
              f"{workdir}/members/<name>/summary.json")
    else:
        trainer = Pretrainer(config, workdir, step_evaluations(config, workdir))
        print_export_note(config)
        summary = trainer.run()
        print(f"{outcome_line(summary)}; summary: {workdir}/summary.json")


def print_export_note(config) -> None:
    """Print why the run's model will not export to Hugging Face, if it will not (once the run is
    accepted: a refused command prints only its error line)."""
    from minilm_jax.interop.hf_minilm import export_note

    note = export_note(config)
    if note:
        print(note, flush=True)


def outcome_line(summary: dict) -> str:
    """One line of a pre-training run's (or member's) end: status, step, best perplexities."""
    line = f"{summary['status']} at step {summary['step']}"
    best = summary.get("best")
    if best:
        line += (f"; best validation perplexity {best['validation_perplexity']:.2f} at step "
                 f"{best['step']}")
        if best.get("test_perplexity") is not None:
            line += f", test {best['test_perplexity']:.2f}"
    return line


def _entry() -> None:
    run_main(main, recipe="pretrain")


if __name__ == "__main__":
    _entry()
