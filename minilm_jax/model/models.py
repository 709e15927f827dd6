"""Full models: encoder + head. Build one from a point with :func:`build_mlm` / :func:`build_classifier`."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.config import ModelConfig
from minilm_jax.model.heads import ClassificationHead, MlmHead
from minilm_jax.model.layers import split_key
from minilm_jax.model.registry import build_encoder
from minilm_jax.model.sizes import with_variant_defaults


class MaskedLM(nnx.Module):
    """Encoder + MLM head evaluated at ``masked_positions [B, P]``; returns logits ``[B, P, V]``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = build_encoder(cfg, rngs)
        self.mlm_head = MlmHead(cfg, rngs=rngs)

    def __call__(self, tokens_bt: jax.Array, masked_positions_bp: jax.Array,
                 segment_ids_bt: jax.Array | None = None, token_types_bt: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None, train: bool = False) -> jax.Array:
        chex.assert_rank(masked_positions_bp, 2)
        chex.assert_equal_shape_prefix([tokens_bt, masked_positions_bp], 1)
        hidden_bth = self.encoder(tokens_bt, segment_ids_bt, token_types_bt,
                                  dropout_key=dropout_key, train=train)
        logits_bpv = self.mlm_head(hidden_bth, masked_positions_bp)
        chex.assert_shape(logits_bpv, (*masked_positions_bp.shape, self.cfg.vocab_size))
        return logits_bpv

    def mlm_loss(self, tokens_bt: jax.Array, masked_positions_bp: jax.Array,
                 targets_bp: jax.Array, weights_bp: jax.Array,
                 segment_ids_bt: jax.Array | None = None, *, dropout_key: jax.Array | None = None,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """(sum of cross-entropy over the weighted positions, sum of the weights): the training
        and evaluation loss, through the head's fastest implementation for this backend."""
        hidden_bth = self.encoder(tokens_bt, segment_ids_bt, None, dropout_key=dropout_key,
                                  train=train)
        with jax.named_scope("output_layer"):
            loss_sum = self.mlm_head.loss(hidden_bth, masked_positions_bp, targets_bp, weights_bp)
        return loss_sum, jnp.sum(weights_bp.astype(jnp.float32))

    def target_logprobs(self, tokens_bt: jax.Array, positions_bp: jax.Array,
                        targets_bp: jax.Array) -> jax.Array:
        """Deterministic ``log p(target)`` at the gathered positions ``[B, P]`` (float32;
        minimal-pair scoring), without a ``[B, P, V]`` log-softmax array."""
        return self.mlm_head.target_logprobs(self.encoder(tokens_bt), positions_bp, targets_bp)

    def all_logits(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        """Deterministic logits at every position ``[B, T, V]`` (inspection, export checks)."""
        b, t = tokens_bt.shape
        positions_bt = jnp.broadcast_to(jnp.arange(t), (b, t))
        return self(tokens_bt, positions_bt, segment_ids_bt)


class SequenceClassifier(nnx.Module):
    """Encoder + pooler + linear head; ``num_labels == 1`` gives a regressor."""

    def __init__(self, cfg: ModelConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.num_labels = num_labels
        self.encoder = build_encoder(cfg, rngs)
        self.head = ClassificationHead(cfg, num_labels, rngs=rngs)

    def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array | None = None,
                 token_types_bt: jax.Array | None = None, *, dropout_key: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        if segment_ids_bt is None:
            segment_ids_bt = (tokens_bt != self.cfg.pad_id).astype(jnp.int32)
        k_enc, k_head = split_key(dropout_key, 2)
        hidden_bth = self.encoder(tokens_bt, segment_ids_bt, token_types_bt, dropout_key=k_enc,
                                  train=train)
        logits_bl = self.head(hidden_bth, segment_ids_bt, k_head)
        chex.assert_shape(logits_bl, (tokens_bt.shape[0], self.num_labels))
        return logits_bl


def build_mlm(cfg: ModelConfig, seed: int = 0) -> MaskedLM:
    """A freshly initialised masked LM (a variant's undeclared fields at their defaults)."""
    return MaskedLM(with_variant_defaults(cfg), rngs=nnx.Rngs(params=seed))


def build_classifier(cfg: ModelConfig, num_labels: int, seed: int = 0) -> SequenceClassifier:
    """A freshly initialised classifier (regressor when ``num_labels == 1``; a variant's
    undeclared fields at their defaults)."""
    return SequenceClassifier(with_variant_defaults(cfg), num_labels, rngs=nnx.Rngs(params=seed))
