"""``launch/device_check.sh``: its CPU quick mode end to end against ``HEAD`` (every figure measured
on both sides, numbers checked), and its prerequisites refusing in one ``error:`` line.

The command checks the baseline out with ``git worktree add``, so these tests run it in a
throwaway repository: a clone of this one (HEAD's commits) holding this working tree's files, so
that "now" is the tree as it is (uncommitted changes included) and the baseline ``HEAD`` is the
last commit, as when the command runs in a checkout with work in progress."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilm_jax.device_check.measuring import printed_sweep_rows, run_bench
from minilm_jax.device_check.prerequisites import pallas_names, pallas_problem
from minilm_jax.device_check.trees import Side

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="needs git and this repository's history")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A clone of this repository (sharing its objects) whose files are this working tree's."""
    copy = tmp_path / "repo"
    git(tmp_path, "clone", "--quiet", "--shared", "--no-checkout", str(REPO), str(copy))
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    git(copy, "read-tree", "HEAD")  # the index of HEAD: uncommitted changes show as such
    return copy


def run_command(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "launch/device_check.sh", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "DEVICE_CHECK_QUICK": "1",
                               **env})


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_quick_mode_measures_every_figure_on_both_sides(repo_copy, tmp_path):
    out = tmp_path / "out"
    result = run_command(repo_copy, "HEAD", OUT=str(out))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((out / "device_check.json").read_text())
    assert report["quick"] and report["complete"]
    head = git(repo_copy, "rev-parse", "HEAD").strip()
    assert report["baseline"]["commit"] == report["now"]["commit"] == head
    assert report["baseline"]["label"] == head[:12]
    # one run (tokens/s, kernels), the same with flash attention (this tree only: the baseline
    # has no such path), two members (tokens/s, bytes), the MFU row, the sweep
    assert [row["key"] for row in report["figures"]] == [
        "tokens_per_sec", "kernels_per_step", "tokens_per_sec", "kernels_per_step",
        "tokens_per_sec", "bytes_per_member", "mfu", "hours"]
    flash = report["figures"][2:4]
    assert all(row["figure"].endswith("flash attention") and row["sides"] == ["now"]
               and row["baseline"] is None for row in flash)
    for row in report["figures"]:
        for side in row.get("sides", ("baseline", "now")):
            assert isinstance(row[side], (int, float)) and row[side] > 0, (row, side)
        if row["target"] is None:  # kernels per step of the default step: counted, no target
            assert row["key"] == "kernels_per_step" and row["met"] is None, row
            continue
        expected = row["now"] >= row["target"] if row["at_least"] else row["now"] <= row["target"]
        assert row["met"] == expected, row
    kernels = report["figures"][1]
    assert all(float(kernels[s]).is_integer() for s in ("baseline", "now"))
    assert float(flash[1]["now"]).is_integer() and flash[1]["now"] != kernels["now"]
    assert all(0 < report["figures"][6][s] < 1 for s in ("baseline", "now"))  # MFU, a fraction
    sweep = report["figures"][7]
    assert sweep["points"] == {"total": 2, "both": 2, "now": 2, "baseline": 2}
    assert {run["status"] for run in report["runs"]} == {"ok"} and len(report["runs"]) == 9
    # the quick mode's MFU figure is the one run's point with the same options: each side's
    # bench ran once for both, the MFU read from that run's JSON
    one_run = report["figures"][0]["figure"].split(":")[0]
    mfu_runs = [run for run in report["runs"] if "as base-large" in run["figure"]]
    assert [(run["side"], run.get("same_run_as")) for run in mfu_runs] == [
        ("baseline", one_run), ("now", one_run)]
    assert sum("same_run_as" in run for run in report["runs"]) == 2
    flash_runs = [run for run in report["runs"] if run["figure"].endswith("flash attention")]
    assert [run["side"] for run in flash_runs] == ["now"]
    # this tree's members measured both ways, the faster kept and said why (the baseline: auto)
    members_runs = {run["side"]: run for run in report["runs"] if "members" in run["figure"]}
    picked = members_runs["now"]
    assert "members_impl" not in members_runs["baseline"]
    assert set(picked["compared"]) == {"vmap", "map"}
    assert picked["compared"][picked["members_impl"]] == max(picked["compared"].values())
    assert report["figures"][4]["now"] == picked["compared"][picked["members_impl"]]

    # The kernels of "now" (counted in the step XLA dumped in the bench process) are those of the
    # same step compiled here and counted from compiled.as_text().
    from minilm_jax import bench_steps

    here = bench_steps.bench_ours("E16-H16-I32-L1-A2-V300", batch=2, steps=1, dtype="bfloat16",
                                  steps_per_dispatch=1, attention="einsum", min_seconds=0,
                                  loss_impl="kernel")
    assert kernels["now"] == here["kernels_per_step"]

    # The printed and written table hold every row with both sides' numbers.
    table = (out / "device_check.txt").read_text()
    assert table in result.stdout
    lines = table.splitlines()
    assert len(lines) == 9 and "baseline" in lines[0] and "now" in lines[0]
    for line, row in zip(lines[1:], report["figures"]):
        assert line.startswith(f"{row['figure']}: {row['what']}")
        assert "not measured" not in line and line.split()[-1] == (
            "-" if row["target"] is None else "yes" if row["met"] else "no")
        assert ("n/a" in line) == (row["baseline"] is None)
    assert f"{kernels['baseline']:.0f}" in lines[2] and f"{kernels['now']:.0f}" in lines[2]
    assert worktrees(repo_copy) == [f"worktree {repo_copy}"]  # the baseline's worktree is gone


