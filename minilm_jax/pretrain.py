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

import json

from minilm_jax.cli import define_run_flags, run_main

_RUN_FLAGS = define_run_flags("pre-training", "pretrain:<point>")


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.errors import UserError
    from minilm_jax.evals.in_training import step_evaluations
    from minilm_jax.interop.hf_minilm import export_note
    from minilm_jax.train.distributed import maybe_initialize_distributed
    from minilm_jax.train.loop import Pretrainer
    from minilm_jax.train.population import expand, is_population
    from minilm_jax.train.population_loop import PopulationTrainer

    config, workdir = _RUN_FLAGS()
    maybe_initialize_distributed(config)
    note = export_note(config)
    if note:
        print(note, flush=True)
    if is_population(config):
        if config.get("evals"):
            raise UserError("config.evals runs inside single runs; score a population's members "
                            "after training (python -m minilm_jax.evals, or a sweep's evals)")
        summary = PopulationTrainer(expand(config, workdir), workdir,
                                    config.population.members).run()
        brief = {"status": summary["status"], "step": summary["step"],
                 "members": {m["name"]: {k: m[k] for k in ("status", "best") if m.get(k)}
                             for m in summary["members"]}}
    else:
        summary = Pretrainer(config, workdir, step_evaluations(config, workdir)).run()
        brief = {k: summary[k] for k in ("status", "step", "point", "best") if k in summary}
    print(json.dumps(brief, indent=2))


def _entry() -> None:
    run_main(main, recipe="pretrain")


if __name__ == "__main__":
    _entry()
