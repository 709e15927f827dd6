"""Compiles the fused encoder layer (forward and backward) and a paper-1.25m bf16 pre-training step
for NVIDIA GPUs without one (run by tests/test_fused_layer.py in a process that sees the CUDA
plugin's wheels): prints one JSON object per card."""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import SingleDeviceSharding  # noqa: E402

from minilm_jax import aot  # noqa: E402
from minilm_jax.configs import pretrain  # noqa: E402
from minilm_jax.gpu_targets import cuda_devices  # noqa: E402
from minilm_jax.hlo_kernels import step_kernels  # noqa: E402
from minilm_jax.model.fused_layer import PARAMS, fused_encoder_layer  # noqa: E402
from minilm_jax.model.target_platform import building_for  # noqa: E402

TRITON = "__gpu$xla.gpu.triton"
B, T, H, I, A = 4, 128, 32, 128, 2


def main(cards: list[str]) -> None:
    for card in cards:
        device = cuda_devices(card)[0]

        def spec(shape, dtype):
            return jax.ShapeDtypeStruct(shape, dtype, sharding=SingleDeviceSharding(device))

        def loss(params, x, seg, key):
            y = fused_encoder_layer(x, seg, params, key, heads=A, attention_dropout=0.1,
                                    hidden_dropout=0.1, eps=1e-5, dtype="bfloat16")
            return jnp.sum(y.astype(jnp.float32) ** 2)

        shapes = {"wq": (H, H), "wk": (H, H), "wv": (H, H), "wo": (H, H), "w1": (H, I),
                  "w2": (I, H), "b1": (I,)}
        params = {name: spec(shapes.get(name, (H,)), jnp.float32) for name in PARAMS}
        with building_for("gpu"):
            layer = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).trace(
                params, spec((B, T, H), jnp.bfloat16), spec((B, T), jnp.int32),
                jax.random.key(0)).lower().compile().as_text()
            config = pretrain.get_config("paper-1.25m")
            config.model.dtype, config.train.batch_size = "bfloat16", 16
            config.eval.batch_size, config.mesh.data = 16, 1
            report = aot.compile_train_step(config, [device], target=f"cuda:{card}", largest=500)
        print(json.dumps({
            "card": card, "triton_calls": layer.count(TRITON),
            "layer_kernels": step_kernels(layer).total,
            "step_parts": report.kernels_by_part,
            "encoder_kernels": [(k["part"], k["opcode"]) for k in report.largest_kernels
                                if k["part"].startswith("encoder")]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
