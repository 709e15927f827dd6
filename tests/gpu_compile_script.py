"""Compiles the project's Pallas kernels and a pre-training step for NVIDIA GPUs without one
(run by tests/test_gpu_compile.py in a process that sees the CUDA plugin's wheels): prints one JSON
object per card with what each compiled program holds."""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax._src.pallas.triton import lowering as triton_lowering  # noqa: E402
from jax.sharding import Mesh, SingleDeviceSharding  # noqa: E402

from minilm_jax import aot  # noqa: E402
from minilm_jax.configs import pretrain  # noqa: E402
from minilm_jax.gpu_targets import cuda_devices  # noqa: E402
from minilm_jax.hlo_kernels import step_kernels  # noqa: E402
from minilm_jax.model.flash_attention import flash_attention  # noqa: E402
from minilm_jax.model.head_kernel import kernel_head_xent  # noqa: E402
from minilm_jax.model.target_platform import building_for  # noqa: E402
from minilm_jax.model.xent_kernel import kernel_linear_xent  # noqa: E402

TRITON = "__gpu$xla.gpu.triton"
SMALL_POINT = "E32-H32-I32-L1-A1-V1000"  # the small step's model (cards other than the H100)
SHORT_CARDS = ("l4",)  # cards whose small step runs at T = 32 (the layer kernel's 4 warps)


def compiled_text(fn, device, *shapes) -> str:
    args = [jax.ShapeDtypeStruct(s, d, sharding=SingleDeviceSharding(device)) for s, d in shapes]
    with aot.target_context(Mesh(np.array([device]), ("x",))):
        lowered = jax.jit(fn).trace(*args).lower()
    return lowered.compile().as_text()


seen: set[str | None] = set()  # the abstract mesh's device at each Pallas kernel's lowering
_lower_to_triton = triton_lowering.lower_jaxpr_to_triton_module


def _recording_lowering(*args, **kwargs):
    """What jax >= 0.11 asks for the card's compute capability when no GPU is attached: the
    abstract mesh's device at the time a kernel is lowered (aot.target_context sets it)."""
    device = jax.sharding.get_abstract_mesh().abstract_device
    seen.add(None if device is None else device.device_kind)
    return _lower_to_triton(*args, **kwargs)


triton_lowering.lower_jaxpr_to_triton_module = _recording_lowering


def main(cards: list[str]) -> None:
    """Every card: the flash-attention and output-layer kernels' forward and backward, and a
    whole step with ``layer_impl="fused"`` (the embeddings' and encoder layer's kernels):
    paper-1.25m's on the H100 at T = 128 (the layer's 8-warp configuration), on the A100 and L4
    a small one (:data:`SMALL_POINT`; at T = 128 on the A100, the step the device check's
    deviceless count is checked against, and T = 32 on the L4: the 4-warp configuration)."""
    for card in cards:
        device = cuda_devices(card)[0]
        row = {"card": card, "kind": device.device_kind}
        seen.clear()
        with building_for("gpu"):
            def flash_loss(q, k, v, seg):
                return jnp.sum(flash_attention(q, k, v, seg).astype(jnp.float32))

            bf, i32, f32 = jnp.bfloat16, jnp.int32, jnp.float32
            flash = compiled_text(jax.grad(flash_loss, argnums=(0, 1, 2)), device,
                                  ((2, 128, 2, 16), bf), ((2, 128, 2, 16), bf),
                                  ((2, 128, 2, 16), bf), ((2, 128), i32))

            def xent(x, w, b, t, wt):
                return kernel_linear_xent(x, w, b, t, wt, "bfloat16")

            out = compiled_text(jax.grad(xent, argnums=(0, 1, 2)), device, ((256, 32), f32),
                                ((32, 1000), f32), ((1000,), f32), ((256,), i32), ((256,), f32))

            def head(rows, w, b, s, beta, wd, bd, t, wt):
                return kernel_head_xent(rows, w, b, s, beta, wd, bd, t, wt, 1e-5, "bfloat16")

            head_text = compiled_text(jax.grad(head, argnums=(0, 1, 2, 3, 4, 5, 6)), device,
                                      ((256, 32), bf), ((32, 32), f32), ((32,), f32),
                                      ((32,), f32), ((32,), f32), ((32, 1000), f32),
                                      ((1000,), f32), ((256,), i32), ((256,), f32))
            row.update({
                "flash_triton_calls": flash.count(TRITON),
                "flash_kernels": step_kernels(flash).total,
                "xent_triton_calls": out.count(TRITON), "xent_kernels": step_kernels(out).total,
                "head_triton_calls": head_text.count(TRITON)})
            # The H100's step is the figure's; the others a small one: one head and one FFN block
            # of H (the layer kernel unrolls its heads and FFN blocks: Triton compiles it in ~7
            # CPU-seconds instead of ~19 at paper-1.25m's two heads and four blocks; the kernel's
            # instructions are the same, only repeated less), on the L4 at T = 32 (4 warps)
            config = pretrain.get_config("paper-1.25m" if card == "h100" else SMALL_POINT)
            config.model.dtype, config.train.batch_size = "bfloat16", 8
            config.model.layer_impl = "fused"  # the embeddings' and layer's kernels
            config.eval.batch_size, config.mesh.data = 8, 1
            if card in SHORT_CARDS:
                config.model.max_len = 32
            report = aot.compile_train_step(config, [device], target=f"cuda:{card}", largest=500)
            calls = {part: [k["name"] for k in report.largest_kernels
                            if k["part"] == part and k["opcode"] == "custom-call"]
                     for part in ("embeddings", "encoder forward", "encoder backward")}
            row.update({
                "layer_triton_calls": len(calls["encoder forward"] + calls["encoder backward"]),
                "embed_triton_calls": len(calls["embeddings"]),
                "step_point": config.point, "step_max_len": config.model.max_len,
                "step_kernels": report.kernels_per_step, "step_parts": report.kernels_by_part,
                "encoder_kernels": [(k["part"], k["opcode"]) for k in report.largest_kernels
                                    if k["part"].startswith("encoder")],
                "step_flops": report.flops_per_device,
                "analytic_flops": report.analytic_flops_per_device,
                "temp_bytes": report.memory["temp"], "pallas_lowered_for": sorted(
                    "none" if kind is None else kind for kind in seen)})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
