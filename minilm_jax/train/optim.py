"""Optimizer and learning-rate schedules (optax)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
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


def _decay_mask(params):
    """True for matrices and embedding tables; False for biases and LayerNorm/BatchNorm vectors."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer_and_schedule(optim: ml_collections.ConfigDict, total_steps: int,
                           values: dict[str, Any] | None = None
                           ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the configured schedule, optional decay mask and global-norm clipping, and the
    schedule itself (the learning rate each step logs). ``values`` (:func:`schedule_values`; scalars
    or a population member's traced arrays) replace the config's numbers; the schedule's kind is
    always the config's, and the optimizer state's shape does not depend on them."""
    values = values if values is not None else schedule_values(optim, total_steps)
    schedule = _schedule(optim, total_steps, values)
    adamw = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                        weight_decay=values["weight_decay"],
                        mask=_decay_mask if optim.decay_mask else None)
    if optim.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.clip_norm), adamw), schedule
    return adamw, schedule
