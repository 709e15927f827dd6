"""The figures the measuring tools print, each against a count made by hand: kernels and bytes of
small hand-written optimized HLO modules (minilm_jax/hlo_kernels.py), the paper's FLOPs of a tiny
config, an AOT report's peak and budget, the roofline, the copy bandwidth, a sweep's projected
hours, a population's tokens/s, and the device check's verdicts (minilm_jax/device_check)."""

from __future__ import annotations

import itertools
import types

import jax
import numpy as np
import pytest

from minilm_jax import bench_steps
from minilm_jax.hlo_kernels import PARTS, part_of, step_kernels

ELEMENTWISE = """
%exp8 (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %e = f32[8]{0} exponential(%p)
}

%exp20 (q: f32[20]) -> f32[20] {
  %q = f32[20]{0} parameter(0)
  ROOT %e2 = f32[20]{0} exponential(%q)
}

%no_launch (a: f32[8]) -> pred[] {
  %a = f32[8]{0} parameter(0)
  ROOT %c = pred[] constant(true)
}
"""
TRIPS = 'backend_config={"known_trip_count":{"n":"3"}}'
# A dispatch loop of 3 steps whose body runs one fusion and an inner loop of 3 trips (a fusion).
LOOPS = f"""HloModule loops, is_scheduled=true
{ELEMENTWISE}
%inner_body (b: f32[8]) -> f32[8] {{
  %b = f32[8]{{0}} parameter(0)
  ROOT %inner_exp = f32[8]{{0}} fusion(%b), kind=kLoop, calls=%exp8
}}

%step (d: f32[8]) -> f32[8] {{
  %d = f32[8]{{0}} parameter(0)
  %once = f32[8]{{0}} fusion(%d), kind=kLoop, calls=%exp8
  ROOT %inner = f32[8]{{0}} while(%once), condition=%no_launch, body=%inner_body, {TRIPS}
}}

ENTRY %main (p0: f32[8], p1: f32[20]) -> (f32[8], f32[20]) {{
  %p0 = f32[8]{{0}} parameter(0)
  %p1 = f32[20]{{0}} parameter(1)
  %dispatch = f32[8]{{0}} while(%p0), condition=%no_launch, body=%step, {TRIPS}
  %big = f32[20]{{0}} fusion(%p1), kind=kLoop, calls=%exp20
  ROOT %r = (f32[8]{{0}}, f32[20]{{0}}) tuple(%dispatch, %big)
}}
"""


def test_only_the_entry_dispatch_loop_counts_once():
    """Not only the entry's loop: an inner loop whose trip count equals steps_per_dispatch still
    runs its body 3 times a step: once (1) + inner_exp (3) + big (1) = 5 launches."""
    kernels = step_kernels(LOOPS, steps_per_dispatch=3)
    assert {launch.name: launch.times for launch in kernels.launches} == {
        "once": 1, "inner_exp": 3, "big": 1}
    assert kernels.total == 5


def test_bytes_per_part_and_largest_weigh_each_launch_by_its_times():
    """Bytes by part, and the largest launches, weigh each launch by its runs: an f32[8]
    elementwise fusion moves 32 + 32 bytes, run 3 times = 192 > the f32[20] fusion's 80 + 80."""
    kernels = step_kernels(LOOPS, steps_per_dispatch=3)
    assert kernels.bytes_by_part() == {**{p: 0 for p in PARTS}, "other": 64 * (1 + 3) + 160}
    assert [launch.name for launch in kernels.largest(2)] == ["inner_exp", "big"]


BYTES = """HloModule bytes, is_scheduled=true

%two (v: f32[1000]) -> (f32[50], f32[10]) {
  %v = f32[1000]{0} parameter(0)
  %a = f32[50]{0} slice(%v), slice={[0:50]}
  %b = f32[10]{0} slice(%v), slice={[50:60]}
  ROOT %t = (f32[50]{0}, f32[10]{0}) tuple(%a, %b)
}

%positive (x: f32[64]) -> pred[64] {
  %x = f32[64]{0} parameter(0)
  %z = f32[] constant(0)
  %zs = f32[64]{0} broadcast(%z), dimensions={}
  ROOT %gt = pred[64]{0} compare(%x, %zs), direction=GT
}

ENTRY %main (p0: f32[1000], p1: f32[64]) -> ((f32[50], f32[10]), pred[64]) {
  %p0 = f32[1000]{0} parameter(0)
  %p1 = f32[64]{0} parameter(1)
  %split = (f32[50]{0}, f32[10]{0}) fusion(%p0), kind=kLoop, calls=%two
  %mask = pred[64]{0} fusion(%p1), kind=kLoop, calls=%positive
  ROOT %r = ((f32[50]{0}, f32[10]{0}), pred[64]{0}) tuple(%split, %mask)
}
"""


def test_bytes_of_a_two_output_loop_fusion_and_of_a_pred_array():
    """A loop fusion reads as many operand elements as its largest output, and a pred element is
    a byte: split writes 4 * (50 + 10) and reads 50 of p0's floats (its largest output);
    mask writes 64 one-byte preds and reads 64 floats."""
    moved = {launch.name: launch.bytes for launch in step_kernels(BYTES).launches}
    assert moved == {"split": 4 * 60 + 4 * 50, "mask": 64 + 4 * 64}


