"""The figures measured, each a ``python -m minilm_jax.bench`` call per tree, and their targets;
the sweep projection's spec and its points."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

QUICK_SWEEP = '''from minilm_jax.configs.sweep import smoke


def get_config():  # two tiny points
    c = smoke()
    c.bases, c.vocab_size = ("a=E16-H16-I32-L1-A2", "b=E16-H16-I64-L1-A2"), 300
    return c
'''


@dataclass(frozen=True)
class Target:
    """A figure's value: its JSON key, what it is, the target (``at_least`` or at most; None: a
    value shown beside the others, with no target)."""
    key: str
    what: str
    limit: float | None
    at_least: bool
    show: Callable[[float], str]


@dataclass(frozen=True)
class Figure:
    """One ``python -m minilm_jax.bench`` call per side; ``read`` takes its values from its JSON.
    ``min_s``: the least time it is started with; ``dump``: count the kernels XLA dumps;
    ``sides``: the trees it runs on (a path the baseline lacks: this tree only); ``now_args``:
    options for this tree's run only (what the baseline's bench does not have)."""
    name: str
    args: tuple[str, ...]
    timeout_s: float
    min_s: float
    targets: tuple[Target, ...]
    read: Callable[[dict[str, Any]], dict[str, float]]
    dump: bool = False
    sides: tuple[str, ...] = ("baseline", "now")
    now_args: tuple[str, ...] = ()
    deviceless: bool = False  # also this tree's step compiled for the card on the CPU (aot)


@dataclass(frozen=True)
class Sweep:
    """The sweep projection: its name, spec (relative to a tree, or a file of its own), seeds
    packed per run, the first points only (0: all), bench options, least time per side, target."""
    name: str
    spec: str
    seeds: int
    limit: int
    args: tuple[str, ...]
    min_s: float
    target: Target


def _rate(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v:,.0f}"


def _members(result: dict[str, Any]) -> dict[str, float]:
    row = result["rows"][-1]  # with --members_impl both: the faster strategy's row
    return {"tokens_per_sec": row["tokens_per_sec"],
            "bytes_per_member": row["bytes_per_step"] / row["members"]}


def kernel_targets(quick: bool, limit: float | None = 60) -> tuple[Target, ...]:
    """Kernels per step the device ran (XLA's dump) and, beside them, what the same step compiled
    for the card on a CPU counts (``aot --target=cuda:<card>``: how far a deviceless count is to
    be trusted); the quick mode runs off a GPU, with no deviceless count. ``limit``: the target
    (the encoder's kernels' step: <= 60), or None (the default step, the modules: no target)."""
    show = lambda v: f"{v:.0f}"  # noqa: E731
    ran = Target("kernels_per_step", "kernels per step", limit, False, show)
    return (ran,) if quick else (ran, Target("kernels_deviceless", "kernels per step, "
                                             "compiled deviceless", limit, False, show))


def figures(quick: bool, scratch: Path) -> tuple[list[Figure], Sweep]:
    """The figures: batch 256 x 128 per member, bf16 (one run also with the encoder layer's and
    embeddings' kernels and with the flash-attention kernel, this tree only: what decides their
    defaults; this tree's one runs profiled by kernel; this tree's members measured with vmap
    and with map, the faster kept: what decides ``auto``); with ``quick`` a tiny point at batch 2,
    the Pallas kernels interpreted off a GPU, 2 members, 2 sweep points."""
    if quick:
        (scratch / "quick_sweep.py").write_text(QUICK_SWEEP)
        one = large = "E16-H16-I32-L1-A2-V300"
        names = (f"{one} one run", f"{one} x 2 members", f"{large} one run, as base-large")
        members, seeds, limit, spec = 2, 2, 2, str(scratch / "quick_sweep.py")
        size = ("--batch", "2", "--steps", "1", "--min_seconds", "0")
        common, sweep_size = (*size, "--loss_impl", "kernel"), size
        long_s, short_s = 150.0, 10.0
    else:
        one, large, members, seeds, limit, spec = "paper-1.25m", "base-large", 16, 3, 0, \
            "configs/sweep.py:paper"
        common = ("--batch", "256", "--steps", "50")
        sweep_size = ("--batch", "256", "--steps", "30", "--min_seconds", "0.5")
        long_s, short_s = 180.0, 30.0
        names = (f"{one} one run", f"{one} x {members} members", f"{large} one run")
    common = ("--dtype", "bfloat16", *common)
    profile = () if quick else ("--profile", "15")  # where this tree's step spends its time
    rate = Target("tokens_per_sec", "tokens/s", 40e6, True, _rate)
    # kernels per step: the <= 60 target is the encoder's kernels' (layer_impl=fused); the default
    # step runs the modules, the faster on an H200 (docs/performance.md), and is only counted
    one_run = (rate, *kernel_targets(quick, None))
    fused = [] if quick else [  # the quick point's heads (8 wide) do not fit the layer kernel
        Figure(f"{names[0]}, fused layer", ("--point", one, "--layer", "fused", *common),
               long_s, short_s, (rate, *kernel_targets(quick)),
               lambda r: {"tokens_per_sec": r["ours"]["tokens_per_sec"]},
               dump=True, sides=("now",), now_args=profile, deviceless=True)]
    mfu = (Target("mfu", "MFU", 0.30, True, lambda v: f"{100 * v:.1f}%"),)
    norm = [] if quick else [  # the GPU LayerNorm saves launches and moves 6% more bytes here
        Figure(f"{names[2]}, nnx LayerNorm", ("--point", large, "--norm", "xla", *common),
               long_s, short_s * 1.5, mfu, lambda r: {"mfu": r["ours"]["mfu"]}, sides=("now",))]
    return [
        Figure(names[0], ("--point", one, *common), long_s, short_s, one_run,
               lambda r: {"tokens_per_sec": r["ours"]["tokens_per_sec"]}, dump=True,
               now_args=profile, deviceless=not quick),
        *fused,
        Figure(f"{names[0]}, flash attention", ("--point", one, "--attention", "flash", *common),
               long_s, short_s, one_run,
            lambda r: {"tokens_per_sec": r["ours"]["tokens_per_sec"]}, dump=True, sides=("now",),
            deviceless=not quick),
        Figure(names[1], ("--point", one, "--members", str(members), *common),
               long_s, short_s * 1.5, (
            Target("tokens_per_sec", "aggregate tokens/s", 150e6, True, _rate),
            Target("bytes_per_member", "bytes accessed per member", 0.25e9, False,
                   lambda v: f"{v / 1e9:.3f} GB")), _members,
               now_args=("--members_impl", "both")),
        Figure(names[2], ("--point", large, *common), long_s, short_s * 1.5, mfu,
               lambda r: {"mfu": r["ours"]["mfu"]}),
        *norm], Sweep(
        "quick sweep" if quick else "paper sweep", spec, seeds, limit,
        ("--dtype", "bfloat16", *sweep_size), short_s * 1.5,
        Target("hours", f"projected device-hours, {seeds} seeds", 3.0, False,
               lambda v: f"{v:.2f} h"))


def sweep_spec(sweep: Sweep, tree: Path) -> str:
    """The sweep's spec as ``tree`` runs it (a spec of its own file stays as it is)."""
    return sweep.spec if os.path.isabs(sweep.spec) else f"{tree}/{sweep.spec}"


def sweep_points(spec: str) -> int:
    """The distinct model points of a sweep (what its projection measures)."""
    from minilm_jax.settings.recipes import load_config_file
    from minilm_jax.sweep import expand

    return len({run.point for run in expand(load_config_file(spec))})
