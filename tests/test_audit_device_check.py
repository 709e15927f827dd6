"""Audit of the GPU device check and its benchmarks (minilm_jax/device_check/, minilm_jax/bench.py,
minilm_jax/bench_steps.py, minilm_jax/xent_bench.py), 2026-11-29: 45 mutants planted, 42 survived
the owning tests (2 of them equivalent). Each test here checks numbers against a hand count, with
the bench runs, subprocesses and clocks replaced by fakes: the budget each run is given and the
order and sides of the runs, the reuse of a run's JSON ("same_run_as"), the sweep projection's
halves, the targets' values and directions, the table's rows and cells, the prerequisites' option
checks, the trees' child environment, the bench command's options and figures, tokens/s and MFU,
the timing loop, a packed sweep's hours, the members table, and the output-layer bench's median.
The deviceless count's step is the bench's, its defaults included (found by the audit: an
equivalent survivor today, aot's own defaults where a figure gave no batch or dtype)."""

from __future__ import annotations

import io
import json
import subprocess
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from minilm_jax import bench_steps
from minilm_jax.device_check import __main__ as check_main
from minilm_jax.device_check import measuring, prerequisites, table, targets, trees
from minilm_jax.device_check.targets import Figure, Sweep, Target
from minilm_jax.device_check.trees import Side

POINT = "E16-H16-I32-L1-A2-V300"


def _sides(tmp_path: Path) -> list[Side]:
    return [Side("baseline", tmp_path / "base", "b"), Side("now", tmp_path / "now", "n")]


def _tokens(result: dict[str, Any]) -> dict[str, float]:
    return {"tokens_per_sec": result["ours"]["tokens_per_sec"]}


def _figure(name: str, args: tuple[str, ...], timeout_s: float, min_s: float,
            read: Callable[[dict[str, Any]], dict[str, float]] = _tokens, **more: Any) -> Figure:
    rate = Target("tokens_per_sec", "tokens/s", 10.0, True, str)
    return Figure(name, args, timeout_s, min_s, (rate,), read, **more)


class FakeBench:
    """Stands in for ``run_bench``: records (side, args, timeout, extra env), advances the
    scripted clock by ``takes`` seconds and writes ``result(side, args)`` to the ``--json``
    path (none when it returns None)."""

    def __init__(self, clock: list[float], takes: float,
                 result: Callable[[str, list[str]], dict | None], output: str = "") -> None:
        self.clock, self.takes, self.result, self.output = clock, takes, result, output
        self.calls: list[tuple[str, list[str], float, dict | None]] = []

    def __call__(self, side: Side, args: list[str], timeout: float, log: Any,
                 extra_env: dict[str, str] | None = None) -> tuple[str, float, str]:
        self.calls.append((side.name, list(args), timeout, extra_env))
        self.clock[0] += self.takes
        got = self.result(side.name, args)
        if got is not None:
            Path(args[args.index("--json") + 1]).write_text(json.dumps(got))
        return "ok", self.takes, self.output


def _scripted(monkeypatch: pytest.MonkeyPatch, fake: FakeBench) -> None:
    monkeypatch.setattr(measuring, "run_bench", fake)
    monkeypatch.setattr(measuring, "time", types.SimpleNamespace(monotonic=lambda: fake.clock[0]))


