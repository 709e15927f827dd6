"""Run a sweep of pre-training runs, fine-tune each, collect results and write the report.

    python -m minilm_jax.sweep --config=configs/sweep.py:<name> --root=DIR [--dry_run]
        [--only=SUBSTRING] [--stage=STAGE] [--launcher=local|gpus|slurm|tpu --workers=N]
        [--config.<field>=<value> ...]
    python -m minilm_jax.sweep status --root=DIR

Re-running the same command skips finished runs and resumes interrupted ones; a failing run is
recorded in DIR/status.json and the others go on (exit 1 at the end). SIGTERM or Ctrl-C stops the
sweep once the stage in progress has saved its step (exit 143 or 130, one line saying so).
``--dry_run`` lists the runs with parameters, FLOPs and an estimated time on this device, and runs
nothing. Any number of workers run one root together (``--launcher``, ``--workers``): each takes the
next unfinished unit; ``status`` shows every unit's state, step, worker and elapsed time.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "sweep config: sweep:<name> (an installed recipe) or a file")
_ROOT = flags.DEFINE_string("root", None, "sweep directory (runs, status, results, report)")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "list the runs with parameters, FLOPs and time; run nothing")
_ONLY = flags.DEFINE_string("only", "", "run only the runs whose name contains this")
_STAGE = flags.DEFINE_string("stage", "", "run only this stage of the selected runs (e.g. "
                             "finetune:bbc_topic:random, as `status` names it): retry one failed unit")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "gpus", "slurm", "tpu"],
                              "where the workers run: local processes, one per local GPU, a SLURM "
                              "job array (submitit), or this TPU VM host")
_WORKERS = flags.DEFINE_integer("workers", 1, "number of workers (gpus: 0 = one per GPU; slurm: "
                                "the job array's size)")
_WAIT = flags.DEFINE_bool("wait", False, "slurm: wait for the job array, then write results and report")
_PARTITION = flags.DEFINE_string("slurm_partition", "", "slurm: partition (default: the cluster's)")
_GPUS = flags.DEFINE_integer("slurm_gpus", 0, "slurm: GPUs per task")
_CPUS = flags.DEFINE_integer("slurm_cpus", 4, "slurm: CPUs per task")
_MEM = flags.DEFINE_float("slurm_mem_gb", 0.0, "slurm: memory per task in GB (0: the partition's default)")
_TIME = flags.DEFINE_integer("slurm_time_min", 240, "slurm: time limit per task in minutes (requeued past it)")
_PARALLEL = flags.DEFINE_integer("slurm_parallel", 0, "slurm: at most this many tasks at once (0: all)")
_EXECUTOR = flags.DEFINE_enum("slurm_executor", "slurm", ["slurm", "local"],
                              "slurm: submit to SLURM, or run the same tasks through submitit's local executor")


def main(argv: list[str]) -> None:
    from minilm_jax.errors import UserError
    from minilm_jax.storage import run_path
    from minilm_jax.sweep import launchers, workers
    from minilm_jax.sweep.layout import SweepLayout
    from minilm_jax.sweep.worker_loop import SweepRunner, hold_root, plan_table, stop_error

    if argv[1:] == ["status"]:
        from minilm_jax.sweep.overview import print_status

        if not _ROOT.value:
            raise UserError("status needs --root=DIR")
        layout = SweepLayout(_ROOT.value)
        print_status(_CONFIG.value or workers.load_config(layout), layout)
        return
    if argv[1:]:
        raise UserError(f"unknown command {' '.join(argv[1:])!r}: the only one is `status`")
    if _CONFIG.value is None or (not _ROOT.value and not _DRY_RUN.value):
        raise UserError("--config=configs/sweep.py:<name> and --root=DIR are required")
    if _DRY_RUN.value:
        from minilm_jax.train.throughput import measured_matmul_peak
        runner = SweepRunner(_CONFIG.value, _ROOT.value or ".")
        print(plan_table(runner.runs, _CONFIG.value, measured_matmul_peak("float32")))
        return
    root = run_path(_ROOT.value)
    launcher, n = _LAUNCHER.value, _WORKERS.value
    if launcher == "slurm":
        SweepRunner(_CONFIG.value, root).check(_ONLY.value)  # fails here, not in every task
        workers.save_config(_CONFIG.value, SweepLayout(root))
        jobs = launchers.submit_slurm(sys.argv, root, n, launchers.SlurmOptions(
            _PARTITION.value, _GPUS.value, _CPUS.value, _MEM.value, _TIME.value, _PARALLEL.value,
            _EXECUTOR.value))
        print(f"submitted {len(jobs)} sweep workers: job {jobs[0].job_id.split('_')[0]} "
              f"(logs in {launchers.slurm_log_folder(root)}); follow with: "
              f"python -m minilm_jax.sweep status --root={root}", flush=True)
        if not _WAIT.value:
            return
        codes = [job.result() for job in jobs]
        outcome = workers.finish(_CONFIG.value, root)
        outcome["workers"] = codes
    elif launcher == "gpus" or (launcher == "local" and n > 1):
        envs = launchers.gpu_envs(n) if launcher == "gpus" else [{}] * n
        SweepRunner(_CONFIG.value, root).check(_ONLY.value)  # refused: no worker starts
        root.mkdir(parents=True, exist_ok=True)
        hold_root(root)  # moved away while the workers ran: no results written at its old path
        codes = launchers.run_local_workers(sys.argv, envs, root)
        outcome = workers.finish(_CONFIG.value, root)
        outcome["workers"] = codes
        if any(c in (130, 143) for c in codes):
            raise UserError(f"sweep workers stopped by a signal (exit codes {codes}); results and "
                            "report are incomplete: run the same command again to resume")
    else:
        if launcher == "tpu":
            launchers.this_host_only()
        outcome = workers.run_worker(_CONFIG.value, root, _ONLY.value, _STAGE.value)
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
