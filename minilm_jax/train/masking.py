"""MLM masking on device, inside the jitted step, seeded by (seed, step).

Selection: every maskable position (real token, not in ``never_mask_ids``) is selected with
probability ``mask_prob``; at most ``max_predictions`` per sequence (the lowest-scoring ones) feed the
gathered MLM head. ``max_predictions=0`` derives the cap from the mask probability
(:func:`minilm_jax.settings.mlm_cap.effective_max_predictions`: at most ``MASK_CAP_TAIL`` of the selected
positions dropped in a sequence of maskable tokens only); an explicit cap that would drop more than
``MASK_CAP_TOLERANCE`` of them is refused before a run starts (``settings.mlm_cap.mask_cap_problems``).
Replacement: ``mask`` (all selected -> <mask>, the paper) or ``bert`` (80% <mask>,
10% random token, 10% unchanged).

Packing: the selected positions of a whole (micro-)batch are packed into one list of
:func:`packed_rows` rows (``mask_prob`` x tokens plus a 7-sigma binomial margin, a multiple of 128)
before the output layer, instead of ``B x max_predictions`` rows of which ~40% are padding at the
paper's 15% of 128 tokens with 32 slots. Same positions, same targets, same loss (summed in
another order).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from minilm_jax.settings.mlm_cap import derived_max_predictions


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    mask_prob: float
    max_predictions: int  # 0: derived (:meth:`per_sequence`)
    replacement: str
    mask_id: int
    never_mask_ids: tuple[int, ...]
    random_token_min_id: int
    vocab_size: int
    # The (static) selection probability that sizes the packed prediction rows: the config's
    # mask_prob, or a population group's largest one (``mask_prob`` itself may be traced there).
    pack_prob: float = 0.0
    # Shards of the batch (data x fsdp): each shard's sequences are packed on their own, so the
    # packed rows stay on the devices that hold them.
    pack_groups: int = 1

    @classmethod
    def from_config(cls, mlm, vocab_size: int) -> "MaskingConfig":
        if mlm.replacement not in ("mask", "bert"):
            from minilm_jax.model.config import ConfigError
            raise ConfigError(f"mlm.replacement: {mlm.replacement!r} is not one of ('mask', 'bert')")
        return cls(mask_prob=float(mlm.mask_prob), max_predictions=int(mlm.max_predictions),
                   replacement=mlm.replacement, mask_id=int(mlm.mask_id),
                   never_mask_ids=tuple(int(i) for i in mlm.never_mask_ids),
                   random_token_min_id=int(mlm.random_token_min_id), vocab_size=vocab_size,
                   pack_prob=float(mlm.mask_prob))

    def per_sequence(self, seq_len: int) -> int:
        """The positions predicted per sequence of ``seq_len`` tokens at most: ``max_predictions``,
        or where it is 0 the cap derived from the static selection probability (``pack_prob``;
        ``mask_prob`` in a config built by hand), as the config's
        :func:`~minilm_jax.settings.mlm_cap.effective_max_predictions`."""
        if self.max_predictions:
            return self.max_predictions
        return derived_max_predictions(float(self.pack_prob or self.mask_prob), seq_len)


def maskable_positions(tokens_bt: jax.Array, segments_bt: jax.Array,
                       cfg: MaskingConfig) -> jax.Array:
    """Where a position may be selected: a real token (not padding), not in ``never_mask_ids``."""
    maskable_bt = segments_bt != 0
    for token_id in cfg.never_mask_ids:
        maskable_bt &= tokens_bt != token_id
    return maskable_bt


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
    maskable_bt = maskable_positions(tokens_bt, segments_bt, cfg)
    scores_bt = jax.random.uniform(k_select, tokens_bt.shape)
    selected_bt = maskable_bt & (scores_bt < cfg.mask_prob)
    # Keep the P selected positions with the lowest scores (all of them when fewer than P).
    rank_scores_bt = jnp.where(selected_bt, scores_bt, 2.0)
    neg_top_bp, positions_bp = jax.lax.top_k(-rank_scores_bt,
                                             cfg.per_sequence(tokens_bt.shape[1]))
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


PACK_SIGMAS = 7.0  # margin of the packed rows over the expected count (binomial sd)
PACK_MULTIPLE = 128  # packed rows are a multiple of this (whole kernel blocks)


def packed_rows(num_tokens: int, sequences: int, cfg: MaskingConfig) -> int:
    """Rows that hold every selected position of ``num_tokens`` tokens in ``sequences`` sequences
    but with probability < 1e-11 (``pack_prob * n`` + 7 binomial sd, rounded up to a multiple of
    128), capped at ``sequences * max_predictions`` (no packing then)."""
    p, n = cfg.pack_prob, num_tokens
    bound = p * n + PACK_SIGMAS * math.sqrt(n * p * (1.0 - p)) + 1.0
    rows = int(math.ceil(bound / PACK_MULTIPLE)) * PACK_MULTIPLE
    return min(rows, sequences * cfg.per_sequence(num_tokens // sequences))


@dataclasses.dataclass(frozen=True)
class PackedPredictions:
    rows_n: jax.Array  # flat token index b * T + t of each predicted row
    targets_n: jax.Array
    weights_n: jax.Array  # 0.0 on rows past the last selected position


jax.tree_util.register_dataclass(PackedPredictions, data_fields=["rows_n", "targets_n",
                                                                  "weights_n"], meta_fields=[])


def pack_predictions(mb: MaskedBatch, cfg: MaskingConfig) -> PackedPredictions:
    """The selected positions of ``mb`` packed across its sequences (in batch order) into
    :func:`packed_rows` rows, rows of weight 0 after them; per shard of the batch where
    ``cfg.pack_groups`` > 1 (each shard's rows, then the next shard's). A selected position past
    the packed rows (probability < 1e-11 a batch) is left out and so not counted in the loss's
    weight sum (the logged ``predictions``). Always packed, also where the bound is the cap
    ``B x P``: one layout of the output layer's rows for every batch size."""
    b, t = mb.inputs_bt.shape
    groups = cfg.pack_groups if b % cfg.pack_groups == 0 else 1
    rows = packed_rows(b // groups * t, b // groups, cfg)
    flat_bp = jnp.arange(b, dtype=mb.positions_bp.dtype)[:, None] * t + mb.positions_bp

    def pack(weights_n, flat_n, targets_n):
        # The indices of the selected slots in increasing order, as jnp.nonzero(size=rows,
        # fill_value=0) gives them: the smallest ``rows`` of (index where selected, else n), one
        # sort (jnp.nonzero's cumulative sum and scatter are ~8 kernels on a GPU).
        n = weights_n.shape[0]
        key_n = jnp.where(weights_n > 0, jnp.arange(n, dtype=jnp.int32), n)
        first_n = jnp.sort(key_n)[:rows]
        keep_n = first_n < n
        index_n = jnp.where(keep_n, first_n, 0)
        return flat_n[index_n], targets_n[index_n], jnp.where(keep_n, weights_n[index_n], 0.0)

    per_group = [a.reshape(groups, -1) for a in (mb.weights_bp, flat_bp, mb.targets_bp)]
    rows_n, targets_n, weights_n = (a.reshape(-1) for a in jax.vmap(pack)(*per_group))
    return PackedPredictions(rows_n=rows_n, targets_n=targets_n, weights_n=weights_n)


def predicted(mb: MaskedBatch, cfg: MaskingConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(rows, targets, weights) the output layer evaluates: :func:`pack_predictions`' ``[N]``."""
    packed = pack_predictions(mb, cfg)
    return packed.rows_n, packed.targets_n, packed.weights_n
