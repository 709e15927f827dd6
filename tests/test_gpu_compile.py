"""The project's GPU programs compile for every card we claim, on this CPU-only machine: the Pallas
kernels (flash attention, the output layer with the head's transform, the encoder layer, the
embeddings; forward and backward, by Triton) and a whole pre-training step for sm_80 (A100), sm_89
(L4) and sm_90 (H100), with the CUDA plugin's wheels
(``MINILM_GPU_COMPILE_PATH``, default ``.cache/gpu-compile``, where ``launch/test.sh`` installs
them; skipped cleanly without). The compile runs in a process of its own: the plugin must be seen
before JAX starts, and the suite's own processes run without it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WHEELS = Path(os.environ.get("MINILM_GPU_COMPILE_PATH", REPO / ".cache" / "gpu-compile"))
CARDS = {"a100": "NVIDIA A100-SXM4-80GB", "l4": "NVIDIA L4", "h100": "NVIDIA H100 80GB HBM3"}
PARAMETER_LEAVES = 29  # paper-1.25m: every weight, bias, norm and embedding table


def plugin_at(path: Path) -> bool:
    return (path / "jax_plugins" / "xla_cuda12").is_dir()


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory) -> str:
    """XLA_FLAGS naming one GPU kernel cache for this module's deviceless compiles: Triton's and
    ptxas's output for a kernel compiled once (``compiled``'s A100 step) is read back by the next
    compile of the same kernel (that step compiled again: 15.6 -> 3.6 CPU-seconds of the process
    while it compiled); what XLA builds around the kernels, and so every count, is compiled
    again."""
    return f"--xla_gpu_kernel_cache_file={tmp_path_factory.mktemp('gpu_kernels') / 'kernels.bin'}"


@pytest.fixture(scope="module")
def compiled(kernel_cache) -> dict[str, dict]:
    if not plugin_at(WHEELS):
        pytest.skip(f"no CUDA plugin wheels at {WHEELS} (launch/test.sh installs them)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(WHEELS), str(REPO / "tests")]),
               JAX_PLATFORMS="cpu", XLA_FLAGS=kernel_cache)
    result = subprocess.run([sys.executable, str(REPO / "tests" / "gpu_compile_script.py"),
                             *CARDS], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["card"]: row for row in rows}


@pytest.mark.parametrize("card", CARDS)
def test_the_pallas_kernels_compile_by_triton_for_each_card(compiled, card):
    row = compiled[card]
    assert row["kind"] == CARDS[card]
    # every kernel lowered under an abstract mesh naming the card (what jax 0.11's Pallas asks)
    assert row["pallas_lowered_for"] == [CARDS[card]]
    # each kernel's forward and backward, a Triton call each, none interpreted: flash attention
    # (forward, dK/dV, dQ); the output layer (forward, dx, dW/db); the head with its transform
    # (those and the transform's forward and backward); the encoder layer and the embeddings
    # (forward, backward)
    assert row["flash_triton_calls"] == 3
    assert row["xent_triton_calls"] == 3
    assert row["head_triton_calls"] == 5
    assert row["layer_triton_calls"] == 2
    assert row["embed_triton_calls"] == 2
    assert row["flash_kernels"] >= 3 and row["xent_kernels"] >= 3


@pytest.mark.parametrize("card", CARDS)
def test_a_whole_step_runs_the_kernels_and_its_parts_add_up(compiled, card):
    """A whole step for each card (paper-1.25m's on the H100 at T = 128; on the others a small
    one, one head and one FFN block: gpu_compile_script.SMALL_POINT, at T = 128 on the A100 and
    T = 32 on the L4, the layer kernel's 4-warp configuration): the parts add up,
    every part is found by its named scope, the encoder is its two kernels (a custom call in each
    of its parts) and a few small ones (58 unfused), and Adam's moments are one vector (far fewer
    optimizer kernels than the 29 parameter leaves)."""
    row = compiled[card]
    parts = row["step_parts"]
    assert sum(parts.values()) == row["step_kernels"] > 0
    for part in ("masking", "embeddings", "encoder forward", "encoder backward", "output layer",
                 "optimizer"):
        assert parts[part] > 0, part
    assert parts["encoder forward"] + parts["encoder backward"] <= 10
    calls = [part for part, opcode in row["encoder_kernels"] if opcode == "custom-call"]
    assert sorted(calls) == ["encoder backward", "encoder forward"]
    assert parts["optimizer"] < PARAMETER_LEAVES
    assert row["step_kernels"] <= 64  # the H100's: 60 at batch 256 (docs/performance.md)
    assert row["temp_bytes"] > 0


@pytest.mark.skipif(importlib.util.find_spec("jax_plugins") is not None
                    and importlib.util.find_spec("jax_plugins.xla_cuda12") is not None,
                    reason="the CUDA plugin is installed in this environment")
def test_without_the_wheels_aot_says_which_extra_in_one_line():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "minilm_jax.aot", "--target=cuda:h100",
                             "--config=pretrain:paper-1.25m"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gpu-compile" in errors[0] and "jax-cuda12-plugin" in errors[0]


def test_an_unknown_card_is_named_in_one_line():
    result = subprocess.run([sys.executable, "-m", "minilm_jax.aot", "--target=cuda:h800",
                             "--config=pretrain:paper-1.25m"], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "h800" in errors[0] and "h100" in errors[0]


TPU_HLO = """HloModule tpu_step, is_scheduled=true

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %e = f32[8]{0} exponential(%p)
}

