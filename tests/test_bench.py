"""The throughput benchmark's pieces on tiny points (structure only; speed is never asserted)."""

import pytest

from minilm_jax import bench_steps, hlo_kernels

POINT = "E16-H16-I32-L1-A2-V300"
# The smoke sweep with POINT as its one base: the projection measures it with the program
# bench_ours compiled first, which the persistent compilation cache then holds (the smoke sweep's
# own first point, another compilation, cost a third of this file's CPU time).
TINY_SWEEP = '''
from minilm_jax.configs.sweep import smoke


def get_config():
    c = smoke()
    c.bases, c.vocab_size = ("tiny=E16-H16-I32-L1-A2",), 300
    return c
'''


def test_ours_and_sweep_projection(capsys, tmp_path):
    ours = bench_steps.bench_ours(POINT, batch=8, steps=2, dtype="float32",
                            steps_per_dispatch=1, attention="einsum", min_seconds=0.3)
    assert ours["tokens_per_sec"] > 0 and 0 < ours["mfu"] < 1
    # Timing goes on in whole rounds of `steps` until min_seconds have passed (a short window is noise).
    assert ours["seconds_timed"] >= 0.3 and ours["steps_timed"] % 2 == 0 and ours["steps_timed"] > 2
    # the step's memory figures: XLA's bytes and FLOPs, and the roofline bound they give
    assert ours["bytes_per_step"] > 0 and ours["xla_flops_per_step"] > 0
    floor = max(ours["xla_flops_per_step"] / ours["peak_flops_measured"],
                ours["bytes_per_step"] / ours["bandwidth_measured"])
    assert ours["roofline_ms"] == pytest.approx(1000 * floor)
    assert ours["achieved_bytes_per_sec"] == pytest.approx(
        ours["bytes_per_step"] / (ours["step_ms"] / 1000))
    (tmp_path / "tiny_sweep.py").write_text(TINY_SWEEP)
    projection = bench_steps.project_sweep(str(tmp_path / "tiny_sweep.py"), batch=8, steps=2,
                                     dtype="float32", steps_per_dispatch=1, tokens_per_run=1e6,
                                     limit=1, min_seconds=0)
    assert len(projection["rows"]) == 1 and projection["hours"] > 0
    assert projection["rows"][0]["point"] == POINT
    printed = capsys.readouterr().out
    assert "projected pre-training time" in printed
    # what the device check reads of a projection cut short: the rows printed so far
    from minilm_jax.device_check.measuring import printed_sweep_rows

    assert printed_sweep_rows(printed) == [(POINT, pytest.approx(projection["hours"], abs=5e-4))]


def test_kernels_per_step_counts_a_known_program():
    """Two matmuls with a tanh between them compile on the CPU to three kernels (the dots do not
    fuse with each other); an XLA dump of the same program counts the same."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((64, 64), jnp.float32)
    jitted = jax.jit(lambda a, b, c: jnp.tanh(a @ b) @ c)
    assert hlo_kernels.compiled_kernels(jitted, x, x, x) == 3
    assert hlo_kernels.kernels_per_step(jitted.lower(x, x, x).compile().as_text()) == 3


# An optimized module written by hand: what the rule counts is known by construction.
HAND_HLO = """HloModule hand, is_scheduled=true

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %e = f32[8]{0} exponential(%p)
}

%cond (t: (s32[], f32[8])) -> pred[] {
  %t = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %n = s32[] constant(4)
  ROOT %lt = pred[] fusion(%i, %n), kind=kLoop, calls=%fused
}