TPU = """HloModule tpu, is_scheduled=true

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %c = f32[] add(%a, %b)
}

ENTRY %main (p0: f32[8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  %e = f32[8]{0} exponential(%p0)
  %ar = f32[8]{0} all-reduce-start(%e), replica_groups={}, to_apply=%add
  ROOT %ard = f32[8]{0} all-reduce-done(%ar)
}
"""


def test_an_asynchronous_collective_is_a_tpu_program():
    """On a TPU an asynchronous collective's ``-start`` is a program: the all-reduce-start is the
    one program the core runs here (the unfused exponential and the -done half are not)."""
    kernels = step_kernels(TPU, platform="tpu")
    assert [(launch.name, launch.opcode) for launch in kernels.launches] == [
        ("ar", "all-reduce-start")]


def test_encoder_parts_read_from_jax_op_names():
    """A scope is matched inside JAX's transform names too: JAX names the encoder's forward ops
    ``jvp(encoder)`` and its backward ops ``transpose(jvp(encoder))`` (seen in a compiled grad)."""
    assert part_of("jit(train_step)/jvp(encoder)/layer_0/dot_general") == "encoder forward"
    assert part_of("jit(train_step)/transpose(jvp(encoder))/layer_0/mul") == "encoder backward"
    assert part_of("jit(train_step)/optimizer/add") == "optimizer"


def test_paper_flops_of_a_tiny_config_by_hand():
    """The paper's FLOPs (the softmax term 3AT^2, too small for the XLA comparisons to see) at
    E=H=16, I=32, L=1, A=2, V=300, T=4, term by term: embeddings 2TVE + 2TEH, attention 6TH^2 +
    2T^2H + 3AT^2, FFN 4THI, logits 2THV."""
    from minilm_jax.model import accounting
    from minilm_jax.model.sizes import resolve_point

    embeddings = 2 * 4 * 300 * 16 + 2 * 4 * 16 * 16  # 38,400 + 2,048
    attention = 6 * 4 * 256 + 2 * 16 * 16 + 3 * 2 * 16  # 6,144 + 512 + 96
    ffn, logits = 4 * 4 * 16 * 32, 2 * 4 * 16 * 300  # 8,192; 38,400
    forward = 40_448 + 6_752 + 8_192 + 38_400
    assert embeddings + attention + ffn + logits == forward
    cfg = resolve_point("E16-H16-I32-L1-A2-V300")
    assert accounting.paper_train_flops_per_sequence(cfg, seq_len=4) == 3 * forward


def _report(peak_bytes, **memory):
    from minilm_jax.aot import GIB, AotReport

    return AotReport(point="p", target="cpu", platform="cpu", mesh={"data": 1, "fsdp": 1},
                     batch_shape=[1, 1, 1, 1], params_total=1, params_embedding=0,
                     params_non_embedding=1, state_bytes_per_device=GIB, state_bytes_global=GIB,
                     flops_per_device=1.0, flops_global_lowered=None,
                     analytic_flops_per_device=1.0, lower_seconds=0.1, compile_seconds=0.1,
                     memory=memory or None, peak_bytes=peak_bytes)


def test_the_memory_budget_is_in_gibibytes():
    """The budget is in GiB, not GB: a 1.5 GiB peak (1.61e9 bytes) is within a 1.55 GiB budget."""
    from minilm_jax.aot import GIB, check_budget
    from minilm_jax.errors import UserError

    check_budget(_report(int(1.5 * GIB)), 1.55)
    with pytest.raises(UserError):
        check_budget(_report(int(1.5 * GIB)), 1.45)


def test_aot_peak_subtracts_the_donated_bytes():
    """The donated (aliased) bytes are counted once: peak = arguments + outputs - aliased +
    temporaries + code, on a tiny step compiled for one CPU device (its donated state aliases its
    outputs)."""
    from minilm_jax.aot import compile_train_step
    from minilm_jax.configs.pretrain import get_config

    config = get_config("E16-H16-I32-L1-A2-V300")
    config.mesh.data, config.mesh.fsdp, config.train.batch_size = 1, 1, 2
    report = compile_train_step(config, jax.devices()[:1], largest=0)
    m = report.memory
    assert m["alias"] > 0
    assert report.peak_bytes == (m["argument"] + m["output"] - m["alias"] + m["temp"]
                                 + m["generated_code"])


def test_roofline_names_the_side_that_bounds_the_step():
    """The roofline names the slower side: 1 GB at 10 GB/s (0.1 s) beside 1 GFLOP at 1 TFLOP/s (1
    ms) is memory bound; 1e12 FLOPs at that peak (1 s) is compute bound."""
    from minilm_jax.train.throughput import roofline

    memory = roofline(0.5, {"flops": 1e9, "bytes_accessed": 1e9}, 1e12, 1e10)
    assert memory["bound"] == "memory" and memory["roofline_ms"] == pytest.approx(100.0)
    compute = roofline(2.0, {"flops": 1e12, "bytes_accessed": 1e9}, 1e12, 1e10)
    assert compute["bound"] == "compute" and compute["roofline_ms"] == pytest.approx(1000.0)


