"""Device peak measurement and throughput bookkeeping."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp


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