def test_each_run_gets_its_timeout_less_what_the_later_runs_need(tmp_path, monkeypatch):
    """Deadline 210 s, runs of 60 s, the sweep's least 5 s (kept twice): figures A (min 10 s) and B
    (min 20 s), on both sides, figure by figure, baseline first: A's baseline run keeps 10 + 20 +
    20 + 10 = 60 s: min(100, 210 - 60) = 100; A's now run at 60 s keeps 50: 100; B's baseline at
    120 s keeps 30: 60; B's now at 180 s keeps 10: exactly its least, 20 s, and still runs.
    A's own option and DEVICE_CHECK_NOW_ARGS reach this tree's runs only."""
    monkeypatch.setenv("DEVICE_CHECK_NOW_ARGS", "--extra 7")
    clock = [0.0]
    fake = FakeBench(clock, 60.0, lambda side, args: {
        "ours": {"tokens_per_sec": 1000.0 if side == "now" else 500.0}})
    _scripted(monkeypatch, fake)
    figs = [_figure("A", ("--point", "a"), 100.0, 10.0, now_args=("--own", "1")),
            _figure("B", ("--point", "b"), 100.0, 20.0)]
    with open(tmp_path / "log", "w") as log:
        values, runs = measuring.measure(_sides(tmp_path), figs, 5.0, 210.0, tmp_path, log)
    assert [(side, args[1], timeout) for side, args, timeout, _ in fake.calls] == [
        ("baseline", "a", 100.0), ("now", "a", 100.0), ("baseline", "b", 60.0), ("now", "b", 20.0)]
    assert [args[:-2] for _, args, _, _ in fake.calls] == [
        ["--point", "a"], ["--point", "a", "--own", "1", "--extra", "7"],
        ["--point", "b"], ["--point", "b", "--extra", "7"]]
    assert [r["status"] for r in runs] == ["ok"] * 4
    assert values[("B", "now")] == {"tokens_per_sec": 1000.0}
    assert values[("B", "baseline")] == {"tokens_per_sec": 500.0}


def test_a_run_left_less_than_its_least_is_skipped(tmp_path, monkeypatch):
    """Deadline 29 s: the one run keeps 2 * 5 s for the sweep and would get 19 s < its least 20 s:
    skipped, and the skip says 29 s were left and 10 s kept."""
    fake = FakeBench([0.0], 1.0, lambda side, args: {"ours": {"tokens_per_sec": 1.0}})
    _scripted(monkeypatch, fake)
    figs = [_figure("B", ("--point", "b"), 100.0, 20.0, sides=("now",))]
    values, runs = measuring.measure(_sides(tmp_path), figs, 5.0, 29.0, tmp_path, io.StringIO())
    assert fake.calls == [] and values == {}
    assert runs == [{"figure": "B", "side": "now", "status": "skipped: 29 s of the budget left, "
                     "10 s kept for what follows"}]


def test_a_figure_reads_an_earlier_run_of_the_same_command_only_when_it_may(tmp_path,
                                                                             monkeypatch):
    """C (dumped, with an option of this tree's) then D (same arguments, not dumped): D's baseline
    reads C's baseline JSON (same_run_as C, 0 s); D's now command lacks C's own option, so it runs.
    F (not dumped) then G (same command, dumped): G cannot read F's run, which dumped nothing.
    The deviceless count is this tree's only; the dumped kernels are counted per dumped run."""
    counter = iter(range(100, 200))
    fake = FakeBench([0.0], 1.0, lambda side, args: {
        "ours": {"tokens_per_sec": float(next(counter)), "mfu": 0.5}})
    _scripted(monkeypatch, fake)
    monkeypatch.setattr(measuring, "dumped_kernels", lambda folder: 42)
    deviceless: list[str] = []
    monkeypatch.setattr(measuring, "deviceless_kernels",
                        lambda side, *a: deviceless.append(side.name) or 7)
    mfu = (lambda r: {"mfu": r["ours"]["mfu"]})
    figs = [_figure("C", ("--point", "p"), 100.0, 1.0, dump=True, now_args=("--profile", "15"),
                    deviceless=True),
            _figure("D", ("--point", "p"), 100.0, 1.0, read=mfu),
            _figure("F", ("--point", "q"), 100.0, 1.0),
            _figure("G", ("--point", "q"), 100.0, 1.0, dump=True)]
    values, runs = measuring.measure(_sides(tmp_path), figs, 1.0, 1e6, tmp_path, io.StringIO())
    ran = [(r["figure"], r["side"], r.get("same_run_as")) for r in runs]
    assert ran == [("C", "baseline", None), ("C", "now", None), ("D", "baseline", "C"),
                   ("D", "now", None), ("F", "baseline", None), ("F", "now", None),
                   ("G", "baseline", None), ("G", "now", None)]
    assert runs[2]["seconds"] == 0.0 and len(fake.calls) == 7
    assert deviceless == ["now"]
    assert values[("C", "now")] == {"tokens_per_sec": 101.0, "kernels_per_step": 42,
                                    "kernels_deviceless": 7}
    assert values[("C", "baseline")] == {"tokens_per_sec": 100.0, "kernels_per_step": 42}
    assert values[("G", "now")] == {"tokens_per_sec": 106.0, "kernels_per_step": 42}


