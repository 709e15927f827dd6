"""Device mesh and shardings: a ``members`` axis (a population's members spread over devices; size 1
for a single run), a ``data`` axis (data parallel) and an ``fsdp`` axis (parameters and optimizer
state sharded, batch split over ``data`` and ``fsdp``)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from minilm_jax.model.config import ConfigError

AXES = ("members", "data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None, members: int = 1) -> Mesh:
    """A ``(members, data, fsdp)`` mesh over ``devices`` (all devices by default); ``data=-1``
    takes the rest."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if members < 1 or n % members:
        raise ConfigError(f"mesh.members={members} must divide the device count {n}")
    if fsdp < 1 or (n // members) % fsdp:
        raise ConfigError(f"mesh.fsdp={fsdp} must divide the {n // members} devices of a member")
    if data == -1:
        data = n // members // fsdp
    if data < 1 or members * data * fsdp > n:
        raise ConfigError(f"mesh.members x mesh.data x mesh.fsdp = {members} x {data} x {fsdp} "
                          f"needs more than the {n} devices")
    return Mesh(np.asarray(devices[:members * data * fsdp]).reshape(members, data, fsdp), AXES)


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Shard the largest dimension divisible by the fsdp size; replicate small or indivisible leaves."""
    if fsdp == 1 or not shape:
        return P()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % fsdp == 0 and shape[d] >= fsdp:
            spec = [None] * len(shape)
            spec[d] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, abstract_state):
    """NamedShardings for a pytree of arrays/ShapeDtypeStructs, following :func:`param_spec`."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)),
                        abstract_state)


def batch_sharding(mesh: Mesh, batch_axis: int, ndim: int) -> NamedSharding:
    """Shard axis ``batch_axis`` of an ``ndim`` array over both mesh axes."""
    spec = [None] * ndim
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def member_axis(mesh: Mesh) -> str | None:
    """The mesh axis a population's member axis is sharded over (None on a one-device axis, so a
    single process's batch stays split over one axis only)."""
    return "members" if mesh.shape.get("members", 1) > 1 else None


def members_state_shardings(mesh: Mesh, abstract_state):
    """Shardings of a population's state: each leaf's leading member axis over ``members``, the
    rest as :func:`param_spec` shards one member's leaf."""
    fsdp, axis = mesh.shape["fsdp"], member_axis(mesh)
    return jax.tree.map(
        lambda x: NamedSharding(mesh, P(axis, *param_spec(tuple(x.shape[1:]), fsdp))),
        abstract_state)


def members_batch_sharding(mesh: Mesh, batch_axis: int, ndim: int) -> NamedSharding:
    """Axis 0 (members) over ``members``, axis ``batch_axis`` over ``data`` and ``fsdp``."""
    spec: list[Any] = [None] * ndim
    spec[0] = member_axis(mesh)
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """A positive batch size that splits evenly over the mesh's batch devices."""
    if int(batch_size) <= 0:
        raise ConfigError(f"{what} must be positive (got {batch_size})")
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % n:
        raise ConfigError(f"{what}={batch_size} must be divisible by the {n} devices of the mesh")


def check_train_shape(train: Any, mesh: Mesh) -> int:
    """The number of optimizer steps, after checking ``train`` (a config's ``train`` section):
    positive ``num_steps``, ``batch_size`` divisible by ``grad_accum`` and each micro-batch by the
    mesh's batch devices."""
    total_steps = int(train.num_steps)
    if total_steps <= 0:
        raise ConfigError(f"train.num_steps must be positive (got {total_steps})")
    if int(train.grad_accum) <= 0:
        raise ConfigError(f"train.grad_accum must be positive (got {train.grad_accum})")
    if int(train.batch_size) <= 0:
        raise ConfigError(f"train.batch_size must be positive (got {train.batch_size})")
    if train.batch_size % train.grad_accum:
        raise ConfigError(f"train.batch_size={train.batch_size} must be divisible by "
                          f"train.grad_accum={train.grad_accum}")
    check_batch_divisible(train.batch_size // train.grad_accum, mesh,
                          "train.batch_size / train.grad_accum")
    return total_steps
