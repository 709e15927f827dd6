"""Compiles the project's Pallas kernels and a pre-training step for NVIDIA GPUs without one
(run by tests/test_gpu_compile.py in a process that sees the CUDA plugin's wheels): prints one JSON
object per card with what each compiled program holds."""

import json
import os
import sys
from functools import partial

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import SingleDeviceSharding  # noqa: E402

from minilm_jax import aot  # noqa: E402
from minilm_jax.configs import pretrain  # noqa: E402
from minilm_jax.gpu_targets import cuda_devices  # noqa: E402
from minilm_jax.hlo_kernels import step_kernels  # noqa: E402
from minilm_jax.model.embed_kernel import fused_embeddings  # noqa: E402
from minilm_jax.model.flash_attention import flash_attention  # noqa: E402
from minilm_jax.model.fused_layer import PARAMS, fused_encoder_layer  # noqa: E402
from minilm_jax.model.head_kernel import kernel_head_xent  # noqa: E402
from minilm_jax.model.target_platform import building_for  # noqa: E402
from minilm_jax.model.xent_kernel import kernel_linear_xent  # noqa: E402

TRITON = "__gpu$xla.gpu.triton"


def compiled_text(fn, device, *shapes) -> str:
    args = [jax.ShapeDtypeStruct(s, d, sharding=SingleDeviceSharding(device)) for s, d in shapes]
    return jax.jit(fn).trace(*args).lower().compile().as_text()


def layer_grad(device, t: int) -> str:
    """The fused encoder layer's value and gradient (bf16, dropout on) for ``t`` tokens."""
    b, h, i, a = 4, 32, 128, 2

    def loss(params, x, seg, key):
        y = fused_encoder_layer(x, seg, params, key, heads=a, attention_dropout=0.1,
                                hidden_dropout=0.1, eps=1e-5, dtype="bfloat16")
        return jnp.sum(y.astype(jnp.float32) ** 2)

    shapes = {"wq": (h, h), "wk": (h, h), "wv": (h, h), "wo": (h, h), "w1": (h, i), "w2": (i, h),
              "b1": (i,)}
    spec = partial(jax.ShapeDtypeStruct, sharding=SingleDeviceSharding(device))
    params = {name: spec(shapes.get(name, (h,)), jnp.float32) for name in PARAMS}
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).trace(
        params, spec((b, t, h), jnp.bfloat16), spec((b, t), jnp.int32),
        jax.random.key(0)).lower().compile().as_text()


def embed_grad(device) -> str:
    """The embedding kernels' gradient (bf16, projection 16 -> 32, dropout on)."""
    def loss(tables, params, tokens, types, key):
        y = fused_embeddings(tokens, types, tables, params, key, rate=0.1, eps=1e-5,
                             dtype="bfloat16")
        return jnp.sum(y.astype(jnp.float32) ** 2)

    spec = partial(jax.ShapeDtypeStruct, sharding=SingleDeviceSharding(device))
    f32, i32 = jnp.float32, jnp.int32
    tables = (spec((300, 16), f32), spec((32, 16), f32), spec((2, 16), f32))
    params = (spec((16,), f32), spec((16,), f32), spec((16, 32), f32), spec((32,), f32),
              spec((32,), f32), spec((32,), f32))
    return jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
        tables, params, spec((4, 32), i32), spec((4, 32), i32),
        jax.random.key(0)).lower().compile().as_text()


def main(cards: list[str]) -> None:
    """Every card: each Pallas kernel's forward and backward; on the A100 and L4 the encoder
    layer's (at T = 32) and the embeddings' alone, on the H100 as the whole paper-1.25m step
    runs them (the layer at T = 128, its 8-warp configuration)."""
    for card in cards:
        device = cuda_devices(card)[0]
        row = {"card": card, "kind": device.device_kind}
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
            if card != "h100":  # the H100's are the step's own (below)
                row.update({"layer_triton_calls": layer_grad(device, 32).count(TRITON),
                            "embed_triton_calls": embed_grad(device).count(TRITON)})
            else:
                config = pretrain.get_config("paper-1.25m")
                config.model.dtype, config.train.batch_size = "bfloat16", 8
                config.eval.batch_size, config.mesh.data = 8, 1
                report = aot.compile_train_step(config, [device], target=f"cuda:{card}",
                                                largest=500)
                calls = {part: [k["name"] for k in report.largest_kernels
                                if k["part"] == part and k["opcode"] == "custom-call"]
                         for part in ("embeddings", "encoder forward", "encoder backward")}
                row.update({
                    "layer_triton_calls": len(calls["encoder forward"] + calls["encoder backward"]),
                    "embed_triton_calls": len(calls["embeddings"]),
                    "step_kernels": report.kernels_per_step, "step_parts": report.kernels_by_part,
                    "encoder_kernels": [(k["part"], k["opcode"]) for k in report.largest_kernels
                                        if k["part"].startswith("encoder")],
                    "step_flops": report.flops_per_device,
                    "analytic_flops": report.analytic_flops_per_device,
                    "temp_bytes": report.memory["temp"]})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
