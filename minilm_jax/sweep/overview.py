"""``minilm-sweep status --root R``: every unit of a sweep with its state, step, worker, elapsed
time and failure, and what a claim left unrefreshed says of its worker (stopped or hung, or not
running), read from the root (``status/``, the claims, each unit's folder) while the workers run
or after."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections

from minilm_jax.storage import RunPath, is_remote, relative_location
from minilm_jax.train.records import is_done
from minilm_jax.train.run_log import duration

from .layout import SweepLayout
from .worker_loop import SweepRunner


def last_step(workdir: RunPath) -> int | None:
    """The newest step in ``workdir/metrics.jsonl`` (read from its end), or None."""
    path = workdir / "metrics.jsonl"
    try:
        if is_remote(path):
            tail = path.read_bytes()[-4096:]
        else:
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                tail = f.read()
    except OSError:
        return None
    lines = tail.decode(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def unit_rows(sweep: ml_collections.ConfigDict, layout: SweepLayout) -> list[dict[str, Any]]:
    """One row per (run, stage): state (done, running, silent, stale, failed, interrupted,
    pending), step, worker, elapsed seconds, error, and what a claim no worker keeps fresh says
    of its process (``claim``: ``stale: pid P alive, silent for N s``, ``gone: pid P not
    running``, :meth:`ClaimBoard.note`). ``running``: its worker is alive (same host) or beats;
    ``silent``: its worker (another host) missed three heartbeats, and is taken over if it stays
    silent for the stale time; ``stale``: its claim was not refreshed for the stale time (a
    stopped or hung worker of this host, or one of another host) and is taken over by the next
    worker that wants the unit; ``interrupted``: recorded running, nobody holds it (a killed
    worker: a live worker takes it over)."""
    runner = SweepRunner(sweep, layout.root)
    recorded = runner.status.read()
    claims = runner.claims.claims()
    now, rows = time.time(), []
    for run in runner.runs:
        for stage, workdir, _, _ in runner.stages(run):
            entry = recorded.get(run.name, {}).get(stage, {})
            claim = claims.get(relative_location(workdir, layout.root)) or {}
            holder = claim if claim.get("verdict") in ("held", "silent") else None
            if is_done(workdir / "summary.json"):
                state = "done"
            elif holder:  # a holder of this host is alive; one elsewhere may have gone quiet
                state = "silent" if holder["verdict"] == "silent" else "running"
            elif claim.get("verdict") == "stale":
                state = "stale"
            elif entry.get("state") in ("failed", "interrupted"):
                state = entry["state"]
            elif entry.get("state") == "running":
                state = "interrupted"  # recorded running, nobody holds it: its worker is gone
            else:
                state = "pending"
            rows.append({"run": run.name, "stage": stage, "state": state,
                         "step": last_step(workdir) if state != "pending" else None,
                         "worker": claim.get("worker", "") if holder or state == "stale"
                         else entry.get("worker") or claim.get("worker", ""),
                         "elapsed": now - float(claim.get("since", now))
                         if holder or state == "stale" else None,
                         "error": (entry.get("error") or "").splitlines()[0][:160]
                         if state == "failed" else "",
                         "silent_for": (holder or {}).get("silent_for") or None,
                         "claim": claim.get("note", "") if state != "done" else ""})
    return rows


def print_status(sweep: ml_collections.ConfigDict, layout: SweepLayout) -> list[dict[str, Any]]:
    """Print the table of :func:`unit_rows`, a count per state, and how to retry a failed unit."""
    rows = unit_rows(sweep, layout)
    width = max([len(r["run"]) for r in rows] + [3])
    swidth = max([len(r["stage"]) for r in rows] + [5])
    print(f"{'run':<{width}}  {'stage':<{swidth}}  {'state':<11} {'step':>7}  "
          f"{'elapsed':>8}  worker")
    for r in rows:
        step = "" if r["step"] is None else str(r["step"])
        elapsed = "" if r["elapsed"] is None else duration(r["elapsed"])
        print(f"{r['run']:<{width}}  {r['stage']:<{swidth}}  {r['state']:<11} {step:>7}  "
              f"{elapsed:>8}  {r['worker']}")
        if r["error"]:
            print(f"{'':<{width}}  error: {r['error']}")
        if r["silent_for"]:
            print(f"{'':<{width}}  no heartbeat for {duration(r['silent_for'])}: its worker may "
                  "be gone (taken over once silent for the stale time)")
        if r["claim"]:
            print(f"{'':<{width}}  claim {r['claim']}: the next worker that wants the unit "
                  "takes it over")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(f"{len(rows)} units: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        print(f"retry one alone: python -m minilm_jax.sweep --config=... --root={layout.root} "
              f"--only={failed[0]['run']} --stage={failed[0]['stage']}")
    return rows
