"""Optimizer and learning-rate schedules (optax)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from minilm_jax.model.config import ConfigError

SCHEDULES = ("inverse_sqrt", "linear", "cosine", "constant")


def warmup_steps(optim: ml_collections.ConfigDict, total_steps: int) -> int:
    """Configured warmup, or the paper's min(4000, 5% of total updates) when -1."""
    if optim.warmup_steps >= 0:
        return int(optim.warmup_steps)
    return max(1, min(4000, int(0.05 * total_steps)))


def schedule_values(optim: ml_collections.ConfigDict, total_steps: int) -> dict[str, float]:
    """The numbers of a run's schedule and decay: ``peak_lr``, ``warmup`` (steps), ``end_lr``
    (``peak * end_lr_fraction``, computed here once) and ``weight_decay``. A population passes each
    member's as arrays (:func:`make_schedule`, :func:`make_optimizer`), so a member computes exactly
    what a separate run with those values does."""
    return {"peak_lr": float(optim.peak_lr), "warmup": float(warmup_steps(optim, total_steps)),
            "end_lr": float(optim.peak_lr) * float(optim.end_lr_fraction),
            "weight_decay": float(optim.weight_decay)}


def make_schedule(optim: ml_collections.ConfigDict, total_steps: int,
                  values: dict[str, Any] | None = None) -> optax.Schedule:
    """lr(step) for step = 0, 1, ... (optax counts updates from 0; update s uses lr(s + 1) here,
    so the first update already has a non-zero rate). ``values`` (:func:`schedule_values`; scalars
    or traced arrays) replace the config's numbers; the schedule's kind is always the config's."""
    values = values if values is not None else schedule_values(optim, total_steps)
    peak, warm, end = values["peak_lr"], values["warmup"], values["end_lr"]
    name = optim.schedule
    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule: {name!r} is not one of {SCHEDULES}")

    def schedule(count: jax.Array) -> jax.Array:
        s = jnp.asarray(count, jnp.float32) + 1.0
        warmup = jnp.minimum(s / warm, 1.0)
        frac = jnp.clip((s - warm) / jnp.maximum(1.0, total_steps - warm), 0.0, 1.0)
        if name == "inverse_sqrt":  # paper: peak * min(s/W, sqrt(W/s))
            return peak * jnp.minimum(s / warm, jnp.sqrt(warm / s))
        if name == "linear":
            return warmup * (peak + (end - peak) * frac)
        if name == "cosine":
            return warmup * (end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
        return warmup * peak

    return schedule


def _decay_mask(params):
    """True for matrices and embedding tables; False for biases and LayerNorm/BatchNorm vectors."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   values: dict[str, Any] | None = None) -> optax.GradientTransformation:
    """AdamW with the configured schedule, optional decay mask and global-norm clipping
    (``values``: as for :func:`make_schedule`; the optimizer state's shape does not depend on them)."""
    values = values if values is not None else schedule_values(optim, total_steps)
    schedule = make_schedule(optim, total_steps, values)
    adamw = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                        weight_decay=values["weight_decay"],
                        mask=_decay_mask if optim.decay_mask else None)
    if optim.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.clip_norm), adamw)
    return adamw
