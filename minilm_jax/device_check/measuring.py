"""The measurements: a tree's bench run (echoed, logged, killed at its timeout), kernels per step
from XLA's dumps, each figure on each side within the budget, and the sweep projection."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from minilm_jax.device_check.targets import Figure, Sweep, sweep_spec
from minilm_jax.device_check.trees import CHILD_ENV, RUNNER, Side, side_args, side_env


def run_bench(side: Side, args: list[str], timeout: float, log,
              extra_env: dict[str, str] | None = None) -> tuple[str, float, str]:
    """``python -m minilm_jax.bench ARGS`` of ``side``, its output echoed and logged line by line,
    its process group killed after ``timeout`` s: (``ok`` | ``failed (exit N)`` | ``timed out
    after N s``, seconds, output)."""
    print(f"-- {side.name}: python -m minilm_jax.bench {shlex.join(args)}", flush=True)
    log.write(f"-- {side.name} ({side.label}): {shlex.join(args)}\n")
    start, lines = time.monotonic(), []
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(side.tree), "minilm_jax.bench", *args], cwd=side.tree,
        env=side_env(side, extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)

    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
            log.write(f"[{side.name}] {line}")
            print(f"   [{side.name}] {line}", end="", flush=True)

    def stop() -> None:  # the run and whatever it started (it has a process group of its own)
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=grace)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
        status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        stop()
        status = f"timed out after {timeout:.0f} s"
    except BaseException:  # Ctrl-C or SIGTERM: no run is left holding the accelerator
        stop()
        raise
    reader.join(timeout=5)
    return status, time.monotonic() - start, "".join(lines)


def dumped_kernels(folder: Path) -> int | None:
    """Kernels per step of the first train step XLA dumped into ``folder``."""
    from minilm_jax.hlo_kernels import kernels_per_step

    dumps = sorted(folder.glob("*train_step*after_optimizations.txt"))
    return kernels_per_step(dumps[0].read_text()) if dumps else None


def device_card() -> str:
    """The ``aot --target=cuda:<card>`` of this machine's first GPU (by ``nvidia-smi``'s name;
    h100 when it does not say)."""
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.upper()
    except (OSError, subprocess.SubprocessError):
        name = ""
    for card, mark in (("h200", "H200"), ("h100", "H100"), ("a100", "A100"), ("l4", "L4"),
                       ("rtx4090", "4090")):
        if mark in name:
            return card
    return "h100"


def deviceless_kernels(side: Side, bench_args: tuple[str, ...], out: Path, log,
                       timeout_s: float = 600) -> int | None:
    """Kernels per step of the bench figure's step compiled for this machine's card on the CPU
    (``python -m minilm_jax.aot --target=cuda:<card>``, in ``side``'s tree), or None (also when
    it takes longer than ``timeout_s``). The step is read from ``bench_args`` as the bench reads
    them, its defaults included (``bench.bench_parser``)."""
    from minilm_jax.bench import bench_parser

    step = bench_parser().parse_args(list(bench_args))
    args = ["--target", f"cuda:{device_card()}", f"--config=pretrain:{step.point}",
            f"--config.model.dtype={step.dtype}", f"--config.train.batch_size={step.batch}",
            f"--config.eval.batch_size={step.batch}",
            f"--config.train.steps_per_dispatch={step.steps_per_dispatch}",
            f"--config.model.attention_impl={step.attention}",
            f"--config.model.mlm_loss_impl={step.loss_impl}",
            f"--config.model.layer_impl={step.layer}", f"--config.model.norm_impl={step.norm}",
            "--config.mesh.data=1", "--device_memory_gb=0", "--largest=0", "--json", str(out)]
    env = dict(side_env(side, None), JAX_PLATFORMS="cpu", JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1")
    try:
        result = subprocess.run([sys.executable, "-c", RUNNER, str(side.tree), "minilm_jax.aot",
                                 *args], cwd=side.tree, env=env, capture_output=True, text=True,
                                timeout=max(1.0, timeout_s))
        log.write(f"-- {side.name}: aot {shlex.join(args)}: exit {result.returncode}\n"
                  f"{result.stdout}{result.stderr[-2000:]}")
        return json.loads(out.read_text())["kernels_per_step"] if result.returncode == 0 else None
    except subprocess.TimeoutExpired:
        log.write(f"-- {side.name}: aot {shlex.join(args)}: not done in the {timeout_s:.0f} s the "
                  "budget left\n")
        return None
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return None


def measure(sides: list[Side], figs: list[Figure], sweep_min_s: float, deadline: float,
            scratch: Path, log) -> tuple[dict[tuple[str, str], dict[str, float]], list[dict]]:
    """Each figure on each side: a run gets at most its timeout and the budget less what the runs
    after it need at least; one left less than its own least is skipped. A figure whose bench
    command on a side equals one already run there (the quick mode's MFU figure: its point is the
    one run's) reads that run's JSON. Returns the values by (figure, side) and what became of each
    run."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    runs: list[dict] = []
    ran: dict[tuple[str, tuple[str, ...]], tuple[str, Path, bool]] = {}  # (figure, JSON, dumped)
    tasks = [(fig, side) for fig in figs for side in sides if side.name in fig.sides]
    for i, (fig, side) in enumerate(tasks):
        own = fig.now_args if side.name == "now" else ()
        command = (side.name, (*fig.args, *own))
        earlier = ran.get(command)
        if earlier and (earlier[2] or not fig.dump):
            try:
                values[(fig.name, side.name)] = fig.read(json.loads(earlier[1].read_text()))
                runs.append({"figure": fig.name, "side": side.name, "status": "ok",
                             "seconds": 0.0, "same_run_as": earlier[0]})
                continue
            except (OSError, ValueError, KeyError, IndexError):
                pass  # measured on its own below
        later = sum(f.min_s for f, _ in tasks[i + 1:]) + 2 * sweep_min_s
        left = deadline - time.monotonic()
        timeout = min(fig.timeout_s, left - later)
        if timeout < fig.min_s:
            runs.append({"figure": fig.name, "side": side.name, "status": f"skipped: {left:.0f} "
                         f"s of the budget left, {later:.0f} s kept for what follows"})
            print(f"-- {side.name}: {fig.name} skipped (would not fit the budget)", flush=True)
            continue
        out, dump = scratch / f"{i}.json", scratch / f"dump-{i}"
        env = {"JAX_ENABLE_COMPILATION_CACHE": "false",  # a step read from the cache is not dumped
               "XLA_FLAGS": f"{CHILD_ENV.get('XLA_FLAGS', '')} --xla_dump_to={dump} "
                            "--xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_step.*"}
        status, seconds, _ = run_bench(side, [*fig.args, *own, *side_args(side), "--json",
                                              str(out)], timeout, log, env if fig.dump else None)
        got: dict[str, float] = {}
        picked: dict[str, Any] = {}
        if status == "ok":
            try:
                result = json.loads(out.read_text())
                got, picked = fig.read(result), picked_strategy(result)
                ran.setdefault(command, (fig.name, out, fig.dump))
                if fig.dump:
                    got["kernels_per_step"] = dumped_kernels(dump)
                if fig.deviceless and side.name == "now":
                    # within the budget, less what the runs after it need at least
                    left_s = deadline - time.monotonic() - later
                    got["kernels_deviceless"] = deviceless_kernels(
                        side, fig.args, scratch / f"aot-{i}.json", log, min(600.0, left_s))
            except (OSError, ValueError, KeyError, IndexError) as err:
                status = f"ok, but its JSON lacks a figure ({type(err).__name__}: {err})"
        shutil.rmtree(dump, ignore_errors=True)
        values[(fig.name, side.name)] = {k: v for k, v in got.items() if v is not None}
        runs.append({"figure": fig.name, "side": side.name, "status": status,
                     "seconds": round(seconds, 1), **picked})
    return values, runs


def picked_strategy(result: dict[str, Any]) -> dict[str, Any]:
    """What a ``--members_impl both`` run picked and why (its last row's), else nothing."""
    row = (result.get("rows") or [{}])[-1]
    return ({"members_impl": row["impl"], "compared": row["compared"],
             "picked_because": row["picked_because"]} if "compared" in row else {})


SWEEP_ROW = re.compile(r"^(\S+)\s+[\d,]+ tokens/s\s+MFU\s+[\d.]+%\s+([\d.]+) h"
                       r"(?:\s+\|\s+\d+ seeds packed:\s+[\d,]+ tokens/s\s+([\d.]+) h)?")


def printed_sweep_rows(output: str) -> list[tuple[str, float]]:
    """(point, projected hours) of each point a sweep projection printed: what a run cut short
    leaves (its JSON is written at the end only)."""
    matches = (SWEEP_ROW.match(line.strip()) for line in output.splitlines())
    return [(m[1], float(m[3] or m[2])) for m in matches if m]


def measure_sweep(sides: list[Side], sweep: Sweep, deadline: float, scratch: Path,
                  log) -> tuple[dict[str, list[tuple[str, float]]], list[dict]]:
    """The sweep projection: this tree first with half the time left (every point if they fit),
    then the baseline with the rest, at most the points this tree measured."""
    measured: dict[str, list[tuple[str, float]]] = {}
    runs: list[dict] = []
    for side in sorted(sides, key=lambda s: s.name != "now"):
        left = deadline - time.monotonic()
        if (left / 2 if side.name == "now" else left) < sweep.min_s:
            runs.append({"figure": "sweep", "side": side.name,
                         "status": f"skipped: {left:.0f} s of the budget left"})
            print(f"-- {side.name}: the sweep projection skipped (would not fit)", flush=True)
            continue
        limit = sweep.limit if side.name == "now" else len(measured.get("now", [])) or sweep.limit
        spec = sweep_spec(sweep, side.tree)
        out = scratch / f"sweep-{side.name}.json"
        status, seconds, output = run_bench(side, [
            "--sweep", spec, "--sweep_seeds", str(sweep.seeds), *sweep.args,
            *(["--sweep_limit", str(limit)] if limit else []), *side_args(side),
            "--json", str(out)], left / 2 if side.name == "now" else left, log)
        try:
            rows = [(r["point"], float(r["hours"])) for r in json.loads(out.read_text())["rows"]]
        except (OSError, ValueError, KeyError):
            rows = printed_sweep_rows(output)
        measured[side.name] = rows
        runs.append({"figure": "sweep", "side": side.name, "status": status,
                     "seconds": round(seconds, 1), "points": len(rows)})
    return measured, runs