def test_a_baseline_commit_not_in_the_repository_is_one_error_line(tmp_path):
    result = run_command(REPO, "0123456789abcdef0123", OUT=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: baseline commit '0123456789abcdef0123' is not in this repository"]
    assert not (tmp_path / "device_check.json").exists()


def test_a_pallas_name_this_jax_lacks_is_one_error_line(repo_copy, tmp_path):
    """A kernel module using a name Pallas does not have (and ``pl.dot``, deprecated in jax 0.10
    and gone in 0.11, the first device run's failure) stops the command before any measurement."""
    (repo_copy / "minilm_jax" / "model" / "old_kernel.py").write_text(
        "from jax.experimental import pallas as pl\n\n\n"
        "def kernel(x_ref, o_ref):\n"
        "    o_ref[...] = pl.dot(x_ref[...], x_ref[...])\n"
        "    pl.no_such_primitive(o_ref)\n")
    result = run_command(repo_copy, "HEAD", OUT=str(tmp_path))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: jax "), lines
    assert "now:minilm_jax/model/old_kernel.py:6 jax.experimental.pallas.no_such_primitive: " \
           "missing" in lines[0]
    assert "old_kernel.py:5 jax.experimental.pallas.dot:" in lines[0]
    assert "xent_kernel" not in lines[0]  # the project's own kernels use what this JAX has
    assert not (tmp_path / "device_check.json").exists()
    assert worktrees(repo_copy) == [f"worktree {repo_copy}"]


def test_pallas_names_resolve_aliases_and_nested_imports():
    source = ("import jax\nfrom jax.experimental import pallas as pl\n"
              "import jax.experimental.pallas as pallas_module\n\n\n"
              "def f():\n    from jax.experimental.pallas import triton as plgpu\n"
              "    return plgpu.CompilerParams, pl.BlockSpec, pl.tpu.VMEM, pallas_module.ds, "
              "jax.experimental.pallas.program_id, jax.numpy.dot\n")
    assert pallas_names(source) == {
        "jax.experimental.pallas": 2, "jax.experimental.pallas.triton": 7,
        "jax.experimental.pallas.triton.CompilerParams": 8,
        "jax.experimental.pallas.BlockSpec": 8, "jax.experimental.pallas.tpu": 8,
        "jax.experimental.pallas.tpu.VMEM": 8, "jax.experimental.pallas.ds": 8,
        "jax.experimental.pallas.program_id": 8}
    assert pallas_problem("jax.experimental.pallas.BlockSpec") is None
    assert pallas_problem("jax.experimental.pallas.no_such_name") == "missing"


def test_a_budget_too_small_to_measure_anything_is_refused_up_front(repo_copy, tmp_path):
    """A budget below the shortest measurement's least time (this tree's sweep projection starts
    with at least its least time and half the time left) is refused in one line before the
    prerequisites run: exit 2, an earlier check's files in OUT untouched, no worktree left."""
    from minilm_jax.device_check.targets import figures

    least = 2 * figures(True, tmp_path)[1].min_s
    out = tmp_path / "out"
    out.mkdir()
    earlier = {name: f"an earlier check's {name}\n" for name in
               ("device_check.json", "device_check.txt", "device_check.log")}
    for name, text in earlier.items():
        (out / name).write_text(text)
    start = time.monotonic()
    result = run_command(repo_copy, "HEAD", OUT=str(out), DEVICE_CHECK_BUDGET_S="3")
    took = time.monotonic() - start
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"error: DEVICE_CHECK_BUDGET_S=3: too small to measure anything (the shortest "
        f"measurement needs {least:.0f} s, besides the prerequisites' checks); nothing was run "
        "and OUT is untouched")
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        result.stderr.splitlines()[-1:] and "Traceback" not in result.stderr
    assert result.stdout == ""  # no prerequisite ran, nothing was measured
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier
    assert len(worktrees(repo_copy)) == 1 and took < 3 + least