ENTRY %main (p0: f32[8], k: u32[2]) -> (f32[8], u32[2]) {
  %p0 = f32[8]{0} parameter(0)
  %k = u32[2]{0} parameter(1)
  %cs = (f32[8]{0}, f32[8]{0}, u32[]) copy-start(%p0)
  %cd = f32[8]{0} copy-done(%cs)
  %f = f32[8]{0} fusion(%cd), kind=kLoop, calls=%fused, metadata={op_name="jit(s)/encoder/exp"}
  %x = u32[2]{0} xor(%k, %k)
  %sh = u32[2]{0} shift-left(%x, %k)
  %cc = f32[8]{0} custom-call(%f), custom_call_target="tpu_custom_call"
  ROOT %r = (f32[8]{0}, u32[2]{0}) tuple(%cc, %sh)
}
"""


def test_a_tpu_step_counts_the_programs_its_core_runs():
    """On a TPU the DMAs (copy-start) and the keys' unfused elementwise ops are not programs of
    their own: a fusion and a custom call are; a GPU launches all five."""
    from minilm_jax.hlo_kernels import step_kernels

    tpu = step_kernels(TPU_HLO, platform="tpu")
    assert tpu.total == 2 and [launch.opcode for launch in tpu.launches] == ["fusion",
                                                                              "custom-call"]
    assert tpu.by_part()["encoder forward"] == 1
    assert step_kernels(TPU_HLO).total == 5  # copy-start, fusion, xor, shift-left, custom-call


def test_the_device_check_counts_a_figures_step_compiled_deviceless(compiled, kernel_cache,
                                                                    tmp_path, monkeypatch):
    """The device check's deviceless count of a bench figure (its point, batch, dtype,
    attention and layer read from the bench options) is that of the same step compiled by aot for
    the card: checked against ``compiled``'s small step for the A100 (its point at T = 128,
    the fused layer, bf16, batch 8, one device: aot's compile_train_step run directly, in the
    module's own process, under its flags: its kernels are read from ``kernel_cache``, where the
    H100's paper-1.25m step would take Triton ~12 CPU-seconds more). The aot command writes
    nothing into the persistent compilation cache: a deviceless executable cannot be read back
    from it."""
    import io

    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.device_check import measuring, trees

    monkeypatch.setitem(trees.CHILD_ENV, "PYTHONPATH", str(WHEELS))
    monkeypatch.setitem(trees.CHILD_ENV, "XLA_FLAGS", kernel_cache)  # compiled's flags and kernels
    cache = tmp_path / "compilation_cache"  # the aot command's: a deviceless compile writes none
    monkeypatch.setitem(trees.CHILD_ENV, "JAX_COMPILATION_CACHE_DIR", str(cache))
    a100 = compiled["a100"]  # the bench runs the point at its own length: as compiled there
    assert a100["step_max_len"] == get_config(a100["step_point"]).model.max_len == 128
    monkeypatch.setattr(measuring, "device_card", lambda: "a100")
    side = trees.Side("now", REPO, "this tree")
    log = io.StringIO()
    got = measuring.deviceless_kernels(
        side, ("--point", a100["step_point"], "--layer", "fused", "--dtype", "bfloat16",
               "--batch", "8", "--steps", "1"),
        tmp_path / "aot.json", log)
    assert got == a100["step_kernels"] > 0, log.getvalue()[-2000:]
    # never readable (the topology's compiler cannot deserialize it): never written
    assert not list(cache.glob("*-cache")), sorted(p.name for p in cache.iterdir())
