"""Device peak measurement and throughput bookkeeping."""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp

from minilm_jax.model.count_check import analysis_value


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(dtype: str = "float32", size: int = 0, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` square matmuls on the default device (the MFU denominator)."""
    platform = jax.local_devices()[0].platform
    n = size or (8192 if platform in ("gpu", "tpu") else 1024)
    a = jnp.ones((n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


def device_memory_stats() -> dict[str, float]:
    """Bytes in use / peak on device 0, where the backend reports them (GPU, TPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # CPU backends may not implement it
        stats = {}
    return {k: float(v) for k, v in stats.items() if k in ("bytes_in_use", "peak_bytes_in_use",
                                                           "bytes_limit")}


@functools.lru_cache(maxsize=None)
def measured_copy_bandwidth(megabytes: int = 0, repeats: int = 5) -> float:
    """Bytes/s (read + written) of the best of ``repeats`` device-to-device copies of a float32
    array (256 MiB on accelerators, 5x an H100's L2 and small beside a population's peak memory,
    which the probe's 512 MiB would otherwise set; 64 MiB on CPU): the roofline's memory
    ceiling."""
    platform = jax.local_devices()[0].platform
    size = (megabytes or (256 if platform in ("gpu", "tpu") else 64)) * 2**20 // 4
    # the values do not matter to a copy; arange costs a write, random bits ~3 CPU-seconds on CPU
    a = jnp.arange(size, dtype=jnp.float32)
    copy = jax.jit(lambda x: x * 1.0 + 1.0)
    copy(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        copy(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * 4 * size / best


def compiled_cost(jitted, *args) -> dict[str, float]:
    """XLA's cost analysis of ``jitted`` compiled for ``args``: ``bytes_accessed`` (every
    operand read and result written, per HLO op after fusion) and ``flops`` (0 where absent)."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    return {"bytes_accessed": analysis_value(analysis, "bytes accessed") or 0.0,
            "flops": analysis_value(analysis, "flops") or 0.0}


def roofline(step_seconds: float, cost: dict[str, float], peak_flops: float,
             bandwidth: float) -> dict[str, float]:
    """A compiled step's memory figures beside its time: bytes and XLA FLOPs per step, the
    achieved bandwidth, and the roofline bound ``max(flops / peak, bytes / bandwidth)``."""
    floor = max(cost["flops"] / peak_flops, cost["bytes_accessed"] / bandwidth)
    return {"bytes_per_step": cost["bytes_accessed"], "xla_flops_per_step": cost["flops"],
            "achieved_bytes_per_sec": cost["bytes_accessed"] / step_seconds,
            "bandwidth_measured": bandwidth, "roofline_ms": 1000 * floor,
            "bound": "memory" if cost["bytes_accessed"] / bandwidth >= cost["flops"] / peak_flops
            else "compute"}
