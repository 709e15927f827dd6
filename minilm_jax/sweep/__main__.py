"""Run a sweep of pre-training runs, fine-tune each, collect results and write the report.

    python -m minilm_jax.sweep --config=configs/sweep.py:<name> --root=DIR [--dry_run]
        [--only=SUBSTRING] [--config.<field>=<value> ...]

Re-running the same command skips finished runs and resumes interrupted ones; a failing run is
recorded in DIR/status.json and the others go on (exit 1 at the end). SIGTERM or Ctrl-C stops the
sweep once the stage in progress has saved its step (exit 143 or 130, one line saying so). ``--dry_run`` lists the runs with parameters,
FLOPs and an estimated time on this device, and runs nothing.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "sweep config: sweep:<name> (an installed recipe) or a file")
_ROOT = flags.DEFINE_string("root", None, "sweep directory (runs, status, results, report)")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "list the runs with parameters, FLOPs and time; run nothing")
_ONLY = flags.DEFINE_string("only", "", "run only the runs whose name contains this")


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.errors import UserError
    from minilm_jax.sweep.runner import SweepRunner, plan_table, stop_error

    if _CONFIG.value is None or (not _ROOT.value and not _DRY_RUN.value):
        raise UserError("--config=configs/sweep.py:<name> and --root=DIR are required")
    runner = SweepRunner(_CONFIG.value, _ROOT.value or ".")
    if _DRY_RUN.value:
        from minilm_jax.train.throughput import measured_matmul_peak
        print(plan_table(runner.runs, _CONFIG.value, measured_matmul_peak("float32")))
        return
    outcome = runner.run(_ONLY.value)
    print(json.dumps(outcome, indent=2))
    stopped = stop_error(outcome)
    if stopped:
        raise stopped
    if outcome["failures"]:
        raise SystemExit(1)


def entry() -> None:
    run_main(main, recipe="sweep")


if __name__ == "__main__":
    entry()
