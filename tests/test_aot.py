"""Ahead-of-time compilation of the pre-training step (``minilm_jax.aot``): abstract shapes only, on
the 8 fake CPU devices of conftest.py (the CLI in a subprocess with its own device count)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from conftest import xla_flags
from minilm_jax.model import accounting
from minilm_jax.aot import GIB, AotReport, check_budget, compile_train_step, tpu_topology_devices
from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError
from minilm_jax.configs.pretrain import get_config as pretrain_config
from minilm_jax.settings.model_fields import model_from_config

REPO = Path(__file__).resolve().parents[1]
LARGEST = "E768-H768-I3072-L12-A12-V19010"  # the largest paper point, ~116M parameters
LARGEST_LAYER = "E768-H768-I3072-L1-A12-V19010"  # its widths (every tensor shape), one layer
SMALL = "E64-H64-I256-L1-A2-V1000"


def config(point: str, data: int, fsdp: int, **train):
    c = pretrain_config(point)
    c.mesh.data, c.mesh.fsdp = data, fsdp
    c.train.update(train)
    return c


def eight_devices() -> list:
    if jax.device_count() < 8:
        pytest.skip("needs the 8 fake CPU devices of conftest.py")
    return jax.devices()[:8]


@pytest.fixture(scope="module")
def largest() -> dict[int | str, AotReport]:
    """The largest point, batch 256 x 128, compiled for data x fsdp = 4 x 2 ("largest"); the
    FSDP comparison at its one-layer variant (the same tensor shapes, so the same sharding of
    each: 8 x 1 and 4 x 2, keys 1 and 2) costs a 12-layer compile less."""
    devices = eight_devices()
    before = {id(a) for a in jax.live_arrays()}
    reports = {"largest": compile_train_step(config(LARGEST, 4, 2), devices)}
    reports.update({fsdp: compile_train_step(config(LARGEST_LAYER, 8 // fsdp, fsdp), devices)
                    for fsdp in (1, 2)})
    new = [a for a in jax.live_arrays() if id(a) not in before]
    assert sum(a.nbytes for a in new) < 2 ** 20, "AOT compilation allocated arrays"
    return reports


def test_largest_point_memory_and_flops(largest):
    report = largest["largest"]
    cfg = model_from_config(config(LARGEST, 4, 2))
    assert report.mesh == {"data": 4, "fsdp": 2} and report.batch_shape == [1, 1, 256, 128]
    assert report.params_total == accounting.formula_params(cfg).total > 100_000_000
    m = report.memory
    assert min(m["argument"], m["output"], m["temp"]) > 0 and m["alias"] > 0  # the state is donated
    assert report.peak_bytes > m["argument"] and report.peak_bytes < 16 * GIB
    # Arguments = this device's shard of the state + its rows of the batch.
    batch_bytes = 2 * 256 * 128 * 4 // 8
    assert m["argument"] == pytest.approx(report.state_bytes_per_device + batch_bytes, rel=1e-3)
    # params, Adam's mu and nu in float32, plus int32 step counters
    assert report.state_bytes_global == pytest.approx(3 * 4 * report.params_total, abs=64)
    assert report.flops_per_device == pytest.approx(report.analytic_flops_per_device, rel=0.15)
    assert report.compile_seconds > 0 and report.lower_seconds > 0


def test_fsdp_shards_the_state_over_devices(largest):
    one, two = largest[1], largest[2]  # the largest point's widths, one layer: 8 x 1 and 4 x 2
    assert two.memory["argument"] < 0.55 * one.memory["argument"]
    assert two.state_bytes_per_device < 0.51 * one.state_bytes_per_device
    assert one.state_bytes_per_device == one.state_bytes_global  # fsdp=1: replicated
    assert two.flops_per_device == pytest.approx(one.flops_per_device, rel=0.05)


def test_budget_check():
    report = AotReport(point="p", target="cpu", platform="cpu", mesh={"data": 8, "fsdp": 1},
                       batch_shape=[1, 1, 8, 8], params_total=1, params_embedding=0,
                       params_non_embedding=1, state_bytes_per_device=GIB, state_bytes_global=GIB,
                       flops_per_device=1.0, flops_global_lowered=None, analytic_flops_per_device=1.0,
                       lower_seconds=0.1, compile_seconds=0.1, memory=None, peak_bytes=3 * GIB)
    check_budget(report, 4.0)
    check_budget(report, 0.0)  # 0 disables
    with pytest.raises(UserError, match="over the --device_memory_gb=2 GiB budget"):
        check_budget(report, 2.0)


def test_lowering_on_an_abstract_mesh_needs_no_devices():
    report = compile_train_step(config(SMALL, -1, 2), None, target="lower:tpu", abstract_size=8)
    assert report.platform == "tpu" and report.mesh == {"data": 4, "fsdp": 2}
    assert report.memory is None and report.compile_seconds is None
    assert report.flops_global_lowered == pytest.approx(8 * report.analytic_flops_per_device, rel=0.5)
    assert report.state_bytes_per_device < report.state_bytes_global


def test_mesh_and_batch_errors_name_the_field():
    devices = eight_devices()
    with pytest.raises(ConfigError, match="mesh.fsdp=3"):
        compile_train_step(config(SMALL, -1, 3), devices)
    with pytest.raises(ConfigError, match="train.batch_size / train.grad_accum=12"):
        compile_train_step(config(SMALL, -1, 1, batch_size=12), devices)


def test_tpu_topology_without_libtpu_says_so():
    if importlib.util.find_spec("libtpu") is not None:
        pytest.skip("libtpu is installed")
    with pytest.raises(UserError, match="libtpu"):
        tpu_topology_devices("v5e:2x4")


# ---- command line -----------------------------------------------------------------------------
def aot_cli(*args: str, devices: int = 4) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "minilm_jax.aot", f"--devices={devices}", *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_cli_report_then_over_budget_exits_2_with_a_message(tmp_path):
    """One command, one compile: the report on stdout (printed before the budget verdict), the
    JSON written before the verdict, then exit 2 with the over-budget message. (Within budget the
    command ends after the same report: check_budget passing is test_budget_check's.)"""
    result = aot_cli(f"--config=configs/pretrain.py:{SMALL}", "--mesh_data=2", "--mesh_fsdp=2",
                     "--config.train.batch_size=32", "--config.train.grad_accum=2",
                     f"--json={tmp_path / 'aot.json'}", "--config.model.num_layers=2",
                     "--device_memory_gb=0.001")
    assert result.returncode == 2, result.stderr
    out = result.stdout
    assert "for 4 cpu devices" in out and "mesh data=2 x fsdp=2" in out  # --devices beats XLA_FLAGS
    assert "[1, 2, 16, 128]" in out
    for line in ("parameters", "arguments", "temporaries", "generated code", "peak estimate",
                 "FLOPs per device", "compile"):
        assert line in out
    assert "error: estimated peak memory per device is" in result.stderr
    assert "over the --device_memory_gb=0.001 GiB budget" in result.stderr
    report = json.loads((tmp_path / "aot.json").read_text())  # written before the verdict
    assert report["mesh"] == {"data": 2, "fsdp": 2} and report["point"] == "E64-H64-I256-L2-A2-V1000"
    assert report["batch_shape"] == [1, 2, 16, 128]
    assert report["memory"]["argument"] > 0 and report["flops_per_device"] > 0
    assert report["peak_bytes"] > 0.001 * GIB


def test_cli_bad_input_exits_2():
    result = aot_cli(f"--config=configs/pretrain.py:{SMALL}", "--config.train.batch_sze=3")
    assert result.returncode == 2 and "did you mean 'train.batch_size'" in result.stderr


@pytest.mark.slow(covered_by=(
    "tests/test_aot.py::test_largest_point_memory_and_flops",
    "tests/test_aot.py::test_cli_report_then_over_budget_exits_2_with_a_message"))
def test_cli_largest_point_full_report():
    result = aot_cli(f"--config=configs/pretrain.py:{LARGEST}", "--mesh_data=4", "--mesh_fsdp=2",
                     devices=8)
    assert result.returncode == 0, result.stderr
    assert "115,560,002" in result.stdout and "peak estimate" in result.stdout


@pytest.mark.slow(covered_by=(
    "tests/test_aot.py::test_tpu_topology_without_libtpu_says_so",
    "tests/test_aot.py::test_lowering_on_an_abstract_mesh_needs_no_devices",
    "tests/test_gpu_compile.py::test_the_pallas_kernels_compile_by_triton_for_each_card"))
def test_tpu_topology_compile():
    """Compile-only TPU v5e devices (needs libtpu; runs on a CPU-only machine; minutes)."""
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed")
    devices = tpu_topology_devices("v5e:2x4")
    report = compile_train_step(config(SMALL, 4, 2), devices, target="tpu:v5e:2x4")
    assert report.platform == "tpu" and report.memory["argument"] > 0