def test_a_members_run_reports_its_last_rows_pick_and_bytes_per_member(tmp_path):
    """--members_impl both: the run's last row is the one kept; the members figure reads its
    aggregate tokens/s and its bytes over its members (3.2e9 / 16 = 0.2 GB)."""
    rows = [{"impl": "vmap", "members": 16, "tokens_per_sec": 1.0, "bytes_per_step": 9e9,
             "compared": {"vmap": 1.0}, "picked_because": "first"},
            {"impl": "map", "members": 16, "tokens_per_sec": 2e8, "bytes_per_step": 3.2e9,
             "compared": {"vmap": 1.5e8, "map": 2e8}, "picked_because": "1.33x vmap's"}]
    assert measuring.picked_strategy({"rows": rows}) == {
        "members_impl": "map", "compared": {"vmap": 1.5e8, "map": 2e8},
        "picked_because": "1.33x vmap's"}
    figs, _ = targets.figures(False, tmp_path)
    members = next(f for f in figs if "members" in f.name)
    assert members.read({"rows": rows}) == {"tokens_per_sec": 2e8,
                                            "bytes_per_member": pytest.approx(2e8)}
    assert members.now_args == ("--members_impl", "both")


def test_the_full_checks_targets_and_their_directions(tmp_path):
    """Aggregate tokens/s >= 150M, bytes per member <= 0.25 GB, MFU >= 30%, the sweep <= 3 h;
    tokens/s shown in millions from 1e5 up."""
    figs, sweep = targets.figures(False, tmp_path)
    got = {(f.name, t.key): (t.limit, t.at_least) for f in figs for t in f.targets}
    assert got[("paper-1.25m x 16 members", "tokens_per_sec")] == (150e6, True)
    assert got[("paper-1.25m x 16 members", "bytes_per_member")] == (0.25e9, False)
    assert got[("base-large one run", "mfu")] == (0.30, True)
    assert (sweep.target.limit, sweep.target.at_least, sweep.min_s) == (3.0, False, 45.0)
    rate = figs[0].targets[0].show
    assert (rate(1e5), rate(99_999.0)) == ("0.10M", "99,999")


def _sweep(spec: str, min_s: float = 10.0) -> Sweep:
    return Sweep("s", spec, 3, 0, ("--dtype", "bfloat16"), min_s,
                 Target("hours", "hours", 3.0, False, str))


def test_the_sweep_runs_this_tree_first_with_half_and_the_baseline_on_its_points(tmp_path,
                                                                                 monkeypatch):
    """Deadline 100 s: this tree first (given second), its timeout half of 100 s, all points (no
    --sweep_limit), its spec as given (an absolute path); 2 points measured in 30 s; then the
    baseline with the 70 s left, limited to those 2 points."""
    spec = str(tmp_path / "spec.py")
    fake = FakeBench([0.0], 30.0, lambda side, args: {"rows": [
        {"point": "a", "hours": 1.0}, {"point": "b", "hours": 2.0}]})
    _scripted(monkeypatch, fake)
    measured, runs = measuring.measure_sweep(_sides(tmp_path), _sweep(spec), 100.0, tmp_path,
                                             io.StringIO())
    assert [(side, timeout) for side, _, timeout, _ in fake.calls] == [
        ("now", 50.0), ("baseline", 70.0)]
    now_args, base_args = fake.calls[0][1], fake.calls[1][1]
    assert now_args[:4] == ["--sweep", spec, "--sweep_seeds", "3"]
    assert "--sweep_limit" not in now_args
    assert base_args[base_args.index("--sweep_limit") + 1] == "2"
    assert measured == {"now": [("a", 1.0), ("b", 2.0)], "baseline": [("a", 1.0), ("b", 2.0)]}
    assert [r["points"] for r in runs] == [2, 2]


