"""Start several workers of one sweep on the engines a lab has (``--launcher``):

- ``local``: ``--workers=N`` processes on this machine (N=1: this process is the worker);
- ``gpus``: one worker per local GPU (``CUDA_VISIBLE_DEVICES`` set to one GPU each);
- ``slurm``: a job array of ``--workers`` tasks through submitit (partition, GPUs, CPUs, memory,
  time, array parallelism as flags; a preempted or timed-out task is requeued and resumes); returns
  the job id at once;
- ``tpu``: this process is the worker of one TPU VM host (``launch/tpu.sh sweep`` starts it on every
  host of a slice), using that host's chips only.

Every worker runs the same sweep command with ``--launcher=local --workers=1``; the sweep root must
be a filesystem every worker sees or a ``gs://`` location (:mod:`minilm_jax.sweep.claims`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath, is_remote

from .claims import LAUNCHED_AT_ENV, LOST_EXIT_STATUS

LAUNCHERS = ("local", "gpus", "slurm", "tpu")
# Flags the launcher consumes; a worker's command line is the rest plus --launcher=local.
LAUNCH_FLAGS = ("launcher", "workers", "slurm_partition", "slurm_gpus", "slurm_cpus",
                "slurm_mem_gb", "slurm_time_min", "slurm_parallel", "slurm_executor", "wait")


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """A SLURM job array of sweep workers (``--slurm_*`` flags)."""

    partition: str = ""
    gpus: int = 0  # GPUs per task
    cpus: int = 4  # CPUs per task
    mem_gb: float = 0.0  # 0: the partition's default
    time_min: int = 240  # per task; a task past it is requeued and resumes
    parallel: int = 0  # at most this many tasks at once (0: all)
    executor: str = "slurm"  # slurm | local (submitit's local executor: the same code without SLURM)


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line of one worker: this command's flags without the launcher's own (``--flag
    value`` and ``--flag=value`` forms)."""
    keep, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-") and (name in LAUNCH_FLAGS or name.removeprefix("no") == "wait"):
            skip = "=" not in arg and name not in ("wait", "nowait")
            continue
        keep.append(arg)
    return [sys.executable, "-m", "minilm_jax.sweep", *keep, "--launcher=local", "--workers=1"]


