"""MLM masking on device, inside the jitted step, seeded by (seed, step).

Selection: every maskable position (real token, not in ``never_mask_ids``) is selected with
probability ``mask_prob``; at most ``max_predictions`` per sequence (the lowest-scoring ones) feed the
gathered MLM head. Replacement: ``mask`` (all selected -> <mask>, the paper) or ``bert`` (80% <mask>,
10% random token, 10% unchanged).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    mask_prob: float
    max_predictions: int
    replacement: str
    mask_id: int
    never_mask_ids: tuple[int, ...]
    random_token_min_id: int
    vocab_size: int

    @classmethod
    def from_config(cls, mlm, vocab_size: int) -> "MaskingConfig":
        if mlm.replacement not in ("mask", "bert"):
            from minilm_jax.model.config import ConfigError
            raise ConfigError(f"mlm.replacement: {mlm.replacement!r} is not one of ('mask', 'bert')")
        return cls(mask_prob=float(mlm.mask_prob), max_predictions=int(mlm.max_predictions),
                   replacement=mlm.replacement, mask_id=int(mlm.mask_id),
                   never_mask_ids=tuple(int(i) for i in mlm.never_mask_ids),
                   random_token_min_id=int(mlm.random_token_min_id), vocab_size=vocab_size)


@dataclasses.dataclass(frozen=True)
class MaskedBatch:
    inputs_bt: jax.Array  # tokens after replacement
    positions_bp: jax.Array  # gathered positions
    targets_bp: jax.Array  # original tokens at those positions
    weights_bp: jax.Array  # 1.0 where a position was really selected


jax.tree_util.register_dataclass(MaskedBatch, data_fields=["inputs_bt", "positions_bp", "targets_bp",
                                                            "weights_bp"], meta_fields=[])


def mask_tokens(key: jax.Array, tokens_bt: jax.Array, segments_bt: jax.Array,
                cfg: MaskingConfig) -> MaskedBatch:
    """Select and replace tokens; all shapes static ([B, T] in, [B, P] gathered)."""
    k_select, k_kind, k_random = jax.random.split(key, 3)
    maskable_bt = segments_bt != 0
    for token_id in cfg.never_mask_ids:
        maskable_bt &= tokens_bt != token_id
    scores_bt = jax.random.uniform(k_select, tokens_bt.shape)
    selected_bt = maskable_bt & (scores_bt < cfg.mask_prob)
    # Keep the P selected positions with the lowest scores (all of them when fewer than P).
    rank_scores_bt = jnp.where(selected_bt, scores_bt, 2.0)
    neg_top_bp, positions_bp = jax.lax.top_k(-rank_scores_bt, cfg.max_predictions)
    weights_bp = (neg_top_bp > -2.0).astype(jnp.float32)
    targets_bp = jnp.take_along_axis(tokens_bt, positions_bp, axis=1)
    b = tokens_bt.shape[0]
    rows_bp = jnp.arange(b)[:, None]
    if cfg.replacement == "mask":
        new_bp = jnp.full_like(targets_bp, cfg.mask_id)
    else:
        kind_bp = jax.random.uniform(k_kind, targets_bp.shape)
        random_bp = jax.random.randint(k_random, targets_bp.shape, cfg.random_token_min_id,
                                       cfg.vocab_size, dtype=targets_bp.dtype)
        new_bp = jnp.where(kind_bp < 0.8, cfg.mask_id, jnp.where(kind_bp < 0.9, random_bp, targets_bp))
    new_bp = jnp.where(weights_bp > 0, new_bp, targets_bp)  # unselected padding slots: unchanged
    inputs_bt = tokens_bt.at[rows_bp, positions_bp].set(new_bp)
    return MaskedBatch(inputs_bt=inputs_bt, positions_bp=positions_bp, targets_bp=targets_bp,
                       weights_bp=weights_bp)