def test_this_trees_sweep_needs_its_least_in_half_the_time_left(tmp_path, monkeypatch):
    """Deadline 15 s, least 10 s: half of 15 s is too little for this tree's sweep (skipped);
    the baseline's gets the whole 15 s."""
    fake = FakeBench([0.0], 1.0, lambda side, args: {"rows": []})
    _scripted(monkeypatch, fake)
    _, runs = measuring.measure_sweep(_sides(tmp_path), _sweep("/s.py"), 15.0, tmp_path,
                                      io.StringIO())
    assert runs[0] == {"figure": "sweep", "side": "now",
                       "status": "skipped: 15 s of the budget left"}
    assert [(side, timeout) for side, _, timeout, _ in fake.calls] == [("baseline", 15.0)]


def test_the_deviceless_compile_reads_the_figures_options(tmp_path, monkeypatch):
    """aot of the figure's point with its dtype, batch (train and eval) and norm."""
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        seen.append(argv)
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"kernels_per_step": 33}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(measuring.subprocess, "run", fake_run)
    monkeypatch.setattr(measuring, "device_card", lambda: "h200")
    side = Side("now", tmp_path, "n")
    got = measuring.deviceless_kernels(side, ("--point", "p", "--dtype", "float32", "--batch",
                                              "8", "--norm", "xla"), tmp_path / "aot.json",
                                       io.StringIO())
    assert got == 33
    args = seen[0][seen[0].index("minilm_jax.aot") + 1:]
    assert args[:3] == ["--target", "cuda:h200", "--config=pretrain:p"]
    assert {"--config.model.dtype=float32", "--config.train.batch_size=8",
            "--config.eval.batch_size=8", "--config.model.norm_impl=xla"} <= set(args)


def test_the_deviceless_compile_is_the_step_the_bench_runs_defaults_included(tmp_path,
                                                                             monkeypatch):
    """Options a figure leaves out are the bench's own defaults (its help: batch 32, float32,
    one step per dispatch, einsum attention, auto loss, layer and norm), not aot's; the output
    layer and steps per dispatch a figure gives reach the compile too."""
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        seen.append(argv[argv.index("minilm_jax.aot") + 1:])
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"kernels_per_step": 5}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(measuring.subprocess, "run", fake_run)
    monkeypatch.setattr(measuring, "device_card", lambda: "a100")
    side = Side("now", tmp_path, "n")
    for bench_args in (("--point", "p", "--steps", "3"),
                       ("--point", "p", "--loss_impl", "kernel", "--steps_per_dispatch", "4",
                        "--attention", "flash", "--layer", "fused")):
        assert measuring.deviceless_kernels(side, bench_args, tmp_path / "aot.json",
                                            io.StringIO()) == 5
    default, given = ({a.split("=")[0]: a.split("=")[1] for a in args if a.startswith("--config.")}
                      for args in seen)
    assert default == {"--config.model.dtype": "float32", "--config.train.batch_size": "32",
                       "--config.eval.batch_size": "32", "--config.train.steps_per_dispatch": "1",
                       "--config.model.attention_impl": "einsum",
                       "--config.model.mlm_loss_impl": "auto", "--config.model.layer_impl": "auto",
                       "--config.model.norm_impl": "auto", "--config.mesh.data": "1"}
    assert given == {**default, "--config.train.steps_per_dispatch": "4",
                     "--config.model.attention_impl": "flash",
                     "--config.model.mlm_loss_impl": "kernel", "--config.model.layer_impl": "fused"}


