"""Where a step's device time goes (minilm_jax.kernel_profile; ``bench --profile``): per-step
launches and microseconds of each kernel from a profile's device events, and the bench options
that choose the encoder's kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minilm_jax import bench, kernel_profile
from minilm_jax.model.config import ConfigError
from minilm_jax.kernel_profile import aggregate, profile_steps


def test_kernels_are_summed_per_step_and_ordered_by_time():
    rng = np.random.default_rng(0)
    names = ["layer_backward", "xent_dw", "sort", "fusion_7"]
    per_step = {"layer_backward": 1, "xent_dw": 1, "sort": 2, "fusion_7": 3}
    steps, events = 4, []
    for _ in range(steps):
        for name in names:
            events += [(name, float(rng.integers(1_000, 400_000))) for _ in range(per_step[name])]
    rng.shuffle(events)
    got = aggregate(events, steps)
    want_us = {n: sum(ns for m, ns in events if m == n) / 1e3 / steps for n in names}
    assert [k.name for k in got.kernels] == sorted(names, key=lambda n: -want_us[n])
    for kernel in got.kernels:
        assert kernel.launches == per_step[kernel.name]
        assert kernel.us == pytest.approx(want_us[kernel.name])
    assert got.busy_us == pytest.approx(sum(want_us.values()))
    table = got.table(2, step_ms=2 * got.busy_us / 1e3).splitlines()
    assert len(table) == 3 and "(50% of the" in table[0]  # busy half of the step
    top = got.kernels[0]
    assert table[1].split()[0] == f"{top.us:.1f}" and top.name in table[1]


def test_profiling_advances_the_state_and_finds_no_gpu_kernel_on_a_cpu(monkeypatch):
    step = jax.jit(lambda s, d: (s + d, {"loss": jnp.sum(s)}), donate_argnums=0)
    got, state = profile_steps(step, jnp.zeros(3), jnp.ones(3), steps=3)
    np.testing.assert_array_equal(np.asarray(state), np.full(3, 5.0))  # 2 unprofiled + 3
    assert got.kernels == () and got.busy_us == 0.0
    assert got.table(5).startswith("device profile: no GPU kernel")
    # 3 calls of 2 train steps each (--steps_per_dispatch 2): figures per train step
    monkeypatch.setattr(kernel_profile, "device_events", lambda path: [("k", 6_000.0)] * 12)
    got, _ = profile_steps(step, state, jnp.ones(3), steps=3, steps_per_call=2)
    assert got.kernels == (kernel_profile.KernelTime("k", 2.0, 12.0),) and got.busy_us == 12.0


def test_bench_layer_option_reaches_the_model():
    # head size 8 is below the layer kernel's least (16): the option reached the model config
    with pytest.raises(ConfigError, match=r"layer_impl='fused' cannot run this layer: the head "):
        bench.main(["--point", "E16-H16-I32-L1-A2-V300", "--batch", "2", "--steps", "1",
                    "--min_seconds", "0", "--layer", "fused"])


def test_bench_refuses_a_profile_it_cannot_take(capsys):
    for argv in (["--members", "2", "--profile", "3"], ["--profile", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(errors) == 1 and errors[0].startswith("error:") and "--profile" in errors[0]

