"""Task heads: MLM at gathered masked positions, sequence classification, regression."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.config import ModelConfig
from minilm_jax.model.init import make_initializers
from minilm_jax.model.layers import dropout, gelu_exact, make_layer_norm, make_linear
from minilm_jax.model.xent import (fused_linear_logprobs, fused_linear_xent, resolve_loss_impl,
                                   softmax_xent_sum)


def gather_positions(hidden_bth: jax.Array, positions_bp: jax.Array) -> jax.Array:
    """Hidden states at ``positions [B, P]``: ``[B, P, H]``."""
    return jnp.take_along_axis(hidden_bth, positions_bp[:, :, None], axis=1)


class MlmHead(nnx.Module):
    """Linear(H->H) -> GELU -> LayerNorm -> Linear(H->V) + bias; untied from the input embedding.

    Evaluated only at a static number P of gathered positions per sequence, so the V-wide output
    layer costs P/T of a full-sequence head.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = make_initializers(cfg.init)
        self.cfg = cfg
        self.dense = make_linear(cfg, init, cfg.hidden_dim, cfg.hidden_dim, rngs)
        self.norm = make_layer_norm(cfg, cfg.hidden_dim, rngs)
        self.decoder = make_linear(cfg, init, cfg.hidden_dim, cfg.vocab_size, rngs)

    def features(self, hidden_bth: jax.Array, positions_bp: jax.Array) -> jax.Array:
        """The transformed hidden states at the gathered positions ``[B, P, H]``."""
        x_bph = gather_positions(hidden_bth, positions_bp)
        return self.norm(gelu_exact(self.dense(x_bph))).astype(x_bph.dtype)

    def __call__(self, hidden_bth: jax.Array, positions_bp: jax.Array) -> jax.Array:
        x_bph = self.features(hidden_bth, positions_bp)
        b, p, h = x_bph.shape
        if jax.default_backend() != "cpu":
            return self.decoder(x_bph)  # [B, P, V]
        # On CPU the output layer runs as one 2-D GEMM with the bias folded in ([x, 1] @ [W; b]):
        # the bias gradient then comes out of the weight-gradient GEMM instead of a column
        # reduction over [B*P, V], which XLA's CPU backend does slowly (2-3x the whole head).
        dtype = jnp.dtype(self.cfg.dtype)
        x_nh1 = jnp.concatenate([x_bph.reshape(b * p, h), jnp.ones((b * p, 1), x_bph.dtype)], -1)
        w_h1v = jnp.concatenate([self.decoder.kernel[...], self.decoder.bias[...][None]], 0)
        return (x_nh1.astype(dtype) @ w_h1v.astype(dtype)).reshape(b, p, -1)  # [B, P, V]

    def loss(self, hidden_bth: jax.Array, positions_bp: jax.Array, targets_bp: jax.Array,
             weights_bp: jax.Array) -> jax.Array:
        """Summed cross-entropy ``sum weights * CE`` over the gathered positions (float32 scalar).

        ``mlm_loss_impl``: ``fused`` never materialises the ``[B*P, V]`` logits (see
        :mod:`minilm_jax.model.xent`); ``logits`` computes them with ``__call__`` first.
        """
        targets_n, weights_n = targets_bp.reshape(-1), weights_bp.reshape(-1).astype(jnp.float32)
        if resolve_loss_impl(self.cfg.mlm_loss_impl) == "logits":
            logits_bpv = self(hidden_bth, positions_bp)
            return softmax_xent_sum(logits_bpv.reshape(-1, logits_bpv.shape[-1]), targets_n,
                                    weights_n)
        x_bph = self.features(hidden_bth, positions_bp)
        return fused_linear_xent(x_bph.reshape(-1, x_bph.shape[-1]), self.decoder.kernel[...],
                                 self.decoder.bias[...], targets_n, weights_n,
                                 self.cfg.mlm_loss_chunk, self.cfg.dtype)

    def target_logprobs(self, hidden_bth: jax.Array, positions_bp: jax.Array,
                        targets_bp: jax.Array) -> jax.Array:
        """``log p(target)`` at the gathered positions ``[B, P]`` (float32; scoring), through the
        same implementation as :meth:`loss`."""
        b, p = positions_bp.shape
        if resolve_loss_impl(self.cfg.mlm_loss_impl) == "logits":
            logits_bpv = self(hidden_bth, positions_bp).astype(jnp.float32)
            picked_bp = jnp.take_along_axis(logits_bpv, targets_bp[..., None], axis=-1)[..., 0]
            return picked_bp - jax.nn.logsumexp(logits_bpv, axis=-1)
        x_bph = self.features(hidden_bth, positions_bp)
        logp_n = fused_linear_logprobs(x_bph.reshape(b * p, -1), self.decoder.kernel[...],
                                       self.decoder.bias[...], targets_bp.reshape(-1),
                                       self.cfg.mlm_loss_chunk, self.cfg.dtype)
        return logp_n.reshape(b, p)


class Pooler(nnx.Module):
    """Sequence summary ``[B, H]``: first token -> Linear -> tanh (``cls_tanh``), or a learned,
    padding-masked softmax-weighted sum over positions (``weighted_sum``)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = make_initializers(cfg.init)
        self.kind = cfg.pooler
        if self.kind == "cls_tanh":
            self.dense = make_linear(cfg, init, cfg.hidden_dim, cfg.hidden_dim, rngs)
        else:
            self.position_logits = nnx.Param(jnp.zeros((cfg.max_len,), jnp.dtype(cfg.param_dtype)))

    def __call__(self, hidden_bth: jax.Array, segment_ids_bt: jax.Array) -> jax.Array:
        if self.kind == "cls_tanh":
            return jnp.tanh(self.dense(hidden_bth[:, 0]))
        t = hidden_bth.shape[1]
        logits_bt = jnp.where(segment_ids_bt != 0, self.position_logits[...][:t][None], -1e9)
        weights_bt = jax.nn.softmax(logits_bt.astype(jnp.float32), axis=-1).astype(hidden_bth.dtype)
        return jnp.einsum("bt,bth->bh", weights_bt, hidden_bth)


class ClassificationHead(nnx.Module):
    """Pooler -> dropout -> Linear(H -> num_labels). ``num_labels == 1`` is regression (STS-B)."""

    def __init__(self, cfg: ModelConfig, num_labels: int, *, rngs: nnx.Rngs):
        init = make_initializers(cfg.init)
        self.cfg = cfg
        self.pooler = Pooler(cfg, rngs=rngs)
        self.classifier = make_linear(cfg, init, cfg.hidden_dim, num_labels, rngs)

    def __call__(self, hidden_bth: jax.Array, segment_ids_bt: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        pooled_bh = dropout(self.pooler(hidden_bth, segment_ids_bt), self.cfg.hidden_dropout, key,
                            self.cfg.dropout_rng)
        return self.classifier(pooled_bh).astype(jnp.float32)  # [B, num_labels]
