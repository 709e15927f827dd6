"""Optimizer and learning-rate schedules (optax)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import jax.numpy as jnp
import ml_collections
import optax
from jax.flatten_util import ravel_pytree

import minilm_jax.model.target_platform as target_platform
from minilm_jax.model.config import ConfigError

SCHEDULES = ("inverse_sqrt", "linear", "cosine", "constant")


def moments_in_one_vector(fsdp: int) -> bool:
    """Whether Adam's moments are one vector each: in a program built for a GPU
    (:mod:`minilm_jax.model.target_platform`) whose parameters are not sharded (a raveled vector
    of sharded leaves would be gathered whole on every device). Elsewhere per leaf: on a CPU the
    raveled update rounds differently in the last place (XLA:CPU vectorises the long loop), and a
    CPU run keeps its numbers; a TPU compiler's kernels were not measured. A checkpoint keeps the
    layout it was written with, so a GPU run's optimizer state resumes on a GPU."""
    return int(fsdp) == 1 and target_platform.platform() == "gpu"


def warmup_steps(optim: ml_collections.ConfigDict, total_steps: int) -> int:
    """Configured warmup, or the paper's min(4000, 5% of total updates) when -1."""
    if optim.warmup_steps >= 0:
        return int(optim.warmup_steps)
    return max(1, min(4000, int(0.05 * total_steps)))


def schedule_values(optim: ml_collections.ConfigDict, total_steps: int) -> dict[str, float]:
    """The numbers of a run's schedule and decay: ``peak_lr``, ``warmup`` (steps), ``end_lr``
    (``peak * end_lr_fraction``), ``weight_decay``, and what the schedule derives from them
    (``inv_warmup``, ``inv_span``: reciprocals; ``drop``: ``peak - end``), computed here once in
    float32. A population passes each
    member's as arrays (:func:`optimizer_and_schedule`), so a member computes exactly
    what a separate run with those values does."""
    warm = warmup_steps(optim, total_steps)
    return {"peak_lr": float(optim.peak_lr), "warmup": float(warm),
            "end_lr": float(optim.peak_lr) * float(optim.end_lr_fraction),
            "weight_decay": float(optim.weight_decay),
            "inv_warmup": float(np.float32(1.0) / np.float32(warm)) if warm else float("inf"),
            "inv_span": float(np.float32(1.0) / np.float32(max(1, total_steps - warm))),
            "drop": float(np.float32(optim.peak_lr)
                          - np.float32(float(optim.peak_lr) * float(optim.end_lr_fraction)))}


def _schedule(optim: ml_collections.ConfigDict, total_steps: int,
              values: dict[str, Any]) -> optax.Schedule:
    """lr(step) for step = 0, 1, ... (optax counts updates from 0; update s uses lr(s + 1) here,
    so the first update already has a non-zero rate). ``values`` (:func:`schedule_values`; scalars
    or traced arrays) replace the config's numbers; the schedule's kind is always the config's."""
    peak, warm, end = values["peak_lr"], values["warmup"], values["end_lr"]
    inv_warm, inv_span, drop = values["inv_warmup"], values["inv_span"], values["drop"]
    name = optim.schedule
    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule: {name!r} is not one of {SCHEDULES}")

    def schedule(count: jax.Array) -> jax.Array:
        s = jnp.asarray(count, jnp.float32) + 1.0
        # Divisions by a run's constants are products with reciprocals computed once in float32
        # (what XLA does with a constant divisor), so a member's traced values give the same bits.
        warmup = jnp.minimum(s * inv_warm, 1.0)
        frac = jnp.clip((s - warm) * inv_span, 0.0, 1.0)
        if name == "inverse_sqrt":  # paper: peak * min(s/W, sqrt(W/s))
            return peak * jnp.minimum(s * inv_warm, jnp.sqrt(warm / s))
        if name == "linear":
            return warmup * (peak - drop * frac)
        if name == "cosine":
            return warmup * (end + drop * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
        return warmup * peak

    return schedule


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of every leaf of ``tree`` together: in a program built for a GPU reduced over
    one concatenated vector, one reduction instead of one per leaf (each a launch; 29 leaves at
    the 1.25M point), the same number up to the order of the float32 sum; elsewhere
    ``optax.tree.norm`` itself (a CPU's numbers keep their bits, and it copies nothing)."""
    if target_platform.platform() != "gpu":
        return optax.tree.norm(tree)
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    flat = jnp.concatenate(leaves)
    return jnp.sqrt(jnp.sum(flat * flat))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` over :func:`global_norm`: updates ``t / norm * max_norm``
    where the norm is ``max_norm`` or more, unchanged below (optax's own off a GPU)."""
    if target_platform.platform() != "gpu":
        return optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)
        keep = norm < max_norm  # optax's formula, element by element
        return jax.tree.map(lambda u: jnp.where(keep, u, (u / norm.astype(u.dtype)) * max_norm),
                            updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def over_one_vector(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` applied to every leaf raveled into one vector (its state too: Adam's moments
    are then two vectors). The same arithmetic element by element; on a GPU the update is one
    kernel instead of one per leaf (29 leaves at the 1.25M point: XLA fuses each leaf's moments
    and update into a multi-output kernel it does not merge across leaves). The updates come back
    as the parameters' tree, so the weight decay and learning rate stay per leaf."""

    def init(params):
        return inner.init(ravel_pytree(params)[0])

    def update(updates, state, params=None):
        flat, unravel = ravel_pytree(updates)
        flat_params = None if params is None else ravel_pytree(params)[0]
        flat, state = inner.update(flat, state, flat_params)
        return unravel(flat), state

    return optax.GradientTransformation(init, update)


def _decay_mask(params):
    """True for matrices and embedding tables; False for biases and LayerNorm/BatchNorm vectors."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer_and_schedule(optim: ml_collections.ConfigDict, total_steps: int,
                           values: dict[str, Any] | None = None, one_vector: bool = False
                           ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the configured schedule, optional decay mask and global-norm clipping, and the
    schedule itself (the learning rate each step logs). ``values`` (:func:`schedule_values`; scalars
    or a population member's traced arrays) replace the config's numbers; the schedule's kind is
    always the config's, and the optimizer state's shape does not depend on them.

    ``one_vector``: Adam's moments as one vector each (:func:`over_one_vector`; where
    :func:`moments_in_one_vector` says so); per leaf otherwise, each leaf's moments sharded as the
    leaf is."""
    values = values if values is not None else schedule_values(optim, total_steps)
    schedule = _schedule(optim, total_steps, values)
    adam = optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps)
    adamw = optax.chain(  # optax.adamw's chain, its moments one vector each where asked
        over_one_vector(adam) if one_vector else adam,
        optax.add_decayed_weights(values["weight_decay"],
                                  _decay_mask if optim.decay_mask else None),
        optax.scale_by_learning_rate(schedule))
    if optim.clip_norm > 0:
        return optax.chain(clip_by_global_norm(optim.clip_norm), adamw), schedule
    return adamw, schedule