def launch_env() -> dict[str, str]:
    """The environment the workers of one launch share: its time, so a worker that starts late
    does not retry a unit a sibling failed (claims.LAUNCHED_AT_ENV)."""
    return {LAUNCHED_AT_ENV: repr(time.time())}


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def run_local_workers(argv: Sequence[str], envs: Sequence[dict[str, str]]) -> list[int]:
    """Start one worker per entry of ``envs`` (extra environment variables) on this machine, relay
    their output with a ``[w<i>]`` prefix, wait for all; their exit codes (negative: killed by
    that signal). Each worker is reaped the moment it ends (a waiter thread each), so a killed one
    never lingers as a zombie that the others' claims would take for alive: they see it gone
    within one look and take its unit over."""
    procs, threads, launched = [], [], launch_env()
    for i, extra in enumerate(envs):
        proc = subprocess.Popen(worker_argv(argv), env={**os.environ, **launched, **extra},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        relay = threading.Thread(target=_relay, args=(proc.stdout, f"[w{i}] "), daemon=True)
        reaper = threading.Thread(target=_reap, args=(proc, f"w{i}"), daemon=True)
        relay.start()
        reaper.start()
        procs.append(proc)
        threads += [reaper, relay]
    while any(t.is_alive() for t in threads):
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:  # the workers got the Ctrl-C too: wait until they saved their step
            continue
    return [proc.returncode for proc in procs]


def _reap(proc: subprocess.Popen, name: str) -> None:
    """Wait for one worker; say so at once when a signal ended it (SIGKILL: the out-of-memory
    killer, or a user)."""
    code = proc.wait()
    if code < 0 and -code not in (signal.SIGINT, signal.SIGTERM):
        sys.stdout.write(f"warning: sweep worker {name} (pid {proc.pid}) was killed by "
                         f"{signal.Signals(-code).name}; the other workers take over its unit and "
                         "resume it from its last checkpoint\n")
        sys.stdout.flush()


def local_gpus() -> list[str]:
    """This machine's GPU ids (``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def gpu_envs(workers: int) -> list[dict[str, str]]:
    """One environment per worker, each with its own GPU (``--workers`` 0: one per GPU)."""
    gpus = local_gpus()
    if not gpus:
        raise UserError("--launcher=gpus found no GPU (nvidia-smi -L lists none and "
                        "CUDA_VISIBLE_DEVICES is unset); use --launcher=local --workers=N")
    n = workers if workers > 0 else len(gpus)
    if n > len(gpus):
        raise UserError(f"--workers={n} but this machine has {len(gpus)} GPU(s): {gpus}")
    return [{"CUDA_VISIBLE_DEVICES": gpus[i], "JAX_PLATFORMS": "cuda"} for i in range(n)]


class SweepWorkerJob:
    """A SLURM task of a sweep: runs one worker; submitit requeues it when preempted or out of
    time (its unit resumes from its checkpoint)."""

    def __init__(self, command: list[str], cwd: str, env: dict[str, str]):
        self.command, self.cwd, self.env = command, cwd, env

    def __call__(self) -> int:
        code = subprocess.run(self.command, cwd=self.cwd, env={**os.environ, **self.env}).returncode
        # 1: some unit failed and is recorded; 75: this worker's unit went to another worker
        if code not in (0, 1, LOST_EXIT_STATUS):  # anything else is an error
            raise RuntimeError(f"sweep worker exited with status {code}")
        return code

    def checkpoint(self):  # submitit calls this on preemption or timeout: run again
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def slurm_log_folder(root: RunPath) -> Path:
    """Where submitit keeps the tasks' pickles and logs: ``ROOT/slurm``, or for a ``gs://`` root
    (submitit needs a filesystem the nodes share) ``slurm-logs/<root's name>-<digest of the root>``
    in the submitting directory."""
    if not is_remote(root):
        return Path(root) / "slurm"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return Path("slurm-logs") / f"{root.name}-{digest}"


def submit_slurm(argv: Sequence[str], root: RunPath, workers: int, options: SlurmOptions):
    """Submit ``workers`` SLURM tasks (one job array) each running one worker; the jobs."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher=slurm needs submitit: pip install 'minilm-jax[slurm]'") from None
    if workers < 1:
        raise UserError("--launcher=slurm needs --workers=N (the job array's size)")
    folder = slurm_log_folder(root) / "%j"
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.time_min)
    elif options.executor == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": options.time_min, "cpus_per_task": options.cpus,
                  "gpus_per_node": options.gpus, "tasks_per_node": 1, "nodes": 1,
                  "name": f"sweep-{root.name}"}
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.mem_gb:
            params["mem_gb"] = options.mem_gb
        if options.parallel:
            params["slurm_array_parallelism"] = options.parallel
        executor.update_parameters(**params)
    else:
        raise UserError(f"--slurm_executor={options.executor!r}: use slurm or local")
    job = SweepWorkerJob(worker_argv(argv), os.getcwd(), launch_env())
    with executor.batch():
        jobs = [executor.submit(job) for _ in range(workers)]
    return jobs


_CHIP_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1", 8: "2,4,1"}


def this_host_only() -> dict[str, str]:
    """Make JAX in this process use this TPU VM host's chips as a slice of its own (each host of a
    pod slice is then an independent sweep worker, no ``jax.distributed``): the TPU runtime's
    process-bounds variables, unless already set. Must run before JAX starts its backend."""
    import glob

    chips = len(glob.glob("/dev/accel*")) or len(glob.glob("/dev/vfio/[0-9]*"))
    if chips not in _CHIP_BOUNDS:
        raise UserError(f"--launcher=tpu: found {chips} TPU chips on this host (/dev/accel*, "
                        "/dev/vfio); run it on a TPU VM host (launch/tpu.sh sweep)")
    env = {"TPU_PROCESS_BOUNDS": "1,1,1", "TPU_CHIPS_PER_PROCESS_BOUNDS": _CHIP_BOUNDS[chips],
           "TPU_VISIBLE_CHIPS": ",".join(str(i) for i in range(chips))}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return env
