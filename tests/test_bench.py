"""The throughput benchmark's pieces on tiny points (structure only; speed is never asserted)."""

import pytest

from minilm_jax import bench

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
    ours = bench.bench_ours(POINT, batch=8, steps=2, dtype="float32",
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
    projection = bench.project_sweep(str(tmp_path / "tiny_sweep.py"), batch=8, steps=2,
                                     dtype="float32", steps_per_dispatch=1, tokens_per_run=1e6,
                                     limit=1, min_seconds=0)
    assert len(projection["rows"]) == 1 and projection["hours"] > 0
    assert projection["rows"][0]["point"] == POINT
    assert "projected pre-training time" in capsys.readouterr().out


def test_hugging_face_side_runs_on_the_same_config():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    hf = bench.bench_hf("E16-H16-I32-L1-A2-V300", batch=4, steps=2, threads=1)
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