%body (t.1: (s32[], f32[8])) -> (s32[], f32[8]) {
  %t.1 = (s32[], f32[8]{0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%t.1), index=0
  %v = f32[8]{0} get-tuple-element(%t.1), index=1
  %next = s32[] fusion(%i.1), kind=kLoop, calls=%fused
  %w = f32[8]{0} custom-call(%v), custom_call_target="__gpu$xla.gpu.triton"
  ROOT %out = (s32[], f32[8]{0}) tuple(%next, %w)
}

%small (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  ROOT %x = f32[8]{0} fusion(%a), kind=kLoop, calls=%fused
}

%large (b: f32[8]) -> f32[8] {
  %b = f32[8]{0} parameter(0)
  %y = f32[8]{0} fusion(%b), kind=kLoop, calls=%fused
  %z = f32[8]{0} copy(%y)
  ROOT %s = f32[8]{0} sort(%z), dimensions={0}, to_apply=%fused
}

%graph (c: f32[8]) -> f32[8] {
  %c = f32[8]{0} parameter(0)
  %g1 = f32[8]{0} fusion(%c), kind=kLoop, calls=%fused
  ROOT %g2 = f32[8]{0} fusion(%g1), kind=kLoop, calls=%fused
}

ENTRY %main (p0: f32[8], k: s32[]) -> (f32[8], f32[8]) {
  %p0 = f32[8]{0} parameter(0)
  %k = s32[] parameter(1)
  %zero = s32[] constant(0)
  %view = f32[8]{0} bitcast(%p0)
  %init = (s32[], f32[8]{0}) tuple(%zero, %view)
  %loop = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body
  %after = f32[8]{0} get-tuple-element(%loop), index=1
  %branch = f32[8]{0} conditional(%k, %after, %after), branch_computations={%small, %large}
  %ar = f32[8]{0} all-reduce-start(%branch), replica_groups={}, to_apply=%fused
  %ard = f32[8]{0} all-reduce-done(%ar)
  %cs = (f32[8]{0}, f32[8]{0}, u32[]) copy-start(%ard)
  %cd = f32[8]{0} copy-done(%cs)
  %cb = f32[8]{0} call(%cd), to_apply=%graph
  ROOT %r = (f32[8]{0}, f32[8]{0}) tuple(%cb, %cd)
}
"""


def test_kernels_per_step_follows_its_rule_on_a_hand_written_module():
    # while: condition 1 + body 2 (fusion, Pallas custom call); conditional: the larger branch 3
    # (fusion, copy, sort); all-reduce-start 1 and copy-start 1 (their -done halves none); the
    # call's graph 2; parameters, constants, bitcasts, tuples and get-tuple-elements none.
    assert hlo_kernels.kernels_per_step(HAND_HLO) == 1 + 2 + 3 + 1 + 1 + 2
    with pytest.raises(ValueError, match="no ENTRY"):
        hlo_kernels.kernels_per_step(HAND_HLO.replace("ENTRY ", ""))


def test_kernels_per_step_of_a_train_step_is_positive_and_one_step_per_dispatch():
    """The train step's count, printed beside bytes and FLOPs, is one step's at any number of
    steps per dispatch (a scan's body counts once): 2 and 3 steps give the same count."""
    counts = [bench_steps.bench_ours(POINT, batch=4, steps=k, dtype="float32", steps_per_dispatch=k,
                               attention="einsum", min_seconds=0)["kernels_per_step"]
              for k in (2, 3)]
    assert counts[0] > 0 and counts[0] == counts[1]
    row = {"bytes_per_step": 1e9, "xla_flops_per_step": 2e9, "kernels_per_step": counts[0],
           "achieved_bytes_per_sec": 1e12, "bandwidth_measured": 2e12, "roofline_ms": 1.0,
           "bound": "memory"}
    assert f"{counts[0]} kernels/step" in bench_steps.bytes_text(row)


def test_hugging_face_side_runs_on_the_same_config():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    hf = bench_steps.bench_hf("E16-H16-I32-L1-A2-V300", batch=4, steps=2, threads=1)
    assert hf["tokens_per_sec"] > 0 and hf["device"] in ("cpu", "cuda")


def test_compiled_cost_counts_bytes_and_flops_of_a_known_program():
    """An elementwise product of a float32 [1024, 1024] array: 1M multiplies, its 4 MiB read once
    and its result written once (the scalar adds 4 bytes)."""
    import jax
    import jax.numpy as jnp

    from minilm_jax.train.throughput import compiled_cost

    x = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)
    cost = compiled_cost(jax.jit(lambda a: a * 3.0), x)
    assert cost["flops"] == pytest.approx(1024 * 1024)
    assert cost["bytes_accessed"] == pytest.approx(2 * 4 * 1024 * 1024, rel=1e-5)


def test_output_layer_bench_checks_every_formulation(capsys):
    """``python -m minilm_jax.xent_bench`` at a CPU size: every formulation within the bf16
    tolerance of the float32 reference, and a tolerance too tight for bf16 fails the check."""
    from minilm_jax import xent_bench

    assert xent_bench.main(["--rows", "70", "--hidden", "24", "--vocab", "257",
                            "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: loss" in out for name in ("kernel", "logits", "autodiff"))
    assert "under vmap (4 members)" in out
    assert xent_bench.main(["--rows", "70", "--hidden", "24", "--vocab", "257", "--repeats", "1",
                            "--tolerance", "1e-9"]) == 1


def test_members_both_ways_picks_the_faster_and_says_by_how_much(capsys):
    """--members_impl both: each count measured with vmap and with map; the row kept is the one
    with more aggregate tokens/s, the other's figures beside it and the ratio in words."""
    table = bench_steps.members_table(POINT, [2], batch=4, steps=1, dtype="float32",
                                steps_per_dispatch=1, impl="both", min_seconds=0)
    (row,) = table["rows"]
    assert set(row["compared"]) == {"vmap", "map"} and all(v > 0 for v in row["compared"].values())
    other = "map" if row["impl"] == "vmap" else "vmap"
    assert row["compared"][row["impl"]] == row["tokens_per_sec"] >= row["compared"][other]
    ratio = row["compared"][row["impl"]] / row["compared"][other]
    assert row["picked_because"].startswith(f"{ratio:.2f}x {other}'s tokens/s")
    printed = capsys.readouterr().out
    assert f"      2 picks {row['impl']}: {row['picked_because']}" in printed
    assert printed.count("\n      2 ") == 3  # the vmap row, the map row, the pick


def test_picked_row_takes_the_larger_aggregate():
    rows = [{"members": 4, "impl": "vmap", "tokens_per_sec": 300.0, "step_ms": 2.0},
            {"members": 4, "impl": "map", "tokens_per_sec": 400.0, "step_ms": 1.5}]
    picked = bench_steps.picked_row(rows)
    assert picked["impl"] == "map" and picked["compared"] == {"vmap": 300.0, "map": 400.0}
    assert picked["picked_because"] == "1.33x vmap's tokens/s (2.000 ms a step against 1.500)"


class Built(Exception):
    """Raised by a stand-in program builder: what the bench would have compiled, not compiled."""


def test_formulation_options_reach_the_program_it_compiles(monkeypatch):
    """``--layer``/``--norm`` (``impls``) are the model fields of the program a bench run and a
    members run build; unset ones are "auto"; a field that chooses no formulation is refused."""
    import minilm_jax.train.program as program

    def capture(*args, model=None, **kwargs):
        raise Built(model if model is not None else args[0][0].model)

    monkeypatch.setattr(bench_steps, "pretrain_program", capture)
    monkeypatch.setattr(program, "population_program", capture)
    with pytest.raises(Built) as built:
        bench_steps.bench_ours(POINT, batch=2, steps=1, dtype="float32", steps_per_dispatch=1,
                         attention="einsum", impls={"norm_impl": "gpu"})
    cfg = built.value.args[0]
    assert (cfg.norm_impl, cfg.layer_impl) == ("gpu", "auto")
    with pytest.raises(Built) as built:
        bench_steps.bench_members(POINT, 2, batch=2, steps=1, dtype="float32", steps_per_dispatch=1,
                            impls={"norm_impl": "xla", "layer_impl": "xla"})
    model = built.value.args[0]
    assert (model.norm_impl, model.layer_impl) == ("xla", "xla")
    assert bench_steps.model_impls(None) == {"layer_impl": "auto", "norm_impl": "auto"}
    with pytest.raises(ValueError, match="dropout_rng"):
        bench_steps.model_impls({"dropout_rng": "threefry"})
