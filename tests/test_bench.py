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
