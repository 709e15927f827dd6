r"""Ahead-of-time compilation of the pre-training step for a target mesh, without allocating it.

    python -m minilm_jax.aot --config=configs/pretrain.py:<point> --devices=8 \
        [--mesh_data=4 --mesh_fsdp=2] [--config.<field>=<value> ...] [--device_memory_gb=16]

Builds the step with ``train.program.pretrain_program``, the builder a pre-training run uses, from
abstract shapes only (``nnx.eval_shape`` / ``jax.eval_shape`` and sharded ``jax.ShapeDtypeStruct``s: no
parameter is ever allocated), lowers and compiles it, and prints per-device memory
(``memory_analysis``), FLOPs (``cost_analysis``), parameter counts and, where the target compiles,
the kernels one step launches by part of the step (:mod:`minilm_jax.hlo_kernels`: masking,
embeddings, encoder forward and backward, output layer, optimizer, other) with the largest ones;
``--members N`` compiles the population program of N members instead. Exit status 2 when the
estimated per-device peak exceeds ``--device_memory_gb`` (GiB).

Targets (``--target``):

* ``cpu`` (default): ``--devices`` fake host CPU devices. The device count must be fixed before the
  CPU backend starts; ``main`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
  ``JAX_PLATFORMS=cpu`` and ``jax_num_cpu_devices`` before any device is touched. Argument and
  output sizes are exact per-device shard sizes; temporaries are XLA:CPU's and overstate what the
  GPU/TPU compilers need (largest paper point, 4 x 2 mesh: 6.5 GiB on CPU, 1.9 GiB on TPU v5e).
  In-process callers (tests) pass devices to :func:`compile_train_step` instead.
* ``attached``: the devices this process sees (e.g. the local GPUs): the target compiler's figures.
* ``cuda:<card>`` (``h100``, ``h200``, ``a100``, ``l4``, ``rtx4090``: :mod:`minilm_jax.gpu_targets`):
  one compile-only NVIDIA GPU on a CPU-only machine (XLA's GPU compiler, Pallas kernels by Triton);
  needs the ``gpu-compile`` extra (the CUDA plugin's wheels, no NVIDIA libraries).
* ``tpu:<topology>`` (e.g. ``tpu:v5e:2x4``, ``tpu:v4:2x2x2``): compile-only TPU devices from
  ``jax.experimental.topologies``; needs libtpu installed (``pip install "jax[tpu]"``), works on a
  CPU-only machine; the TPU compiler is slow there (minutes).
* ``lower:<platform>`` (``lower:tpu``, ``lower:cuda``): lowering only, on a device-free
  ``AbstractMesh``; reports the unpartitioned StableHLO FLOPs and the per-device state size (no
  compiler memory figures: compiling needs real or compile-only devices).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Sequence

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main
from minilm_jax.storage import atomic_write_json

_CONFIG = config_flags.DEFINE_config_file("config", None, "pre-training config: pretrain:<point> (an installed recipe) or a file")
_DEVICES = flags.DEFINE_integer("devices", None, "device count of the target mesh (fake CPU devices "
                                "for --target=cpu; default: mesh_data x mesh_fsdp, or 8)")
_MESH_DATA = flags.DEFINE_integer("mesh_data", None, "data axis size (default: config.mesh.data)")
_MESH_FSDP = flags.DEFINE_integer("mesh_fsdp", None, "fsdp axis size (default: config.mesh.fsdp)")
_BUDGET = flags.DEFINE_float("device_memory_gb", 16.0, "per-device memory budget in GiB; exit 2 "
                             "when the estimated peak exceeds it (0: no check)")
_TARGET = flags.DEFINE_string("target", "cpu", "cpu | attached | cuda:<card> (h100, h200, a100, l4, "
                              "rtx4090; deviceless) | tpu:<topology> | lower:<platform>")
_MEMBERS = flags.DEFINE_integer("members", 0, "compile the population program of this many members "
                                "(seeds 0..N-1) instead of one run's step (0: one run)")
_LARGEST = flags.DEFINE_integer("largest", 5, "how many of the largest kernels to list")
_JSON = flags.DEFINE_string("json", "", "also write the report as one JSON object to this path")

GIB = 2 ** 30
DEVICE_FLAG = "--xla_force_host_platform_device_count"


# ------------------------------------------------------------------------------------------------
# Fake CPU devices (must happen before the CPU backend starts).
def force_host_device_count(n: int) -> None:
    """Ask for ``n`` CPU devices: XLA_FLAGS (replacing any count there), JAX_PLATFORMS=cpu and
    ``jax_num_cpu_devices``. A no-op for the backend if it has already started."""
    flags_now = re.sub(rf"{DEVICE_FLAG}=\d+", "", os.environ.get("XLA_FLAGS", "")).strip()
    os.environ["XLA_FLAGS"] = f"{flags_now} {DEVICE_FLAG}={n}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", n)
    except Exception:  # backend already initialised: target_devices() reports the shortfall
        pass


def target_devices(target: str, count: int | None) -> list:
    """The devices to compile for (``count`` of them where given)."""
    import jax

    from minilm_jax.errors import UserError

    if target == "cpu":
        devices = jax.devices("cpu")
        if count and len(devices) < count:
            raise UserError(f"only {len(devices)} CPU devices exist, {count} requested: the CPU "
                            f"backend started before {DEVICE_FLAG}={count} took effect; run "
                            f"`python -m minilm_jax.aot` directly or set XLA_FLAGS="
                            f"{DEVICE_FLAG}={count} before importing jax")
    elif target == "attached":
        devices = jax.devices()
    elif target.startswith("tpu:"):
        devices = tpu_topology_devices(target[len("tpu:"):])
    elif target.startswith("cuda:"):
        from minilm_jax.gpu_targets import cuda_devices

        devices = cuda_devices(target[len("cuda:"):])
    else:
        raise UserError(f"--target={target!r}: expected cpu, attached, cuda:<card>, "
                        "tpu:<topology> or lower:<platform>")
    if count and len(devices) < count:
        raise UserError(f"--target={target} has {len(devices)} devices, {count} requested")
    return list(devices[:count] if count else devices)


def target_context(mesh):
    """The context to trace and lower for ``mesh``'s devices in: on a GPU target its abstract
    mesh, which names the card (jax >= 0.11 asks it for the Pallas kernels' compute capability
    where no GPU is attached, as on a CPU machine or under ``JAX_PLATFORMS=cpu``)."""
    import contextlib

    import jax

    # lower:<platform> lowers on an AbstractMesh (build_mesh names its device); others on devices
    abstract = mesh if isinstance(mesh, jax.sharding.AbstractMesh) else mesh.abstract_mesh
    device = abstract.abstract_device
    if device is None or device.platform not in ("gpu", "cuda"):
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(abstract)


def tpu_topology_devices(topology: str) -> list:
    """Compile-only devices of a TPU topology such as ``v5e:2x4`` (needs libtpu)."""
    from jax.experimental import topologies

    from minilm_jax.errors import UserError

    try:
        return list(topologies.get_topology_desc(topology, platform="tpu").devices)
    except Exception as err:  # RuntimeError without libtpu; JaxRuntimeError for a bad name
        raise UserError(f"cannot build TPU topology {topology!r}: {err} (compile-only TPU devices "
                        "need libtpu: pip install \"jax[tpu]\"; --target=lower:tpu lowers without "
                        "it)") from err


# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AotReport:
    """What one ahead-of-time compile measured. Bytes and FLOPs are per device unless named global."""

    point: str
    target: str
    platform: str
    mesh: dict[str, int]
    batch_shape: list[int]
    params_total: int
    params_embedding: int
    params_non_embedding: int
    state_bytes_per_device: int
    state_bytes_global: int
    flops_per_device: float | None
    flops_global_lowered: float | None
    analytic_flops_per_device: float
    lower_seconds: float
    compile_seconds: float | None
    memory: dict[str, int] | None  # argument, output, alias, temp, generated_code
    peak_bytes: int | None  # argument + output - alias + temp + generated code
    members: int = 0  # a population program of this many members (0: one run)
    kernels_per_step: int | None = None  # launches of one step (hlo_kernels), where compiled
    kernels_by_part: dict[str, int] | None = None
    bytes_by_part: dict[str, int] | None = None  # what each part's launches write and read
    largest_kernels: list[dict[str, Any]] | None = None  # name, opcode, part, times, bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bytes_per_device(abstract: Any, shardings: Any) -> int:
    """Sum over leaves of the shard size on one device."""
    import jax
    import numpy as np

    sizes = jax.tree.map(lambda a, s: math.prod(s.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize,
                         abstract, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def tree_bytes(abstract: Any) -> int:
    import jax
    import numpy as np

    return int(sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(abstract)))


def abstract_device(platform: str | None):
    """What an AbstractMesh lowered for ``platform`` names as its device: for ``cuda`` the H100
    (:data:`~minilm_jax.gpu_targets.CARDS`), which jax >= 0.11 asks for the Pallas kernels'
    compute capability; None elsewhere."""
    if platform not in ("cuda", "gpu"):
        return None
    import jax

    from minilm_jax.gpu_targets import CARDS

    card = CARDS["h100"]
    return jax.sharding.AbstractDevice(device_kind=card.description, num_cores=card.sms,
                                       platform="cuda")


def build_mesh(config, devices: Sequence | None, abstract_size: int | None,
               platform: str | None = None):
    """The (data, fsdp) mesh of the config over ``devices``, or an AbstractMesh of
    ``abstract_size`` (naming a device of ``platform`` where :func:`abstract_device` has one)."""
    from jax.sharding import AbstractMesh

    from minilm_jax.model.config import ConfigError
    from minilm_jax.train.mesh import AXES, make_mesh

    data, fsdp = int(config.mesh.data), int(config.mesh.fsdp)
    if devices is not None:
        return make_mesh(data, fsdp, devices)
    if fsdp < 1 or abstract_size % fsdp:
        raise ConfigError(f"mesh.fsdp={fsdp} must divide the device count {abstract_size}")
    data = abstract_size // fsdp if data == -1 else data
    if data < 1 or data * fsdp > abstract_size:
        raise ConfigError(f"mesh.data x mesh.fsdp = {data} x {fsdp} needs more than the "
                          f"{abstract_size} devices")
    return AbstractMesh((1, data, fsdp), AXES, abstract_device=abstract_device(platform))


def compile_train_step(config, devices: Sequence | None = None, *, target: str = "cpu",
                       abstract_size: int | None = None, members: int = 0,
                       largest: int = 5) -> AotReport:
    """Lower and compile the pre-training step of ``config`` for ``devices`` (the population
    program of ``members`` members, seeds 0..N-1, when ``members`` > 0).

    With ``devices=None`` and ``target='lower:<platform>'``, lower on an ``AbstractMesh`` of
    ``abstract_size`` devices only. The program is built for the devices' platform
    (:func:`minilm_jax.model.target_platform.building_for`): a GPU target gets the GPU's output
    layer, Triton-compiled Pallas kernels and members strategy on a CPU-only machine.
    """
    from minilm_jax.model.target_platform import building_for

    lower_only = target.startswith("lower:")
    platform = target[len("lower:"):] if lower_only else devices[0].platform
    with building_for(platform):
        return _compile(config, devices, target, abstract_size, members, largest, lower_only,
                        platform)


def _compile(config, devices, target: str, abstract_size: int | None, members: int,
             largest: int, lower_only: bool, platform: str) -> AotReport:
    from minilm_jax.hlo_kernels import step_kernels
    from minilm_jax.model import accounting
    from minilm_jax.model.count_check import analysis_value
    from minilm_jax.settings.mlm_cap import effective_max_predictions
    from minilm_jax.train.population import seeded_members
    from minilm_jax.train.program import population_program, pretrain_program

    # The pre-training program exactly as a run builds it, traced for shapes only.
    mesh = build_mesh(config, devices, abstract_size, platform)
    if members:
        program = population_program(seeded_members(config, members), mesh)
        k = program.batch_shape[1]
    else:
        program = pretrain_program(config, mesh)
        k = program.batch_shape[0]
    model_cfg, tc, counts = program.model, config.train, program.state.param_counts
    abstract_state, state_sharding = program.state.abstract, program.state.shardings
    batch_shape = list(program.batch_shape)
    batch = program.abstract_batch()
    state = program.state.sharded_abstract()

    start = time.perf_counter()
    try:
        with target_context(mesh):
            traced = program.train_step.trace(state, batch)
            lowered = (traced.lower(lowering_platforms=(platform,)) if lower_only
                       else traced.lower())
    except RuntimeError as err:  # jax asks for cuDNN's library while tracing its attention
        if "cudnn" not in str(err).lower():
            raise
        from minilm_jax.errors import UserError

        raise UserError("model.attention_impl='cudnn' needs cuDNN's library to build its "
                        f"program, also without a GPU ({str(err).splitlines()[0]}): pip install "
                        "nvidia-cudnn-cu12, or use attention_impl='einsum' or 'flash'") from err
    lower_seconds = time.perf_counter() - start
    n_devices = mesh.size
    analytic = (accounting.train_flops_per_sequence(
        model_cfg, num_predictions=effective_max_predictions(config.mlm, model_cfg.max_len))
                * tc.batch_size * k * max(1, members) / n_devices)
    report = AotReport(
        point=model_cfg.point, target=target, platform=platform,
        mesh={"data": int(mesh.shape["data"]), "fsdp": int(mesh.shape["fsdp"])},
        batch_shape=batch_shape, params_total=counts.total, params_embedding=counts.embedding,
        params_non_embedding=counts.non_embedding,
        state_bytes_per_device=bytes_per_device(abstract_state, state_sharding),
        state_bytes_global=tree_bytes(abstract_state), flops_per_device=None,
        flops_global_lowered=(analysis_value(lowered.cost_analysis(), "flops") if lower_only
                              else None),
        analytic_flops_per_device=analytic, lower_seconds=lower_seconds, compile_seconds=None,
        memory=None, peak_bytes=None, members=members)
    if lower_only:
        return report

    start = time.perf_counter()
    compiled = lowered.compile()
    report.compile_seconds = time.perf_counter() - start
    report.flops_per_device = analysis_value(compiled.cost_analysis(), "flops")
    report.memory = memory_figures(compiled.memory_analysis())
    if report.memory is not None:
        m = report.memory
        report.peak_bytes = (m["argument"] + m["output"] - m["alias"] + m["temp"]
                             + m["generated_code"])
    kernels = step_kernels(compiled.as_text(), steps_per_dispatch=k, platform=platform)
    report.kernels_per_step = kernels.total
    report.kernels_by_part = kernels.by_part()
    report.bytes_by_part = kernels.bytes_by_part()
    report.largest_kernels = [dataclasses.asdict(launch) for launch in kernels.largest(largest)]
    return report


def memory_figures(stats: Any) -> dict[str, int] | None:
    """Per-device byte counts of ``Compiled.memory_analysis()`` (None where the backend has none)."""
    if stats is None:
        return None
    names = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes",
             "alias": "alias_size_in_bytes", "temp": "temp_size_in_bytes",
             "generated_code": "generated_code_size_in_bytes"}
    return {key: int(getattr(stats, attr, 0) or 0) for key, attr in names.items()}


# ------------------------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def format_report(r: AotReport, budget_gb: float) -> str:
    n = r.mesh["data"] * r.mesh["fsdp"]
    what = f"population step of {r.members} members" if r.members else "pre-training step"
    lines = [
        f"AOT {what}: {r.point} for {n} {r.platform} devices ({r.target}), "
        f"mesh data={r.mesh['data']} x fsdp={r.mesh['fsdp']}",
        f"  parameters         {r.params_total:,} (embedding {r.params_embedding:,}, "
        f"non-embedding {r.params_non_embedding:,})",
        f"  batch per call     tokens, segments int32 {r.batch_shape} "
        f"(steps_per_dispatch, grad_accum, batch, seq)",
        f"  train state        {human_bytes(r.state_bytes_per_device)} per device "
        f"({human_bytes(r.state_bytes_global)} global: params, AdamW moments, step)",
    ]
    if r.memory is not None:
        m = r.memory
        lines += [
            "  memory per device  (compiled.memory_analysis())",
            f"    arguments        {human_bytes(m['argument'])}",
            f"    outputs          {human_bytes(m['output'])}",
            f"    aliased (donated) {human_bytes(m['alias'])}",
            f"    temporaries      {human_bytes(m['temp'])}",
            f"    generated code   {human_bytes(m['generated_code'])}",
            f"    peak estimate    {human_bytes(r.peak_bytes)} (arguments + outputs - aliased + "
            f"temporaries + code)" + (f"; budget {budget_gb:g} GiB" if budget_gb > 0 else ""),
        ]
    elif r.compile_seconds is None:
        lines.append("  memory per device  not available: lowering only (no compile)")
    else:
        lines.append("  memory per device  not reported by this backend")
    if r.flops_per_device is not None:
        lines.append(f"  FLOPs per device   {r.flops_per_device:.4g} per call (XLA cost_analysis of "
                     f"the partitioned step; analytic matmul count {r.analytic_flops_per_device:.4g})")
    if r.flops_global_lowered is not None:
        lines.append(f"  FLOPs (global)     {r.flops_global_lowered:.4g} per call (StableHLO, "
                     f"before partitioning; analytic {r.analytic_flops_per_device * n:.4g})")
    if r.kernels_per_step is not None:
        what = ("programs the TensorCore runs" if r.platform == "tpu"
                else "launches in the optimized HLO")
        lines.append(f"  kernels per step   {r.kernels_per_step} ({what}, "
                     f"one step{f' of {r.members} members' if r.members else ''})")
        moved = r.bytes_by_part or {}
        lines += [f"    {part:<18} {count:<6}" + (f" {human_bytes(moved[part])} written + read"
                                                  if part in moved else "")
                  for part, count in r.kernels_by_part.items()]
        if moved:
            lines.append(f"    {'all parts':<18} {r.kernels_per_step:<6} "
                         f"{human_bytes(sum(moved.values()))} written + read")
        if r.largest_kernels:
            lines.append("  largest kernels    (bytes written + read)")
            lines += [f"    {k['name']:<36} {k['part']:<17} {human_bytes(k['bytes'])}"
                      + (f" x{k['times']}" if k["times"] > 1 else "") for k in r.largest_kernels]
    timing = f"  time               lower {r.lower_seconds:.1f} s"
    if r.compile_seconds is not None:
        timing += f", compile {r.compile_seconds:.1f} s"
    lines.append(timing)
    return "\n".join(lines)


def check_budget(r: AotReport, budget_gb: float) -> None:
    """UserError (exit 2) when the per-device peak (or, lowering only, the state) exceeds the budget."""
    from minilm_jax.errors import UserError

    if budget_gb <= 0:
        return
    need, what = ((r.peak_bytes, "estimated peak memory") if r.peak_bytes is not None
                  else (r.state_bytes_per_device, "train state"))
    if need > budget_gb * GIB:
        raise UserError(f"{what} per device is {human_bytes(need)}, over the --device_memory_gb="
                        f"{budget_gb:g} GiB budget ({r.point}, mesh data={r.mesh['data']} x "
                        f"fsdp={r.mesh['fsdp']}); raise mesh.fsdp, lower train.batch_size or raise "
                        "train.grad_accum")


def default_device_count(config) -> int:
    data, fsdp = int(config.mesh.data), int(config.mesh.fsdp)
    return data * fsdp if data > 0 else max(8, fsdp)


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.errors import UserError

    config = _CONFIG.value
    if config is None:
        raise UserError("--config=configs/pretrain.py:<point> is required")
    if _MESH_DATA.value is not None:
        config.mesh.data = _MESH_DATA.value
    if _MESH_FSDP.value is not None:
        config.mesh.fsdp = _MESH_FSDP.value
    target = _TARGET.value
    count = _DEVICES.value
    if count is not None and count < 1:
        raise UserError(f"--devices must be positive (got {count})")
    if _MEMBERS.value < 0:
        raise UserError(f"--members must be positive, or 0 for one run (got {_MEMBERS.value})")
    if target == "cpu":
        count = count or default_device_count(config)
        force_host_device_count(count)
    if target.startswith("cuda:"):
        from minilm_jax.gpu_targets import prepare_cpu_only

        prepare_cpu_only()  # before JAX starts a backend
        if count not in (None, 1) or int(config.mesh.data) > 1 or int(config.mesh.fsdp) > 1:
            raise UserError(f"--target={target} compiles for one GPU: pass --devices=1 and "
                            "mesh.data = mesh.fsdp = 1 (or -1)")
        count = 1
    if target.startswith("lower:"):
        report = compile_train_step(config, None, target=target,
                                    abstract_size=count or default_device_count(config),
                                    members=_MEMBERS.value, largest=_LARGEST.value)
    else:
        report = compile_train_step(config, target_devices(target, count), target=target,
                                    members=_MEMBERS.value, largest=_LARGEST.value)
    if _JSON.value:  # written before the budget verdict, so an over-budget run keeps its figures
        atomic_write_json(_JSON.value, report.to_dict())
    print(format_report(report, _BUDGET.value), flush=True)
    check_budget(report, _BUDGET.value)


def _entry() -> None:
    run_main(main, recipe="pretrain")


if __name__ == "__main__":
    _entry()