def test_target_rows_and_the_table_cells(tmp_path):
    """A row's now and baseline values are each side's; a value this tree lacks is "not measured"
    and one a side does not run is "n/a"; a target with no value is "not known"."""
    both = _figure("X", (), 1.0, 1.0)
    only = _figure("Y", (), 1.0, 1.0, sides=("now",))
    rows = table.target_rows([both, only], {("X", "now"): {"tokens_per_sec": 12.0},
                                            ("X", "baseline"): {"tokens_per_sec": 8.0}})
    assert [(r["now"], r["baseline"], r["met"]) for r in rows] == [(12.0, 8.0, True),
                                                                   (None, None, None)]
    lines = table.table(rows, {"tokens_per_sec": lambda v: f"{v:.0f}"},
                        _sides(tmp_path)).splitlines()
    assert lines[1].split() == ["X:", "tokens/s", "8", "12", ">=", "10", "yes"]
    assert lines[2].split() == ["Y:", "tokens/s", "n/a", "not", "measured", ">=", "10", "not",
                                "known"]


def test_sweep_hours_at_the_limit_with_points_left_are_not_known():
    """2 of 3 points measured on both sides at exactly the 3 h target: the last point may still
    exceed it, so not known; 2 points both, 3 this tree's."""
    sweep = _sweep("/s.py")
    row = table.sweep_row({"now": [("a", 1.0), ("b", 2.0), ("c", 0.5)],
                           "baseline": [("a", 2.0), ("b", 2.0)]}, 3, sweep)
    assert (row["now"], row["met"]) == (3.0, None)
    assert row["points"] == {"total": 3, "both": 2, "now": 3, "baseline": 2}


def test_a_budget_the_prerequisites_left_exactly_enough_of_is_kept(monkeypatch, capsys, tmp_path):
    """Left 20 s of a 100 s budget, 20 s needed: measured; 19 s: refused. A budget of 0 s is
    refused by its form before anything runs."""
    check_main.refuse_small_budget(100.0, 20.0, 20.0)
    with pytest.raises(check_main.UserError, match="took 81 s and left 19 s"):
        check_main.refuse_small_budget(100.0, 20.0, 19.0)
    monkeypatch.setenv("DEVICE_CHECK_BUDGET_S", "0")
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(check_main, "run", lambda *a: pytest.fail("ran with a 0 s budget"))
    assert check_main.main([]) == 2
    assert capsys.readouterr().err == \
        "error: DEVICE_CHECK_BUDGET_S='0': expected seconds > 0\n"


class FakePopen:
    """``subprocess.Popen`` of the prerequisites: a probe's JSON, or each tree's bench help."""
    probe: dict[str, Any] = {}
    helps: dict[str, str] = {}

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        module = argv[4]
        self.out = json.dumps(self.probe) if module == "minilm_jax.device_check" else \
            self.helps[Path(argv[3]).name]
        self.returncode = 0

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        return self.out, ""

    def poll(self) -> int:
        return 0


def _trees(tmp_path: Path) -> tuple[Side, Side]:
    for name in ("base", "now"):
        (tmp_path / name / "minilm_jax").mkdir(parents=True)
        (tmp_path / name / "configs").mkdir()
        for file in ("__init__.py", "pretrain.py", "sweep.py"):
            (tmp_path / name / "configs" / file).write_text("")
    base, now = _sides(tmp_path)
    return base, now


