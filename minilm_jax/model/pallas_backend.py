"""How the project's Pallas kernels (:mod:`~minilm_jax.model.xent_kernel`,
:mod:`~minilm_jax.model.flash_attention`, the encoder's and head's) are compiled: by Triton on
GPUs, with :func:`compiler_params`; elsewhere Pallas' interpreter runs the same kernels (the CPU
tests). :func:`per_sequence_call`: the grid of one program per sequence the encoder's kernels
share."""

from __future__ import annotations

from typing import Any, Callable, Collection

import jax
from jax.experimental import pallas as pl

import minilm_jax.model.target_platform as target_platform


def interpret() -> bool:
    """Whether the kernels run in Pallas' interpreter (no GPU backend)."""
    return target_platform.platform() != "gpu"


def compiler_params():
    """Triton's parameters for the kernels on a GPU (None when interpreted)."""
    if interpret():
        return None
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=4, num_stages=2)


def _per_sequence(shape: tuple[int, ...]) -> pl.BlockSpec:
    return pl.BlockSpec((None, *shape[1:]), lambda b, k=len(shape) - 1: (b,) + (0,) * k)


def per_sequence_call(kernel: Callable, arrays: tuple[jax.Array, ...], per_sequence: Collection[int],
                      out_shape: Any, name: str, params: Any = None) -> Any:
    """``kernel`` over one program per sequence (the grid: the first array's leading axis): the
    arrays at the positions ``per_sequence`` and every output cut by their leading (batch) axis,
    the other arrays passed whole; ``params``: Triton's parameters (default
    :func:`compiler_params`)."""
    specs = [_per_sequence(a.shape) if n in per_sequence
             else pl.BlockSpec(a.shape, lambda b, k=a.ndim: (0,) * k)
             for n, a in enumerate(arrays)]
    outs = jax.tree.map(lambda o: _per_sequence(o.shape), out_shape)
    return pl.pallas_call(kernel, out_shape=out_shape, grid=(arrays[0].shape[0],),
                          in_specs=specs, out_specs=outs,
                          compiler_params=params if params is not None else compiler_params(),
                          interpret=interpret(), name=name)(*arrays)
