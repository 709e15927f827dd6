"""The fine-tuning programs, built in one place: the classifier's model config, optimizer and
schedule, the members' sharded state and the jitted train, predict and select steps (their
functions: :mod:`minilm_jax.finetune.step`) with their shardings."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

import minilm_jax.model.target_platform as target_platform
from minilm_jax.model import accounting
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.registry import encoder_factory
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.train.built_programs import BuiltPrograms
from minilm_jax.train.members import members_strategy
from minilm_jax.train.mesh import batch_sharding, replicated
from minilm_jax.train.optim import moments_in_one_vector, optimizer_and_schedule
from minilm_jax.train.state import BuiltState, UnbuiltState

from minilm_jax.settings.model_fields import changed_model_fields, with_overrides
from .step import make_finetune_step, make_predict_step, make_select, members_state
from .task_batches import INPUTS


def classifier_config(config: ml_collections.ConfigDict, pretrained: PretrainedRun | None,
                      asked_arch: str | None = None) -> ModelConfig:
    """The model fine-tuned: the checkpoint's (the architecture the command asked for, its
    ``model.*`` fields set away from the recipe's and a variant's fields applied on top; the
    checkpoint is then held to it by ``PretrainedRun.fit``) or the config's, then
    ``model_overrides``."""
    if pretrained is None:
        return with_overrides(model_from_config(config), config.model_overrides)
    changed = changed_model_fields(config)
    fields = {**pretrained.model.to_dict(), **changed, "arch": asked_arch or pretrained.model.arch,
              "extra": {**dict(pretrained.model.extra), **dict(changed.get("extra") or {})}}
    return with_overrides(ModelConfig.from_mapping(fields), config.model_overrides)


@dataclasses.dataclass(frozen=True)
class FinetuneProgram:
    """Everything a fine-tuning run compiles.

    ``train_step(state, batch)`` takes batch arrays ``[K, S, B, T]`` (labels ``[K, S, B]``) and
    donates the state; ``predict(params, rest, tokens, segments, token_types)`` gives the logits
    ``[S, B, C]`` of one evaluation batch (rows as ``eval_input_sharding``); ``select(state,
    improved [S])`` copies the improved members' parameters into ``state["selected"]``."""

    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    graphdef: nnx.GraphDef
    param_counts: accounting.ParamCounts
    state_sharding: Any
    batch_shardings: dict[str, Any]
    eval_input_sharding: Any
    train_step: Callable[..., Any]
    predict: Callable[..., Any]
    select: Callable[..., Any]


# The jitted programs of the fine-tuning runs built in this process (finetune_program's key): a
# sweep fine-tuning several checkpoints or seeds of one shape on one task builds them once.
_BUILT = BuiltPrograms()


def finetune_program(config: ml_collections.ConfigDict, model_cfg: ModelConfig, num_labels: int,
                     regression: bool, member_seeds: Sequence[int], mesh: Any, total_steps: int,
                     encoder_state: Any = None, population: bool = False
                     ) -> tuple[FinetuneProgram, UnbuiltState]:
    """The program of ``member_seeds`` members on ``mesh`` and their initial state, unbuilt (a run
    that resumes never builds it), from ``encoder_state`` (a pre-trained encoder, stacked per
    member for a ``population``) or random init (None)."""
    members = members_strategy(config.train.members, "train.members")
    # Everything the programs and the initial state are built from: the model (and the class its
    # arch names: an encoder module imported again builds another), the labels, the number of
    # members (their seeds and the pre-trained encoder's values are arguments of the initialiser
    # and the step: only the encoder's shapes count), the optimizer's fields and steps, how
    # members run, the mesh and the platform built for. Runs with equal keys share the jitted
    # functions, so each is traced and compiled once in this process (jax.jit caches per
    # function object).
    key = (model_cfg, encoder_factory(model_cfg.arch), int(num_labels), bool(regression),
           len(member_seeds), _shapes(encoder_state), bool(population),
           config.optim.to_json(), int(total_steps), members, mesh, target_platform.platform())

    def build() -> tuple[FinetuneProgram, BuiltState]:
        optimizer, schedule = optimizer_and_schedule(
            config.optim, total_steps, one_vector=moments_in_one_vector(mesh.shape["fsdp"]))
        built = members_state(model_cfg, num_labels, optimizer, len(member_seeds), mesh,
                              encoder_state, population=population)
        state_sharding = built.shardings
        batch_shardings = {k: batch_sharding(mesh, batch_axis=2, ndim=4) for k in INPUTS}
        batch_shardings["labels"] = batch_sharding(mesh, batch_axis=2, ndim=3)
        row = batch_sharding(mesh, batch_axis=0, ndim=2)
        train_step = jax.jit(
            make_finetune_step(built.graphdef, optimizer, schedule, regression, members),
            in_shardings=(state_sharding, batch_shardings),
            out_shardings=(state_sharding, replicated(mesh)), donate_argnums=0)
        predict = jax.jit(
            make_predict_step(built.graphdef, members),
            in_shardings=(state_sharding["params"], state_sharding["rest"], row, row, row),
            out_shardings=replicated(mesh))
        select = jax.jit(make_select(), in_shardings=(state_sharding, replicated(mesh)),
                         out_shardings=state_sharding, donate_argnums=0)
        return FinetuneProgram(optimizer, schedule, built.graphdef, built.param_counts,
                               state_sharding, batch_shardings, row, train_step, predict,
                               select), built

    program, built = _BUILT.get(key, build)
    # built only where no checkpoint is restored
    return program, built.unbuilt(encoder_state, np.asarray(member_seeds, np.int32))


def _shapes(tree: Any) -> Any:
    """The tree's structure and its leaves' shapes and dtypes (None for None)."""
    if tree is None:
        return None
    leaves, structure = jax.tree.flatten(tree)
    return structure, tuple((np.shape(x), str(x.dtype)) for x in leaves)