def test_prerequisites_match_whole_options_and_this_trees_own(tmp_path, monkeypatch, capsys):
    """Both trees must offer ``--sweep`` itself (``--sweep_seeds`` is not it); ``--layer`` is this
    tree's alone. A deprecated Pallas name is fatal in the quick check, a note on a GPU."""
    import jax

    base, now = _trees(tmp_path)
    monkeypatch.setattr(prerequisites.subprocess, "Popen", FakePopen)
    lack = f"{now.tree}/minilm_jax/k.py:3 jax.experimental.pallas.dot: deprecated (gone)"
    monkeypatch.setattr(FakePopen, "probe", {"jax": jax.__version__, "backend": "gpu",
                                             "device": "H200", "pallas_lacks": [lack]})
    monkeypatch.setattr(FakePopen, "helps", {"base": "--point --sweep_seeds",
                                             "now": "--point --sweep --sweep_seeds --layer"})
    with pytest.raises(prerequisites.UserError) as err:
        prerequisites.check_prerequisites(base, now, False, ["--point", "--sweep"], ["--layer"])
    assert str(err.value) == "python -m minilm_jax.bench of the baseline tree (b) lacks --sweep"
    FakePopen.helps["base"] = "--point --sweep --sweep_seeds"
    found = prerequisites.check_prerequisites(base, now, False, ["--point", "--sweep"],
                                              ["--layer"])
    assert found["device"] == "H200"
    assert "note: now:minilm_jax/k.py:3 jax.experimental.pallas.dot" in capsys.readouterr().err
    with pytest.raises(prerequisites.UserError, match="now:minilm_jax/k.py:3 .*deprecated"):
        prerequisites.check_prerequisites(base, now, True, ["--point"], ["--layer"])