def test_a_bench_run_past_its_timeout_is_killed_and_keeps_what_it_printed(tmp_path):
    """A stand-in tree whose bench prints one sweep row and hangs: the run ends at its timeout,
    killed with its process group, and the row it printed is read back."""
    package = tmp_path / "tree" / "minilm_jax"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "bench.py").write_text(
        "import subprocess, sys, time\n"
        "print('E16-H16-I32-L1-A2-V300   1,234 tokens/s  MFU   0.9%   2.500 h  | 3 seeds packed:"
        "   3,000 tokens/s   1.250 h (0.50x one seed)', flush=True)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n")
    side = Side("now", tmp_path / "tree", "stand-in")
    start = time.monotonic()
    with open(tmp_path / "log", "w") as log:
        status, seconds, output = run_bench(side, [], 3, log)
    assert status == "timed out after 3 s" and 3 <= seconds < 60 and time.monotonic() - start < 60
    assert printed_sweep_rows(output) == [("E16-H16-I32-L1-A2-V300", 1.25)]
    grandchild = int(output.splitlines()[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{grandchild}").exists() and \
            "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
        time.sleep(0.1)
    assert not Path(f"/proc/{grandchild}").exists() or \
        Path(f"/proc/{grandchild}/stat").read_text().split()[2] == "Z"


def test_the_full_check_holds_only_the_encoders_kernels_to_sixty(tmp_path):
    """On a GPU: the default step (the modules) and flash attention have their kernels counted
    with no target; the fused-layer figure (this tree only, profiled, its deviceless count too)
    is held to <= 60; both of this tree's one runs print their slowest kernels. The table shows
    "-" for a value with no target."""
    from minilm_jax.device_check.table import table, target_rows
    from minilm_jax.device_check.targets import figures

    figs, _ = figures(False, tmp_path)
    by_name = {fig.name: fig for fig in figs}
    default, fused = by_name["paper-1.25m one run"], by_name["paper-1.25m one run, fused layer"]
    flash = by_name["paper-1.25m one run, flash attention"]
    limits = {fig.name: {t.key: t.limit for t in fig.targets} for fig in (default, fused, flash)}
    assert limits[default.name] == limits[flash.name] == {
        "tokens_per_sec": 40e6, "kernels_per_step": None, "kernels_deviceless": None}
    assert limits[fused.name] == {"tokens_per_sec": 40e6, "kernels_per_step": 60,
                                  "kernels_deviceless": 60}
    assert fused.args[:4] == ("--point", "paper-1.25m", "--layer", "fused")
    assert fused.sides == ("now",) and fused.deviceless and fused.dump
    assert default.now_args == fused.now_args == ("--profile", "15") and not flash.now_args
    large, norm = by_name["base-large one run"], by_name["base-large one run, nnx LayerNorm"]
    assert norm.args == (*large.args[:2], "--norm", "xla", *large.args[2:])
    assert norm.sides == ("now",) and [t.key for t in norm.targets] == ["mfu"]
    assert [f.name for f in figs].index(norm.name) > [f.name for f in figs].index(large.name)
    values = {(default.name, "now"): {"tokens_per_sec": 3e7, "kernels_per_step": 129},
              (fused.name, "now"): {"tokens_per_sec": 2e7, "kernels_per_step": 59}}
    rows = target_rows([default, fused], values)
    met = {(r["figure"], r["key"]): r["met"] for r in rows}
    assert met[(default.name, "kernels_per_step")] is None
    assert met[(fused.name, "kernels_per_step")] is True
    assert met[(fused.name, "tokens_per_sec")] is False
    shows = {t.key: t.show for f in (default, fused) for t in f.targets}
    sides = [Side("baseline", tmp_path, "b"), Side("now", tmp_path, "n")]
    lines = table(rows, shows, sides).splitlines()
    counted = next(line for line in lines if line.startswith(f"{default.name}: kernels per step "))
    assert counted.split()[-2:] == ["-", "-"] and "129" in counted
    held = next(line for line in lines if line.startswith(f"{fused.name}: kernels per step "))
    assert held.split()[-3:] == ["<=", "60", "yes"]
