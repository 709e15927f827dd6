"""The pre-training program, built in one place: model config, optimizer and schedule, masking,
the sharded train state and the jitted train and evaluation steps with their shardings.

Used by the pre-training loop (``train.loop.Pretrainer``), the compile-only check (``aot``) and the
throughput benchmark (``bench``), so what they compile is what a run trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from minilm_jax.model.config import ModelConfig
from minilm_jax.run_config import model_from_config
from minilm_jax.train.masking import MaskingConfig
from minilm_jax.train.mesh import (batch_sharding, check_batch_divisible, check_train_shape,
                                   replicated)
from minilm_jax.train.optim import make_optimizer, make_schedule
from minilm_jax.train.state import BuiltState, lm_state
from minilm_jax.train.step import make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class PretrainProgram:
    """Everything one pre-training run compiles (see the module docstring).

    ``train_step(state, batch)`` takes batch arrays ``[K, M, b, T]`` (K optimizer steps per
    dispatch, M micro-batches of b rows) and donates the state; ``eval_step(params, rest, tokens,
    segments, valid, batch_index)`` gives (loss sum, count) over one evaluation batch."""

    model: ModelConfig
    mesh: Any  # a Mesh, or an AbstractMesh for lowering only
    total_steps: int
    masking: MaskingConfig
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    state: BuiltState
    batch_sharding: Any
    eval_shardings: dict[str, Any]
    train_step: Callable[..., Any]
    eval_step: Callable[..., Any]
    batch_shape: tuple[int, int, int, int]  # [K, M, b, T] of one dispatch

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """One dispatch's batch as sharded shapes (for lowering without data)."""
        return {name: jax.ShapeDtypeStruct(self.batch_shape, jnp.int32,
                                           sharding=self.batch_sharding)
                for name in ("tokens", "segments")}


def pretrain_program(config: ml_collections.ConfigDict, mesh: Any,
                     model: ModelConfig | None = None) -> PretrainProgram:
    """The program of ``config`` on ``mesh`` (``model`` replaces ``config.model`` where a caller
    builds the model config itself, e.g. a benchmark's dtype); checks the batch shapes against the
    mesh first (a :class:`~minilm_jax.model.config.ConfigError` naming the field)."""
    model = model or model_from_config(config)
    tc = config.train
    total_steps = check_train_shape(tc, mesh)
    check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
    masking = MaskingConfig.from_config(config.mlm, model.vocab_size)
    schedule = make_schedule(config.optim, total_steps)
    optimizer = make_optimizer(config.optim, total_steps)
    built = lm_state(model, config.seed, optimizer, mesh)
    data = batch_sharding(mesh, batch_axis=2, ndim=4)
    train_step = jax.jit(
        make_train_step(built.graphdef, optimizer, schedule, masking, config.seed),
        in_shardings=(built.shardings, data), out_shardings=(built.shardings, replicated(mesh)),
        donate_argnums=0)
    row = batch_sharding(mesh, batch_axis=0, ndim=2)
    vec = batch_sharding(mesh, batch_axis=0, ndim=1)
    eval_step = jax.jit(
        make_eval_step(built.graphdef, masking, config.eval.seed),
        in_shardings=(built.shardings["params"], built.shardings["rest"], row, row, vec, None),
        out_shardings=replicated(mesh))
    k, micro = max(1, int(tc.steps_per_dispatch)), int(tc.grad_accum)
    return PretrainProgram(
        model=model, mesh=mesh, total_steps=total_steps, masking=masking, schedule=schedule,
        optimizer=optimizer, state=built, batch_sharding=data,
        eval_shardings={"tokens": row, "segments": row, "valid": vec}, train_step=train_step,
        eval_step=eval_step, batch_shape=(k, micro, int(tc.batch_size) // micro, model.max_len))