def test_a_trees_process_runs_its_own_code_first(tmp_path, monkeypatch):
    """PYTHONPATH: the tree, then what this process had; unbuffered output; this tree's extra
    bench options for its runs only."""
    monkeypatch.setitem(trees.CHILD_ENV, "PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("DEVICE_CHECK_NOW_ARGS", "--a 'b c'")
    base, now = _sides(tmp_path)
    env = trees.side_env(now, {"XLA_FLAGS": "--x"})
    assert env["PYTHONPATH"] == f"{now.tree}:/elsewhere"
    assert (env["PYTHONUNBUFFERED"], env["XLA_FLAGS"]) == ("1", "--x")
    assert (trees.side_args(now), trees.side_args(base)) == (["--a", "b c"], [])


def _ours(tokens_per_sec: float) -> dict[str, Any]:
    return {"point": POINT, "tokens_per_sec": tokens_per_sec, "step_ms": 2.0,
            "model_flops_per_sec": 3e9, "mfu": 0.25, "peak_flops_measured": 1.2e10,
            "memory": None, "bytes_per_step": 1e9, "xla_flops_per_step": 2e9,
            "kernels_per_step": 5, "achieved_bytes_per_sec": 5e11, "bandwidth_measured": 1e12,
            "roofline_ms": 1.0, "bound": "memory"}


def test_the_bench_command_runs_hf_on_half_the_steps_and_divides_ours_by_it(tmp_path,
                                                                             monkeypatch, capsys):
    """--steps 10 --hf: Hugging Face gets max(3, 10 // 2) = 5 steps; 1,000 tokens/s against 250
    is a 4.00x speed-up, printed and in the JSON; ours at 3 GFLOP/s and 25% MFU."""
    from minilm_jax import bench

    hf_steps: list[int] = []
    monkeypatch.setattr(bench_steps, "bench_ours", lambda *a, **k: _ours(1000.0))
    monkeypatch.setattr(bench_steps, "bench_hf", lambda point, batch, steps, threads, dtype:
                        hf_steps.append(steps) or {"tokens_per_sec": 250.0, "step_ms": 8.0,
                                                   "torch": "x"})
    out = tmp_path / "b.json"
    assert bench.main(["--point", POINT, "--steps", "10", "--hf", "--threads", "1",
                       "--json", str(out)]) == 0
    assert hf_steps == [5]
    assert json.loads(out.read_text())["speedup_tokens_per_sec"] == pytest.approx(4.0)
    printed = capsys.readouterr().out
    assert "speed-up   : 4.00x tokens/s" in printed
    assert "3.00 GFLOP/s  MFU  25.0%" in printed


def test_the_bench_command_passes_the_sweep_limit_and_refuses_profiling_a_sweep(monkeypatch,
                                                                               capsys):
    from minilm_jax import bench

    seen: list[tuple] = []
    monkeypatch.setattr(bench_steps, "project_sweep",
                        lambda *a: seen.append(a) or {"rows": [], "hours": 0.0})
    assert bench.main(["--sweep", "s.py", "--sweep_limit", "3", "--sweep_seeds", "2"]) == 0
    assert (seen[0][0], seen[0][6], seen[0][8]) == ("s.py", 3, 2)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--sweep", "s.py", "--profile", "3"])
    assert exit_info.value.code == 2 and len(seen) == 1
    assert "--profile profiles one run's step" in capsys.readouterr().err


def test_one_runs_tokens_per_second_and_mfu_by_hand(monkeypatch):
    """5 dispatches of 2 steps (--steps_per_dispatch 2) of 4 sequences of 128 tokens in 2 s:
    40 sequences, 20/s, 2,560 tokens/s, 200 ms a step, 10 steps timed; MFU against the bf16
    peak (1e12; the float32 one is 1e11)."""
    from minilm_jax.configs import pretrain as recipe
    from minilm_jax.model import accounting
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.settings.mlm_cap import effective_max_predictions

    program = types.SimpleNamespace(batch_shape=(2, 1, 4, 128), train_step=None,
                                    state=types.SimpleNamespace(init=lambda: {}))
    monkeypatch.setattr(bench_steps, "pretrain_program", lambda *a, **k: program)
    monkeypatch.setattr(bench_steps, "timed",
                        lambda *a: ({"loss": np.array([3.0, 2.0])}, 2.0, 5))
    roofline_k: list[int] = []
    monkeypatch.setattr(bench_steps, "step_roofline",
                        lambda fn, s, d, step_s, peak, k: roofline_k.append(k) or {})
    monkeypatch.setattr(bench_steps, "abstract_like", lambda state: state)
    monkeypatch.setattr(bench_steps, "device_memory_stats", lambda: None)
    monkeypatch.setattr(bench_steps, "measured_matmul_peak",
                        lambda dtype: {"bfloat16": 1e12, "float32": 1e11}[dtype])
    got = bench_steps.bench_ours(POINT, 4, 4, "bfloat16", 2, "einsum")
    cfg = resolve_point(POINT, dtype="bfloat16")
    flops = accounting.train_flops_per_sequence(
        cfg, num_predictions=effective_max_predictions(recipe.get_config(POINT).mlm, 128))
    assert got["tokens_per_sec"] == pytest.approx(2560.0)
    assert (got["step_ms"], got["steps_timed"]) == (pytest.approx(200.0), 10)
    assert got["mfu"] == pytest.approx(20 * flops / 1e12)
    assert got["model_flops_per_sec"] == pytest.approx(20 * flops)
    assert roofline_k == [2]


def test_timing_stops_at_the_first_round_reaching_min_seconds(monkeypatch):
    """--steps 4, 2 steps a dispatch: rounds of 2 dispatches after one compiling call; a clock
    reading 0, 0.5, 1.0 s: the second round ends exactly at min_seconds = 1 s and timing stops."""
    readings: Iterator[float] = iter([0.0, 0.5, 1.0, 3.0, 5.0])
    monkeypatch.setattr(bench_steps, "time",
                        types.SimpleNamespace(perf_counter=lambda: next(readings)))
    calls = [0]

    def step(state: int, data: Any) -> tuple[int, dict[str, int]]:
        calls[0] += 1
        return state + 1, {"step": state + 1}

    metrics, elapsed, dispatches = bench_steps.timed(step, 0, None, steps=4, k=2, min_seconds=1.0)
    assert (elapsed, dispatches, calls[0], metrics) == (1.0, 4, 5, {"step": 5})


def test_packed_seeds_hours_count_every_seed(monkeypatch, capsys):
    """2 runs of point a, 3.6e6 tokens each: one seed at 1,000 tokens/s is 2 h; 3 seeds packed at
    1,500 aggregate tokens/s: 3 * 3.6e6 / 1500 s = 2 h a run, 4 h, 2.00x one seed; the printed
    row reads back as 4 h."""
    import minilm_jax.settings.recipes
    import minilm_jax.sweep

    runs = [types.SimpleNamespace(point="a") for _ in range(2)]
    monkeypatch.setattr(minilm_jax.settings.recipes, "load_config_file", lambda spec: spec)
    monkeypatch.setattr(minilm_jax.sweep, "expand", lambda spec: runs)
    monkeypatch.setattr(bench_steps, "bench_ours",
                        lambda *a, **k: {"tokens_per_sec": 1000.0, "mfu": 0.1})
    monkeypatch.setattr(bench_steps, "bench_members",
                        lambda *a, **k: {"tokens_per_sec": 1500.0, "mfu": 0.2})
    got = bench_steps.project_sweep("spec", 8, 2, "float32", 1, tokens_per_run=3.6e6, seeds=3)
    (row,) = got["rows"]
    assert (row["one_seed_hours"], row["hours"]) == (pytest.approx(2.0), pytest.approx(4.0))
    assert row["cost_vs_one_seed"] == pytest.approx(2.0) and got["hours"] == pytest.approx(4.0)
    assert measuring.printed_sweep_rows(capsys.readouterr().out) == [("a", 4.0)]


def test_the_members_table_measures_both_ways_against_one_run(monkeypatch, capsys):
    """impl both, 2 members: vmap at 3,000 and map at 2,000 aggregate tokens/s against one run's
    1,000: vmap kept, 3.00x one run (the aggregate's ratio, not per member's 1.50x)."""
    monkeypatch.setattr(bench_steps, "bench_ours", lambda *a, **k: _ours(1000.0))
    rates = {"vmap": 3000.0, "map": 2000.0}
    asked: list[str] = []

    def members(point: str, n: int, batch: int, steps: int, dtype: str, k: int, impl: str,
                *rest: Any) -> dict[str, Any]:
        asked.append(impl)
        return {**_ours(rates[impl]), "members": n, "impl": impl,
                "tokens_per_sec_per_member": rates[impl] / n}

    monkeypatch.setattr(bench_steps, "bench_members", members)
    got = bench_steps.members_table(POINT, [2], 4, 1, "float32", 1, "both", 0.0)
    (row,) = got["rows"]
    assert asked == ["vmap", "map"]
    assert (row["impl"], row["vs_one_run"]) == ("vmap", pytest.approx(3.0))
    assert row["compared"] == {"vmap": 3000.0, "map": 2000.0}
    assert "     3.00x" in capsys.readouterr().out


def test_the_output_layer_benchs_time_is_the_median_after_a_warm_up(monkeypatch):
    """A warm-up call, then 3 timed calls of 1, 2 and 6 s: the median, 2,000 ms (the mean 3,000);
    a relative error is ||got - want|| / ||want||."""
    from minilm_jax import xent_bench

    readings = iter([0.0, 1.0, 1.0, 3.0, 3.0, 9.0])
    monkeypatch.setattr(xent_bench, "time",
                        types.SimpleNamespace(perf_counter=lambda: next(readings)))
    calls = [0]

    def fn() -> float:
        calls[0] += 1
        return 0.0

    assert xent_bench.median_ms(fn, (), 3) == pytest.approx(2000.0)
    assert calls[0] == 4
    assert xent_bench.relative_error([3.0, 4.0], [0.0, 5.0]) == pytest.approx(
        np.linalg.norm([3.0, -1.0]) / 5.0)
