"""Every GPU performance target in one command, on this tree and on a baseline commit side by side.

    bash launch/device_check.sh [BASELINE_COMMIT]     # default: the commit of the H100 figures
    DEVICE_CHECK_QUICK=1 bash launch/device_check.sh HEAD   # tiny sizes on a CPU, same code path

Prerequisites first, the first failure one ``error:`` line and exit status 2: git and the baseline
commit, checked out with ``git worktree add`` into a temporary folder (or
``DEVICE_CHECK_BASELINE_TREE``, a folder of the baseline's files, for a copy without ``.git``);
``configs/`` in both trees; JAX's version and backend (a GPU unless quick); every
``jax.experimental.pallas`` name the kernels of both trees use, present (and, in the quick check
before a GPU run, not deprecated: gone in the next release); and
``python -m minilm_jax.bench`` of both trees starting, with the options used here.

Then each figure runs ``python -m minilm_jax.bench`` of each tree in a process of its own
(``PYTHONPATH`` and ``minilm_jax.configs`` that tree's: :func:`map_configs`), baseline first, under
a timeout and an overall budget (``DEVICE_CHECK_BUDGET_S``, default 480 s) that skips what would
not fit; a budget in which nothing fits is refused (exit status 2, ``$OUT`` untouched) before
the prerequisites, or after them when they left too little (:func:`refuse_small_budget`). Kernels per step are counted (:func:`minilm_jax.hlo_kernels.kernels_per_step`) in the train step
XLA dumps, so a baseline that does not count them is measured alike. The table, JSON and log go to
``$OUT`` (else ``runs/device_check/``). Exit status 0 when every figure was measured on both
sides, else 1: a target not met is a measurement, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from minilm_jax.device_check.measuring import measure, measure_sweep
from minilm_jax.device_check.prerequisites import check_prerequisites, probe
from minilm_jax.device_check.table import sweep_row, table, target_rows
from minilm_jax.device_check.targets import Sweep, figures, sweep_points, sweep_spec
from minilm_jax.device_check.trees import REPO, baseline_side, git, map_configs, now_side
from minilm_jax.errors import UserError, one_line

DEFAULT_BASELINE = "22827200a7d2838c88376f057af1d38fd85114ad"  # the tree before the encoder's kernels (docs/performance.md)


def run(baseline: str, quick: bool, budget_s: float, out_dir: Path) -> int:
    start = time.monotonic()
    deadline = start + budget_s
    options = ["--point", "--members", "--sweep", "--sweep_seeds", "--sweep_limit", "--json",
               "--dtype", "--min_seconds", "--loss_impl", "--attention"]
    now, base, scratch = now_side(), None, Path(tempfile.mkdtemp(prefix="device_check-"))
    try:
        figs, sweep = figures(quick, scratch)
        refuse_small_budget(budget_s, least_budget(sweep))  # before the prerequisites' minute
        base = baseline_side(baseline, scratch)
        sides = [base, now]
        found = check_prerequisites(base, now, quick, options,
                                    now_options=["flash", "both", "--layer", "--norm", "--profile"])
        print(f"device check: {found['device']}, jax {found['jax']} ({found['backend']}); "
              f"baseline {base.label}, now {now.label}; budget {budget_s:.0f} s"
              f"{'; quick: tiny sizes' if quick else ''}", flush=True)
        map_configs(str(REPO))
        total = sweep_points(sweep_spec(sweep, REPO))
        refuse_small_budget(budget_s, least_budget(sweep), deadline - time.monotonic())
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "device_check.log", "w") as log:
            values, runs = measure(sides, figs, sweep.min_s, deadline, scratch, log)
            measured, sweep_runs = measure_sweep(sides, sweep, deadline, scratch, log)
    finally:
        if base is not None and base.tree.parent == scratch:
            git("worktree", "remove", "--force", str(base.tree))
        shutil.rmtree(scratch, ignore_errors=True)
    rows = target_rows(figs, values) + [sweep_row(measured, total, sweep)]
    shows = {t.key: t.show for f in figs for t in f.targets} | {"hours": sweep.target.show}
    text = table(rows, shows, sides)
    complete = all(r[side] is not None for r in rows
                   for side in r.get("sides", ("baseline", "now")))
    from minilm_jax.storage import atomic_write_json

    (out_dir / "device_check.txt").write_text(text + "\n")
    atomic_write_json(out_dir / "device_check.json", {
        "device": found["device"], "jax": found["jax"], "backend": found["backend"],
        "quick": quick, "budget_s": budget_s, "elapsed_s": round(time.monotonic() - start, 1),
        "baseline": {"asked": baseline, "commit": base.commit, "label": base.label},
        "now": {"commit": now.commit, "label": now.label,
                "bench_args": os.environ.get("DEVICE_CHECK_NOW_ARGS", "")},
        "figures": rows, "runs": runs + sweep_runs, "complete": complete})
    print(f"\n{text}\n\n{out_dir / 'device_check.json'}: {time.monotonic() - start:.0f} s of "
          f"{budget_s:.0f}{'' if complete else '; some figures were not measured (see runs)'}")
    return 0 if complete else 1


def least_budget(sweep: Sweep) -> float:
    """The least time in which anything can be measured: the shortest measurement is this
    tree's sweep projection, started only with at least its least time and half the time left
    (:func:`~minilm_jax.device_check.measuring.measure_sweep`); every figure needs more."""
    return 2 * sweep.min_s


def refuse_small_budget(budget_s: float, least_s: float, left_s: float | None = None) -> None:
    """Refuse, before ``$OUT`` is touched, a budget in which nothing could be measured: the
    budget itself (``left_s`` None), or what the prerequisites left of it."""
    if left_s is None and budget_s < least_s:
        raise UserError(f"DEVICE_CHECK_BUDGET_S={budget_s:g}: too small to measure anything (the "
                        f"shortest measurement needs {least_s:.0f} s, besides the prerequisites' "
                        "checks); nothing was run and OUT is untouched")
    if left_s is not None and left_s < least_s:
        raise UserError(f"DEVICE_CHECK_BUDGET_S={budget_s:g}: the prerequisites' checks took "
                        f"{budget_s - left_s:.0f} s and left {max(left_s, 0):.0f} s, less than "
                        f"the {least_s:.0f} s the shortest measurement needs; nothing was measured "
                        "and OUT is untouched")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"error: {self.prog}: {message} (--help lists the options)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    """The command (argparse alone: a missing package is a prerequisite the command reports)."""
    parser = _Parser(prog="bash launch/device_check.sh", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", nargs="?", default=DEFAULT_BASELINE,
                        help=f"the commit measured beside this tree (default {DEFAULT_BASELINE})")
    parser.add_argument("--probe", nargs="*", help=argparse.SUPPRESS)  # a process's JAX
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe)))
        return 0
    budget = os.environ.get("DEVICE_CHECK_BUDGET_S", "480")
    if not re.fullmatch(r"\d+(\.\d*)?", budget) or float(budget) <= 0:
        print(f"error: DEVICE_CHECK_BUDGET_S={budget!r}: expected seconds > 0", file=sys.stderr)
        return 2
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this process never holds the accelerator
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the run, remove the worktree
    try:
        return run(args.baseline, os.environ.get("DEVICE_CHECK_QUICK", "0") == "1", float(budget),
                   Path(os.environ.get("OUT") or REPO / "runs" / "device_check"))
    except (UserError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
