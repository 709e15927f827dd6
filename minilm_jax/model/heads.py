"""Task heads: MLM at gathered masked positions, sequence classification, regression."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import minilm_jax.model.target_platform as target_platform
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.init import make_initializers
from minilm_jax.model.head_kernel import head_kernel_applies, kernel_head_xent
from minilm_jax.model.layers import (LayerNorm, dropout, gelu_exact, make_layer_norm,
                                     make_linear)
from minilm_jax.model.xent import (fused_linear_logprobs, fused_linear_xent, resolve_loss_impl,
                                   softmax_xent_sum)
from minilm_jax.model.xent_kernel import (kernel_applies, kernel_linear_logprobs,
                                          kernel_linear_xent)


def gather_positions(hidden_bth: jax.Array, positions: jax.Array) -> jax.Array:
    """Hidden states at ``positions``: per sequence ``[B, P]`` -> ``[B, P, H]``, or rows packed
    across the batch ``[N]`` (flat indices ``b * T + t``) -> ``[N, H]``."""
    if positions.ndim == 1:
        return hidden_bth.reshape(-1, hidden_bth.shape[-1])[positions]
    return jnp.take_along_axis(hidden_bth, positions[:, :, None], axis=1)


class MlmHead(nnx.Module):
    """Linear(H->H) -> GELU -> LayerNorm -> Linear(H->V) + bias; untied from the input embedding.

    Evaluated only at gathered positions: P per sequence (``[B, P]``), or N rows packed across the
    batch (``[N]``, see :func:`minilm_jax.train.masking.pack_predictions`), so the V-wide output
    layer costs P/T (or N/(B*T)) of a full-sequence head.
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

    def __call__(self, hidden_bth: jax.Array, positions: jax.Array) -> jax.Array:
        """Logits at ``positions`` (``[B, P]`` -> ``[B, P, V]``; packed ``[N]`` -> ``[N, V]``)."""
        x = self.features(hidden_bth, positions)
        if target_platform.platform() != "cpu":
            return self.decoder(x)
        # On CPU the output layer runs as one 2-D GEMM with the bias folded in ([x, 1] @ [W; b]):
        # the bias gradient then comes out of the weight-gradient GEMM instead of a column
        # reduction over [B*P, V], which XLA's CPU backend does slowly (2-3x the whole head).
        dtype = jnp.dtype(self.cfg.dtype)
        x_nh = x.reshape(-1, x.shape[-1])
        x_nh1 = jnp.concatenate([x_nh, jnp.ones((x_nh.shape[0], 1), x.dtype)], -1)
        w_h1v = jnp.concatenate([self.decoder.kernel[...], self.decoder.bias[...][None]], 0)
        return (x_nh1.astype(dtype) @ w_h1v.astype(dtype)).reshape(*positions.shape, -1)

    def loss_impl(self) -> str:
        """The loss implementation this head runs: ``mlm_loss_impl`` resolved for this backend,
        ``kernel`` falling back to ``logits`` where the hidden size does not fit a block."""
        impl = resolve_loss_impl(self.cfg.mlm_loss_impl)
        if impl == "kernel" and not kernel_applies(self.cfg.hidden_dim):
            return "logits"
        return impl

    def transform_in_kernels(self) -> bool:
        """Whether the ``kernel`` loss runs this head's transform in its kernels too
        (:mod:`~minilm_jax.model.head_kernel`): the built-in transform (this class's
        :meth:`features`, a biased dense layer, the project's LayerNorm with scale and bias) at
        a hidden size the kernels take."""
        return (head_kernel_applies(self.cfg.hidden_dim)
                and type(self).features is MlmHead.features and type(self.norm) is LayerNorm
                and self.norm.plain() and self.dense.bias is not None)

    def loss(self, hidden_bth: jax.Array, positions: jax.Array, targets: jax.Array,
             weights: jax.Array) -> jax.Array:
        """Summed cross-entropy ``sum weights * CE`` over the gathered positions (float32 scalar);
        ``positions``, ``targets`` and ``weights`` per sequence ``[B, P]`` or packed ``[N]``.

        :meth:`loss_impl`: ``fused`` and ``kernel`` never materialise the ``[N, V]`` logits (see
        :mod:`minilm_jax.model.xent`, :mod:`minilm_jax.model.xent_kernel`); ``logits`` computes
        them with ``__call__`` first.
        """
        targets_n, weights_n = targets.reshape(-1), weights.reshape(-1).astype(jnp.float32)
        impl = self.loss_impl()
        if impl == "kernel" and self.transform_in_kernels():
            rows = gather_positions(hidden_bth, positions)
            norm = self.norm
            return kernel_head_xent(rows.reshape(-1, rows.shape[-1]), self.dense.kernel[...],
                                    self.dense.bias[...], norm.scale[...], norm.bias[...],
                                    self.decoder.kernel[...], self.decoder.bias[...], targets_n,
                                    weights_n, float(norm.epsilon), self.cfg.dtype)
        if impl == "logits":
            logits = self(hidden_bth, positions)
            return softmax_xent_sum(logits.reshape(-1, logits.shape[-1]), targets_n, weights_n)
        x = self.features(hidden_bth, positions)
        args = (x.reshape(-1, x.shape[-1]), self.decoder.kernel[...], self.decoder.bias[...],
                targets_n, weights_n)
        if impl == "kernel":
            return kernel_linear_xent(*args, self.cfg.dtype)
        return fused_linear_xent(*args, self.cfg.mlm_loss_chunk, self.cfg.dtype)

    def target_logprobs(self, hidden_bth: jax.Array, positions_bp: jax.Array,
                        targets_bp: jax.Array) -> jax.Array:
        """``log p(target)`` at the gathered positions ``[B, P]`` (float32; scoring), through the
        same implementation as :meth:`loss`."""
        b, p = positions_bp.shape
        impl = self.loss_impl()
        if impl == "logits":
            logits_bpv = self(hidden_bth, positions_bp)
            lse_bp = jax.nn.logsumexp(logits_bpv.astype(jnp.float32), axis=-1)
            picked_bp = jnp.take_along_axis(logits_bpv, targets_bp[..., None], axis=-1)[..., 0]
            return picked_bp.astype(jnp.float32) - lse_bp
        x_bph = self.features(hidden_bth, positions_bp)
        args = (x_bph.reshape(b * p, -1), self.decoder.kernel[...], self.decoder.bias[...],
                targets_bp.reshape(-1))
        if impl == "kernel":
            return kernel_linear_logprobs(*args, self.cfg.dtype).reshape(b, p)
        return fused_linear_logprobs(*args, self.cfg.mlm_loss_chunk, self.cfg.dtype).reshape(b, p)


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
