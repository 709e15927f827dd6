"""The pre-training program, built in one place: model config, optimizer and schedule, masking,
the sharded train state and the jitted train and evaluation steps with their shardings.

Used by the pre-training loop (``train.pretrainer.Pretrainer``), the compile-only check (``aot``)
and the throughput benchmark (``bench``), so what they compile is what a run trains.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from flax import nnx

import minilm_jax.model.target_platform as target_platform
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.models import MaskedLM
from minilm_jax.model.registry import encoder_factory
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.train.built_programs import BuiltPrograms
from minilm_jax.train.masking import MaskingConfig
from minilm_jax.train.mesh import (BATCH_AXES, batch_sharding, check_batch_divisible,
                                   check_train_shape, members_batch_sharding,
                                   members_state_shardings, replicated)
from minilm_jax.train.optim import (moments_in_one_vector, optimizer_and_schedule,
                                    schedule_values)
from minilm_jax.train.state import BuiltState, WithSeed, lm_state
from minilm_jax.train.step import (MemberGroup, make_eval_step, make_population_eval,
                                   make_population_step, make_train_step, member_objects)


# The pre-training programs built in this process (pretrain_program's key): a run resumed in the
# process that stopped it, or runs differing only in their data, build theirs once.
_BUILT = BuiltPrograms()


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
        return abstract_batch(self.batch_shape, self.batch_sharding)


def abstract_batch(shape: tuple[int, ...], sharding: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """A dispatch's ``tokens`` and ``segments`` as sharded int32 shapes (no data)."""
    return {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)
            for name in ("tokens", "segments")}


def sharded_masking(masking: MaskingConfig, mesh: Any) -> MaskingConfig:
    """``masking`` packing its prediction rows per shard of the batch on ``mesh``."""
    shards = 1
    for axis in BATCH_AXES:
        shards *= int(mesh.shape[axis])
    return dataclasses.replace(masking, pack_groups=shards)


