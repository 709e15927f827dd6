"""What the sweep command does: run this process as one worker of a sweep root, then write the
results table and (once, whichever worker gets there) the report.

A worker ends when every unit of the sweep is settled (finished, or failed since it started) or a
signal stops it; each worker that ends with the sweep settled rebuilds ``results.jsonl``, and the
report is built by one of them (a claim on the report folder; a report of the same results is not
built twice). :mod:`minilm_jax.sweep.launchers` starts several workers (local processes, one per
GPU, a SLURM job array, the hosts of a TPU slice).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import ml_collections

from minilm_jax.storage import atomic_write_bytes
from minilm_jax.train.dispatch import stop_signals

from .claims import ClaimBoard
from .layout import SweepLayout
from .results import write_results
from .worker_loop import SweepRunner


def save_config(sweep: ml_collections.ConfigDict, layout: SweepLayout) -> None:
    """Keep the sweep config in the root (``sweep.json``): ``minilm-sweep status`` reads it.
    Called only once the sweep passed :meth:`SweepRunner.check` (a refused command leaves the
    root's config as it was)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    text = sweep.to_json_best_effort(indent=2, sort_keys=True)
    if not layout.config_path.is_file() or layout.config_path.read_text() != text:
        atomic_write_bytes(layout.config_path, text.encode())


def load_config(layout: SweepLayout) -> ml_collections.ConfigDict:
    """The sweep config a root was started with (lists where the recipe has tuples)."""
    from minilm_jax.errors import UserError

    if not layout.config_path.is_file():
        raise UserError(f"{layout.root} is not a sweep root (no {layout.config_path.name}); pass "
                        "the sweep's --config too")
    return ml_collections.ConfigDict(json.loads(layout.config_path.read_text()))


def run_worker(sweep: ml_collections.ConfigDict, root: str | Path, only: str = "",
               stage: str = "") -> dict[str, Any]:
    """Run as one worker until the sweep is settled or this process is stopped; then results and,
    when nothing is left to run, the report. The outcome: runs, failures, results, report."""
    runner = SweepRunner(sweep, root)
    runner.check(only)  # a refused sweep writes nothing under the root, its config included
    save_config(sweep, runner.layout)
    # one request for the stages, the results and the report: a signal while they are rebuilt
    # (every stage already finished) lets them finish and is reported like any stop
    with stop_signals() as stop:
        outcome = runner.run(only, stage)
        if sweep.report and "interrupted" in outcome:
            print("stopped: the report is built from the finished stages", flush=True)
        outcome["report"] = build_report_once(runner.layout, sweep) if sweep.report else None
    if stop.signal and "interrupted" not in outcome:
        outcome["interrupted"] = {"run": "", "stage": "", "signal": stop.signal}
    return outcome


def finish(sweep: ml_collections.ConfigDict, root: str | Path) -> dict[str, Any]:
    """After workers started elsewhere ended: results and report of the root, failures."""
    runner = SweepRunner(sweep, root)
    runner.settle(runner.runs)
    results = write_results(runner.runs, runner.layout, sweep)
    report = build_report_once(runner.layout, sweep) if sweep.report else None
    return {"runs": len(runner.runs),
            "failures": runner.status.failures({r.name for r in runner.runs}),
            "results": str(results), "report": report}


def build_report_once(layout: SweepLayout, sweep: ml_collections.ConfigDict) -> str | None:
    """Build the report of the current results unless one of the same results exists or another
    worker is building it; the report folder (or None: no finished runs, or it failed)."""
    from minilm_jax.report import ReportOptions, build_report

    results = layout.results_path
    data = results.read_bytes()
    if not any(json.loads(line).get("kind") != "baseline"
               for line in data.decode().splitlines() if line.strip()):
        print("no finished runs: no report", flush=True)
        return None
    digest = hashlib.sha256(data).hexdigest()
    built = layout.claims_dir / "report-source.sha256"
    claim = ClaimBoard(layout.claims_dir, layout.root).try_claim([layout.report_dir], "report")
    if claim is None:
        print("the report is being built by another worker", flush=True)
        return str(layout.report_dir)
    with claim:
        if (layout.report_dir / "report.md").is_file() and built.is_file() \
                and built.read_text() == digest:
            return str(layout.report_dir)
        try:
            build_report(results, layout.report_dir,
                         ReportOptions(bootstrap=int(sweep.report_bootstrap)))
        except (Exception, SystemExit) as err:
            print(f"!! report failed: {type(err).__name__}: {err}", flush=True)
            return None
        atomic_write_bytes(built, digest.encode())
    return str(layout.report_dir)
