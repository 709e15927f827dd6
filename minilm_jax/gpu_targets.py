"""NVIDIA GPUs to compile for without one: XLA ``GpuTargetConfig`` text protos built from each card's
public specifications (the vendor's data sheets and CUDA's per-architecture limits), for
``python -m minilm_jax.aot --target=cuda:<card>``.

Compiling deviceless needs the CUDA plugin's wheels at the jax version (``pip install
"minilm-jax[gpu-compile]"``: ``jax-cuda12-pjrt`` and ``jax-cuda12-plugin``, no NVIDIA libraries)
and a CPU-only backend (``JAX_PLATFORMS=cpu JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1``, which
:func:`cuda_devices` sets). The compiler's choices (fusions, GEMM tiling, Triton kernels) follow
these figures; a real card's may differ in clocks and memory size, not in what is launched.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from minilm_jax.errors import UserError

CUDNN_VERSION = (9, 7)  # assumed by every target (the versions XLA's choices may depend on)
CUDA_RUNTIME = (12, 8)


@dataclasses.dataclass(frozen=True)
class GpuCard:
    """One card's public figures (what XLA's GPU compiler reads from a device)."""

    description: str  # the name the device reports
    capability: tuple[int, int]  # CUDA compute capability (sm_XY)
    sms: int
    clock_ghz: float  # boost clock
    memory_bandwidth: int  # bytes/s
    l2_bytes: int
    memory_bytes: int
    shared_per_sm: int  # bytes of shared memory per SM
    shared_per_block_optin: int  # the most one block may opt into
    threads_per_sm: int

    def target_config(self) -> str:
        """The ``GpuTargetConfig`` text proto of this card."""
        major, minor = self.capability
        return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {self.shared_per_sm}
  threads_per_core_limit: {self.threads_per_sm}
  core_count: {self.sms}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {self.memory_bandwidth}
  l2_cache_size: {self.l2_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: {self.shared_per_block_optin}
  cuda_compute_capability {{
    major: {major}
    minor: {minor}
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{
  major: {CUDNN_VERSION[0]}
  minor: {CUDNN_VERSION[1]}
}}
runtime_version {{
  major: {CUDA_RUNTIME[0]}
  minor: {CUDA_RUNTIME[1]}
  patch: 0
}}
device_description_str: "{self.description}"
"""


MIB = 2 ** 20
# From the cards' data sheets; shared memory and threads per SM are the architecture's (sm_80:
# 164 KiB and 2,048; sm_89: 100 KiB and 1,536; sm_90: 228 KiB and 2,048); memory sizes as the
# devices report them.
CARDS: dict[str, GpuCard] = {
    "h100": GpuCard("NVIDIA H100 80GB HBM3", (9, 0), 132, 1.98, 3_352_320_000_000, 50 * MIB,
                    84_929_347_584, 228 * 1024, 227 * 1024, 2048),
    "h200": GpuCard("NVIDIA H200", (9, 0), 132, 1.98, 4_800_000_000_000, 50 * MIB,
                    143_771 * MIB, 228 * 1024, 227 * 1024, 2048),
    "a100": GpuCard("NVIDIA A100-SXM4-80GB", (8, 0), 108, 1.41, 2_039_000_000_000, 40 * MIB,
                    80 * 1024 * MIB, 164 * 1024, 163 * 1024, 2048),
    "l4": GpuCard("NVIDIA L4", (8, 9), 58, 2.04, 300_000_000_000, 48 * MIB, 23_034 * MIB,
                  100 * 1024, 99 * 1024, 1536),
    "rtx4090": GpuCard("NVIDIA GeForce RTX 4090", (8, 9), 128, 2.52, 1_008_000_000_000,
                       72 * MIB, 24_564 * MIB, 100 * 1024, 99 * 1024, 1536),
}

WHEELS = ("jax-cuda12-pjrt", "jax-cuda12-plugin")


def have_cuda_compiler() -> bool:
    """Whether a CUDA plugin (its PJRT library and the jax plugin, CUDA 12 or 13) is installed."""
    return importlib.util.find_spec("jax_plugins") is not None and any(
        importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") is not None for v in (12, 13))


def prepare_cpu_only() -> None:
    """Environment for a deviceless GPU compile, set before JAX starts a backend: the CPU is the
    only backend, and the plugin does not check for NVIDIA libraries it does not need."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")


def cuda_devices(card: str) -> list:
    """Compile-only devices of one ``card`` (a key of :data:`CARDS`). The process's persistent
    compilation cache is turned off: an executable compiled for them is never read back from it
    (the topology's compiler cannot deserialize one without a GPU; JAX would warn on each read)."""
    if card not in CARDS:
        raise UserError(f"--target=cuda:{card}: unknown card; known: {', '.join(CARDS)}")
    if not have_cuda_compiler():
        raise UserError(f"--target=cuda:{card} needs the CUDA plugin wheels at the jax version "
                        f"({' and '.join(WHEELS)}, no NVIDIA libraries): pip install "
                        "\"minilm-jax[gpu-compile]\"")
    prepare_cpu_only()
    import jax
    from jax.experimental import topologies

    try:
        jax.config.update("jax_platforms", "cpu")
    except Exception:  # a backend already started: the topology below still compiles
        pass
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        topology = topologies.get_topology_desc(platform="cuda",
                                                target_config=CARDS[card].target_config(),
                                                topology="1x1x1")
    except Exception as err:  # a plugin of another jax version, or a broken install
        raise UserError(f"cannot build compile-only devices for {card}: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__} (the "
                        f"wheels {' and '.join(WHEELS)} must match jax {jax.__version__})") from err
    return list(topology.devices)