def test_copy_bandwidth_counts_bytes_read_and_written(monkeypatch):
    """A copy reads and writes its bytes: a 1 MiB float32 copy timed at 0.5 s moves 2 MiB: 4
    MiB/s."""
    from minilm_jax.train import throughput

    clock = itertools.count(0.0, 0.5)
    monkeypatch.setattr(throughput, "time", types.SimpleNamespace(
        perf_counter=lambda: next(clock)))
    assert throughput.measured_copy_bandwidth.__wrapped__(1, 2) == pytest.approx(4 * 2 ** 20)


def test_sweep_hours_count_every_run_of_a_point(monkeypatch, capsys):
    """A point's hours count each of its runs: 3.6e6 tokens at 1,000 tokens/s is 1 h a run; three
    runs of a and one of b project 3 h and 1 h, 4 h in all."""
    import minilm_jax.settings.recipes
    import minilm_jax.sweep

    runs = [types.SimpleNamespace(point=p) for p in ("a", "a", "b", "a")]
    monkeypatch.setattr(minilm_jax.settings.recipes, "load_config_file", lambda spec: spec)
    monkeypatch.setattr(minilm_jax.sweep, "expand", lambda spec: runs)
    monkeypatch.setattr(bench_steps, "bench_ours",
                        lambda *a, **k: {"tokens_per_sec": 1000.0, "mfu": 0.1})
    got = bench_steps.project_sweep("spec", 8, 2, "float32", 1, tokens_per_run=3.6e6)
    assert [(r["point"], r["hours"]) for r in got["rows"]] == [
        ("a", pytest.approx(3.0)), ("b", pytest.approx(1.0))]
    assert got["hours"] == pytest.approx(4.0)


def test_population_tokens_per_second_count_every_member(monkeypatch):
    """A population's tokens/s count every member: 5 dispatches of 1 step, 4 sequences of 128 tokens
    for each of 2 members in 2 s: 2,560 tokens/s, 1,280 per member."""
    import minilm_jax.train.program

    program = types.SimpleNamespace(batch_shape=(2, 1, 4, 128), train_step=None,
                                    state=types.SimpleNamespace(init=lambda: {}))
    monkeypatch.setattr(minilm_jax.train.program, "population_program", lambda *a: program)
    monkeypatch.setattr(bench_steps, "timed",
                        lambda *a: ({"loss": np.ones((1, 2))}, 2.0, 5))
    monkeypatch.setattr(bench_steps, "step_roofline", lambda *a: {})
    monkeypatch.setattr(bench_steps, "abstract_like", lambda state: state)
    monkeypatch.setattr(bench_steps, "measured_matmul_peak", lambda dtype: 1e12)
    row = bench_steps.bench_members("E16-H16-I32-L1-A2-V300", 2, 4, 1, "float32", 1, "vmap")
    assert row["tokens_per_sec"] == pytest.approx(2560.0)
    assert row["tokens_per_sec_per_member"] == pytest.approx(1280.0)


def _target(limit, at_least):
    from minilm_jax.device_check.targets import Target

    return Target("kernels_per_step", "kernels per step", limit, at_least, str)


def test_a_value_at_its_limit_meets_the_target():
    """A value at its limit meets the target: 60 kernels meet "<= 60", 61 do not; 40 tokens/s meet
    ">= 40"."""
    from minilm_jax.device_check.table import target_rows
    from minilm_jax.device_check.targets import Figure

    fig = Figure("f", (), 1.0, 1.0, (_target(60, False),), dict)
    met = [target_rows([fig], {("f", "now"): {"kernels_per_step": n}})[0]["met"]
           for n in (60, 61)]
    assert met == [True, False]
    rate = Figure("g", (), 1.0, 1.0, (_target(40, True),), dict)
    assert target_rows([rate], {("g", "now"): {"kernels_per_step": 40}})[0]["met"] is True


def test_sweep_verdict_waits_for_the_points_both_sides_measured():
    """The sweep's verdict waits until both sides measured every point: this tree measured 3 of 3
    points, the baseline 2; the 2 shared points' 2 h are under the 3 h target, so the verdict is not
    known."""
    from minilm_jax.device_check.table import sweep_row
    from minilm_jax.device_check.targets import Sweep

    sweep = Sweep("s", "spec", 3, 0, (), 1.0, _target(3.0, False))
    measured = {"now": [("a", 1.0), ("b", 1.0), ("c", 1.5)], "baseline": [("a", 2.0), ("b", 2.0)]}
    row = sweep_row(measured, 3, sweep)
    assert (row["now"], row["baseline"], row["met"]) == (2.0, 4.0, None)
    measured["baseline"].append(("c", 2.0))
    assert sweep_row(measured, 3, sweep)["met"] is False  # 3.5 h of all 3 points
