"""How the project's Pallas kernels (:mod:`~minilm_jax.model.xent_kernel`,
:mod:`~minilm_jax.model.flash_attention`) are compiled: by Triton on GPUs, with
:func:`compiler_params`; elsewhere Pallas' interpreter runs the same kernels (the CPU tests)."""

from __future__ import annotations

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
