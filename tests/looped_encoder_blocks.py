"""Blocks of the loop-shared encoder (tests/looped_encoder.py): how many times its one layer runs,
the loop that runs it, and one layer's counts."""

from __future__ import annotations

import jax
from flax import nnx


def repeats(cfg) -> int:
    """How many times the shared layer runs: the variant field ``loop_repeats`` (0:
    ``num_layers``)."""
    return int(cfg.extra_value("loop_repeats", 0)) or cfg.num_layers


def run_shared(layer: nnx.Module, x_bth, mask_b1tt, key, times: int):
    """``layer`` applied ``times`` times inside ``lax.fori_loop`` with static bounds; repeat ``i``
    drops out with ``key`` folded with ``i`` (None: no dropout)."""
    graphdef, state = nnx.split(layer)

    def body(i, x):
        repeat_key = None if key is None else jax.random.fold_in(key, i)
        return nnx.merge(graphdef, state)(x, mask_b1tt, repeat_key)

    return jax.lax.fori_loop(0, times, body, x_bth)


def layer_params(cfg) -> int:
    """One built-in layer's parameters: Q/K/V/O, the feed-forward block, two norms."""
    h, i = cfg.hidden_dim, cfg.ffn_dim
    return 4 * h * h + 2 * h * i + 9 * h + i


def layer_flops(cfg, seq_len: int) -> float:
    """One built-in layer's forward matmul FLOPs for ``seq_len`` tokens."""
    t, h, i = seq_len, cfg.hidden_dim, cfg.ffn_dim
    return 8.0 * t * h * h + 4.0 * t * t * h + 4.0 * t * h * i