def eval_program(graphdef: Any, masking: MaskingConfig, eval_seed: int, mesh: Any,
                 param_shardings: Any = None, rest_shardings: Any = None
                 ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The compiled masked-LM evaluation step (fixed masks from ``eval_seed``) and the shardings
    of its batch rows; parameters as ``param_shardings`` / ``rest_shardings`` (replicated when
    not given: a checkpoint scored outside its run)."""
    rows = eval_row_shardings(mesh)
    eval_step = jax.jit(
        make_eval_step(graphdef, sharded_masking(masking, mesh), eval_seed),
        in_shardings=(replicated(mesh) if param_shardings is None else param_shardings,
                      replicated(mesh) if rest_shardings is None else rest_shardings,
                      *rows.values(), None),
        out_shardings=replicated(mesh))
    return eval_step, rows


def eval_row_shardings(mesh: Any) -> dict[str, Any]:
    """Shardings of an evaluation batch's rows (tokens, segments, valid), split over the batch."""
    row = batch_sharding(mesh, batch_axis=0, ndim=2)
    return {"tokens": row, "segments": row, "valid": batch_sharding(mesh, batch_axis=0, ndim=1)}


def pretrain_program(config: ml_collections.ConfigDict, mesh: Any,
                     model: ModelConfig | None = None) -> PretrainProgram:
    """The program of ``config`` on ``mesh`` (``model`` replaces ``config.model`` where a caller
    builds the model config itself, e.g. a benchmark's dtype); checks the batch shapes against the
    mesh first (a :class:`~minilm_jax.model.config.ConfigError` naming the field)."""
    model = model or model_from_config(config)
    tc = config.train
    total_steps = check_train_shape(tc, mesh)
    check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
    masking = sharded_masking(MaskingConfig.from_config(config.mlm, model.vocab_size), mesh)
    k, micro = max(1, int(tc.steps_per_dispatch)), int(tc.grad_accum)
    batch_shape = (k, micro, int(tc.batch_size) // micro, model.max_len)

    def build() -> PretrainProgram:  # for every seed: the seed is an argument of its programs
        optimizer, schedule = optimizer_and_schedule(
            config.optim, total_steps, one_vector=moments_in_one_vector(mesh.shape["fsdp"]))
        built = lm_state(model, optimizer, mesh)
        data = batch_sharding(mesh, batch_axis=2, ndim=4)
        train_step = jax.jit(
            make_train_step(built.graphdef, optimizer, schedule, masking),
            in_shardings=(built.shardings, data, replicated(mesh)),
            out_shardings=(built.shardings, replicated(mesh)), donate_argnums=0)
        eval_step, eval_shardings = eval_program(
            built.graphdef, masking, config.eval.seed, mesh, built.shardings["params"],
            built.shardings["rest"])
        return PretrainProgram(
            model=model, mesh=mesh, total_steps=total_steps, masking=masking, schedule=schedule,
            optimizer=optimizer, state=built, batch_sharding=data,
            eval_shardings=eval_shardings, train_step=train_step, eval_step=eval_step,
            batch_shape=batch_shape)

    # Everything the program is built from: the model (and the class its arch names: an encoder
    # module imported again builds another), the optimizer's fields, the steps, the masking, the
    # evaluation seed, the mesh, the dispatch's shape and the platform it is built for; then the
    # run's seed, bound to the programs all seeds share.
    key = (model, encoder_factory(model.arch), config.optim.to_json(), total_steps, masking,
           int(config.eval.seed), mesh, batch_shape, target_platform.platform())
    return with_seed(_BUILT.get(key, build), int(config.seed))


def with_seed(program: PretrainProgram, seed: int) -> PretrainProgram:
    """``program`` (built for every seed) for a run of ``seed``: its train step and initialiser
    take the seed as their last argument, one compiled program for all seeds."""
    return dataclasses.replace(
        program, train_step=WithSeed(program.train_step, seed),
        state=dataclasses.replace(program.state, init=WithSeed(program.state.init, seed)))


@dataclasses.dataclass(frozen=True)
class PopulationProgram:
    """Everything a population of N members compiles (see :mod:`minilm_jax.train.population`).

    ``state`` leaves carry a leading member axis; ``state["hyper"]`` holds each member's values
    and ``state["live"]`` whether it still trains. ``train_step(state, batch)`` takes batch arrays
    ``[N, K, M, b, T]`` and gives metrics ``[K, N]``; ``eval_step(params, rest, mask_prob, tokens,
    segments, valid, batch_index)`` gives (loss sums, counts) ``[N]``."""

    model: ModelConfig  # member 0's (every member has the same shapes)
    mesh: Any
    total_steps: int
    size: int
    groups: list[MemberGroup]
    state: BuiltState
    batch_sharding: Any
    eval_shardings: dict[str, Any]
    train_step: Callable[..., Any]
    eval_step: Callable[..., Any]
    batch_shape: tuple[int, int, int, int, int]  # [N, K, M, b, T] of one dispatch

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """One dispatch's batch as sharded shapes (for lowering without data)."""
        return abstract_batch(self.batch_shape, self.batch_sharding)


def member_values(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, float]:
    """A member's per-member program values: schedule and decay numbers, mask probability, seed."""
    return {**schedule_values(config.optim, total_steps), "mask_prob": float(config.mlm.mask_prob),
            "seed": int(config.seed)}


def population_program(configs: list[ml_collections.ConfigDict], mesh: Any,
                       members: str = "auto") -> PopulationProgram:
    """The program of a population whose members have ``configs`` (they differ in population
    fields only: :func:`minilm_jax.train.population.members_of` checks that) on ``mesh``;
    ``members`` (vmap | map | auto) says how members run together."""
    from minilm_jax.train.population import group_key

    size = len(configs)
    first = configs[0]
    tc = first.train
    total_steps = check_train_shape(tc, mesh)
    check_batch_divisible(first.eval.batch_size, mesh, "eval.batch_size")
    if size % mesh.shape["members"]:
        raise ConfigError(f"mesh.members={mesh.shape['members']} must divide the {size} members")
    models = [model_from_config(c) for c in configs]
    keys: dict[Any, list[int]] = {}
    for i, c in enumerate(configs):
        keys.setdefault(group_key(c), []).append(i)
    groups, makers, counts = [], [], None
    one_vector = moments_in_one_vector(mesh.shape["fsdp"])
    for indices in keys.values():
        c, model = configs[indices[0]], models[indices[0]]
        # a group shares its mask probability (group_key), so its packed rows are each member's
        masking = sharded_masking(MaskingConfig.from_config(c.mlm, model.vocab_size), mesh)
        built = lm_state(model, optimizer_and_schedule(c.optim, total_steps,
                                                       one_vector=one_vector)[0],
                         mesh)  # shapes only
        groups.append(MemberGroup(tuple(indices), built.graphdef, c.optim, masking, one_vector))
        makers.append(model)
        counts = counts or built.param_counts
    values = [member_values(c, total_steps) for c in configs]
    hyper = {k: jnp.asarray([v[k] for v in values],
                            jnp.int32 if k == "seed" else jnp.float32) for k in values[0]}

    def init_member(group_index: int, member_hyper):
        group = groups[group_index]
        optimizer, _, _, _ = member_objects(group, total_steps, member_hyper)
        model = MaskedLM(makers[group_index],
                         rngs=nnx.Rngs(params=jax.random.key(member_hyper["seed"])))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt_state": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32), "live": jnp.ones((), bool), "hyper": member_hyper}

    def init_fn(hyper):  # the members' values are an argument: one program for any values
        parts = []
        for gi, group in enumerate(groups):
            sub = jax.tree.map(lambda x: x[jnp.asarray(group.indices)], hyper)
            parts.append(jax.vmap(lambda h, gi=gi: init_member(gi, h))(sub))
        inverse = jnp.argsort(jnp.asarray([i for g in groups for i in g.indices]))
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[inverse], *parts)

    abstract = jax.eval_shape(init_fn, hyper)
    shardings = members_state_shardings(mesh, abstract)
    built = BuiltState(graphdef=groups[0].graphdef, param_counts=counts,
                       abstract=abstract, shardings=shardings,
                       init=functools.partial(jax.jit(init_fn, out_shardings=shardings), hyper))
    data = members_batch_sharding(mesh, batch_axis=3, ndim=5)
    train_step = jax.jit(make_population_step(groups, total_steps, size, members),
                         in_shardings=(shardings, data),
                         out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    eval_shardings = eval_row_shardings(mesh)
    eval_step = jax.jit(
        make_population_eval(groups, int(first.eval.seed), size, members),
        in_shardings=(shardings["params"], shardings["rest"], shardings["hyper"]["mask_prob"],
                      *eval_shardings.values(), None),
        out_shardings=replicated(mesh))
    k, micro = max(1, int(tc.steps_per_dispatch)), int(tc.grad_accum)
    return PopulationProgram(
        model=models[0], mesh=mesh, total_steps=total_steps, size=size, groups=groups,
        state=built, batch_sharding=data,
        eval_shardings=eval_shardings, train_step=train_step,
        eval_step=eval_step,
        batch_shape=(size, k, micro, int(tc.batch_size) // micro, models[0].max_len))
