"""Start several workers of one sweep on the engines a lab has (``--launcher``):

- ``local``: ``--workers=N`` processes on this machine (N=1: this process is the worker); one left
  silent (stopped or hung) once the sweep is settled is named and terminated
  (:func:`wait_for_workers`);
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
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath, is_remote

from .claims import (HEARTBEAT_SECONDS, HEARTBEAT_VARIABLE, LAUNCHED_AT_ENV, LOST_EXIT_STATUS,
                     STALE_AFTER_SECONDS, STALE_VARIABLE, ClaimBoard, seconds_from_env)

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


@dataclasses.dataclass
class LocalWorker:
    """One worker process of a local launch and the last sign of life the launcher saw of it."""

    name: str  # w<i>, its output's prefix
    proc: subprocess.Popen
    last_sign: float  # time.monotonic() of its start, last output line or last CPU time change
    cpu: int | None = None  # its CPU time in clock ticks at the last look (None: not known)
    terminated_by: int = 0  # the last signal this launcher sent it (0: none)
    terminated_at: float = 0.0  # when (time.monotonic())
    warned: bool = False  # told once that it is silent while the sweep is not settled

    @property
    def ended(self) -> bool:
        return self.proc.returncode is not None

    @property
    def exit_code(self) -> int:
        """Its exit code; minus the signal this launcher ended it with (a worker that stopped on
        the SIGTERM it was sent exits 143, which is no user's stop)."""
        if self.terminated_by and self.proc.returncode in (130, 143, -signal.SIGTERM,
                                                           -signal.SIGKILL):
            return -self.terminated_by
        return self.proc.returncode


@dataclasses.dataclass(frozen=True)
class SilenceRule:
    """When the launcher stops waiting on a silent worker: one silent (no output line, no CPU
    time, no claim refreshed) for ``stale_after`` seconds, the claims' stale time, once another
    worker finished; SIGTERM's grace before SIGKILL; the sweep root, whose claims say whether a
    worker still beats (None: not looked at)."""

    stale_after: float
    heartbeat: float
    grace: float = 10.0
    root: str | None = None

    @property
    def every(self) -> float:
        """How often the launcher looks at its workers' CPU time (and at once when one ends)."""
        return min(self.heartbeat, self.stale_after / 3)

    @classmethod
    def from_env(cls, root: RunPath) -> "SilenceRule":
        """The claims' times as every worker reads them (the launcher's environment), and the
        sweep ``root``."""
        return cls(stale_after=seconds_from_env(STALE_VARIABLE, STALE_AFTER_SECONDS),
                   heartbeat=seconds_from_env(HEARTBEAT_VARIABLE, HEARTBEAT_SECONDS),
                   root=str(root))


def _relay(stream, worker: LocalWorker) -> None:
    for line in iter(stream.readline, ""):
        worker.last_sign = time.monotonic()
        sys.stdout.write(f"[{worker.name}] {line}")
        sys.stdout.flush()


def run_local_workers(argv: Sequence[str], envs: Sequence[dict[str, str]],
                      root: RunPath) -> list[int]:
    """Start one worker per entry of ``envs`` (extra environment variables) on this machine, relay
    their output with a ``[w<i>]`` prefix, wait for all; their exit codes (negative: killed by
    that signal, also one this launcher terminated). Each worker is reaped the moment it ends (a
    waiter thread each), so a killed one never lingers as a zombie that the others' claims would
    take for alive: they see it gone within one look and take its unit over. A worker left
    silent after another one finished (stopped, or hung) is terminated
    (:func:`wait_for_workers`)."""
    launched = launch_env()
    procs = [subprocess.Popen(worker_argv(argv), env={**os.environ, **launched, **extra},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for extra in envs]
    return wait_for_workers(procs, SilenceRule.from_env(root))


def wait_for_workers(procs: Sequence[subprocess.Popen], rule: SilenceRule) -> list[int]:
    """Relay and reap the worker processes ``procs`` (each with its output on a pipe) until every
    one ended; their exit codes (a worker this launcher terminated: minus the signal sent).

    A worker ends only when every unit of the sweep is settled (exit 0, or 1 when one failed), or
    when a signal or an error stops it. Once one worker finished so, the sweep is settled: nothing
    is left for the others to run but their own ending (results, the report, each under a claim it
    refreshes). A worker that then stays silent for the claims' stale time (no output line, no CPU
    time on Linux's ``/proc``, no fresh claim: a stopped or hung process, whose claims the others
    took over) is named in one line and terminated: SIGKILL when it is stopped (it would act on
    SIGTERM only once resumed, and resumed it could write into a unit another worker took over),
    else SIGTERM and SIGKILL after ``rule.grace`` seconds. A worker that runs, beats or prints is
    never terminated; nor is one while no worker finished (the sweep may need it): that is said
    in one line, and the launcher waits."""
    changed = threading.Event()  # a worker ended
    now, threads, workers = time.monotonic(), [], []
    for i, proc in enumerate(procs):
        worker = LocalWorker(f"w{i}", proc, now)
        relay = threading.Thread(target=_relay, args=(proc.stdout, worker), daemon=True)
        reaper = threading.Thread(target=_reap, args=(worker, changed), daemon=True)
        relay.start()
        reaper.start()
        workers.append(worker)
        threads += [reaper, relay]
    while not all(w.ended for w in workers):
        try:
            changed.wait(_next_look(workers, rule))
            changed.clear()
            _look(workers, rule)
        except KeyboardInterrupt:  # the workers got the Ctrl-C too: wait until they saved their step
            continue
    while any(t.is_alive() for t in threads):  # the relays: until each worker's output is drained
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            continue
    return [w.exit_code for w in workers]


def _next_look(workers: Sequence[LocalWorker], rule: SilenceRule) -> float:
    """Seconds until the launcher looks at its workers again (sooner when a worker ends)."""
    if any(w.terminated_by == signal.SIGTERM and not w.ended for w in workers):
        return min(rule.every, rule.grace)
    return rule.every


def _look(workers: Sequence[LocalWorker], rule: SilenceRule) -> None:
    """Note each running worker's CPU time; terminate one silent after the sweep settled."""
    now = time.monotonic()
    for worker in workers:
        if not worker.ended:
            cpu, _ = process_cpu(worker.proc.pid)
            if cpu is not None and cpu != worker.cpu:
                worker.cpu, worker.last_sign = cpu, now
    finished = any(w.ended and w.proc.returncode in (0, 1) for w in workers)
    for worker in workers:
        if worker.ended:
            continue
        if worker.terminated_by:  # SIGKILL once SIGTERM went unanswered for the grace period
            if worker.terminated_by == signal.SIGTERM and now - worker.terminated_at >= rule.grace:
                _signal(worker, signal.SIGKILL, now)
            continue
        silent = now - worker.last_sign
        if worker.cpu is None or silent < rule.stale_after:
            continue
        alone = all(w.ended for w in workers if w is not worker)
        if not (finished or alone) or _beats(worker, rule):  # claims read only when it matters
            continue
        if not finished:
            if not worker.warned:
                worker.warned = True
                _say(f"warning: sweep worker {worker.name} (pid {worker.proc.pid}) has been "
                     f"silent for {silent:.0f} s and the other workers ended before the sweep "
                     "was settled; waiting for it (resume it with SIGCONT, or stop it)")
            continue
        stopped = process_cpu(worker.proc.pid)[1] in ("T", "t")
        _say(f"warning: sweep worker {worker.name} (pid {worker.proc.pid}) has been silent for "
             f"{silent:.0f} s ({'stopped' if stopped else 'hung'}) after every unit was "
             "settled; terminating it")
        _signal(worker, signal.SIGKILL if stopped else signal.SIGTERM, now)


def _beats(worker: LocalWorker, rule: SilenceRule) -> bool:
    """Whether ``worker`` holds a claim that is not stale (refreshed within the stale time: a
    worker that beats is never silent, and no other worker would take its unit over)."""
    if rule.root is None:
        return False
    from .layout import SweepLayout

    board = ClaimBoard(SweepLayout(rule.root).claims_dir, rule.root, rule.stale_after,
                       rule.heartbeat)
    me = socket.gethostname()
    return any(owner.get("host") == me and owner.get("pid") == worker.proc.pid
               and owner["verdict"] in ("held", "silent") for owner in board.claims().values())


def _signal(worker: LocalWorker, signum: int, now: float) -> None:
    worker.terminated_by, worker.terminated_at = signum, now
    worker.proc.send_signal(signum)  # nothing when it ended meanwhile


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write: no worker's output inside the line
    sys.stdout.flush()


def process_cpu(pid: int) -> tuple[int | None, str]:
    """The CPU time (user + system, clock ticks, every thread) and state letter (``T``: stopped)
    of process ``pid`` from Linux's ``/proc`` ((None, "") where it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, ""
    fields = stat[stat.rfind(")") + 1:].split()  # comm may hold spaces: the fields follow ')'
    try:
        return int(fields[11]) + int(fields[12]), fields[0]
    except (IndexError, ValueError):
        return None, ""


def _reap(worker: LocalWorker, ended: threading.Event) -> None:
    """Wait for one worker; say so at once when a signal ended it (SIGKILL: the out-of-memory
    killer, or a user), unless this launcher sent it."""
    code = worker.proc.wait()
    if code < 0 and -code not in (signal.SIGINT, signal.SIGTERM) and not worker.terminated_by:
        _say(f"warning: sweep worker {worker.name} (pid {worker.proc.pid}) was killed by "
             f"{signal.Signals(-code).name}; the other workers take over its unit and resume it "
             "from its last checkpoint")
    ended.set()


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
