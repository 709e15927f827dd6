"""Encoders: the RoBERTa/BERT-style transformer encoder and study B's convolutional front-end variant.

Every encoder maps ``tokens [B, T]`` (+ ``segment_ids``, ``token_types``) to hidden states ``[B, T, H]``.
Segment id 0 marks padding; packed documents carry ids 1, 2, ... and never attend to each other.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

import minilm_jax.model.embed_kernel as embed_kernel
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.init import Initializers, make_initializers
from minilm_jax.model.layers import (EncoderLayer, LayerNorm, _depends_on_params, attention_mask,
                                     dropout, gelu_exact, make_layer_norm, make_linear,
                                     runs_kernels, split_key)


class TransformerEncoder(nnx.Module):
    """Factorized embeddings (width E) -> optional E->H projection + LN -> L transformer layers.

    With ``embed_projection=False`` and E == H this is exactly RoBERTa's / BERT's encoder.
    """

    layer_class: type = EncoderLayer  # a variant's layer (its blocks: EncoderLayer's hooks)
    # how the layers are instanced: make_layers (below; one object L times shares it)
    make_norm = staticmethod(make_layer_norm)  # the embedding, projection and final norms
    # False: no learned position table (a variant that encodes positions elsewhere, e.g. rotary
    # through its attention's position_qk hook); position_rows then adds nothing
    position_table: bool = True

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        init = make_initializers(cfg.init)
        pdt = jnp.dtype(cfg.param_dtype)
        self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=init.embedding,
                                         param_dtype=pdt, rngs=rngs)
        if self.position_table:
            self.position_embeddings = nnx.Embed(cfg.num_positions, cfg.emb_dim,
                                                 embedding_init=init.embedding, param_dtype=pdt,
                                                 rngs=rngs)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, cfg.emb_dim,
                                               embedding_init=init.embedding, param_dtype=pdt, rngs=rngs)
        self.embedding_norm = self.make_norm(cfg, cfg.emb_dim, rngs)
        if cfg.embed_projection:
            self.projection = make_linear(cfg, init, cfg.emb_dim, cfg.hidden_dim, rngs)
            self.projection_norm = self.make_norm(cfg, cfg.hidden_dim, rngs)
        layers = list(self.make_layers(cfg, init, rngs))
        if len(layers) != cfg.num_layers:
            raise ConfigError(f"{type(self).__name__}.make_layers returned {len(layers)} layers "
                              f"for model.num_layers={cfg.num_layers}")
        self.layers = nnx.List(layers)
        if cfg.norm_position == "pre":
            self.final_norm = self.make_norm(cfg, cfg.hidden_dim, rngs)

    def make_layers(self, cfg: ModelConfig, init: Initializers,
                    rngs: nnx.Rngs) -> list[nnx.Module]:
        """The layer-instancing hook: the ``num_layers`` layers applied in order, each built as
        ``layer_class(cfg, init, rngs)``. A variant may return one object several times
        (cross-layer sharing): its parameters are then held, counted, trained, checkpointed and
        exported once, and applied at every depth it fills."""
        return [self.layer_class(cfg, init, rngs) for _ in range(cfg.num_layers)]

    def shared_score_bias(self, t: int) -> jax.Array | None:
        """The once-per-forward attention prior: ``[A, T, T]`` computed once per forward and
        added by every layer's attention in place of its own ``score_bias`` (e.g. T5's relative
        bias: one table on the encoder for all layers, gathered once). None in the built-in
        encoder: each attention's own hook."""
        return None

    def checked_shared_score_bias(self, t: int) -> jax.Array | None:
        """:meth:`shared_score_bias` (its shape checked by the attention); one that depends on a
        parameter is refused under ``attention_impl='flash'`` (its kernels give it no gradient)."""
        bias_att = self.shared_score_bias(t)
        if bias_att is not None and self.cfg.attention_impl == "flash" and _depends_on_params(
                self, lambda module: module.shared_score_bias(t)):
            raise ConfigError(f"{type(self).__name__}.shared_score_bias depends on parameters, "
                              "which attention_impl='flash' cannot train (its bias gets no "
                              "gradient); use attention_impl='einsum', 'xla' or 'cudnn'")
        return bias_att

    def position_rows(self, t: int) -> jax.Array:
        """Position embeddings of positions ``offset .. offset + t - 1`` ``[T, E]``: a slice of the
        table, whose gradient is a pad (a gather's is a scatter-add, serialised on a GPU)."""
        if not self.position_table:
            return jnp.zeros((t, self.cfg.emb_dim), jnp.dtype(self.cfg.param_dtype))
        start = self.cfg.position_offset
        return self.position_embeddings.embedding[...][start:start + t]

    def token_type_rows(self, token_types_bt: jax.Array) -> jax.Array:
        """Token-type embeddings ``[B, T, E]``: for a small table each row selected by comparison,
        so the table's gradient is a reduction; a gather's is a scatter-add of every token into a
        row or two (all token types are 0 in pre-training), which a GPU serialises (84 us of a 1.2
        ms `paper-1.25m` step on an H100). The same values as the gather."""
        table_ke = self.token_type_embeddings.embedding[...]
        if table_ke.shape[0] > 8:
            return self.token_type_embeddings(token_types_bt)
        picked_btke = (token_types_bt[..., None] == jnp.arange(table_ke.shape[0]))[..., None]
        return jnp.sum(jnp.where(picked_btke, table_ke, 0), axis=2)

    def embed(self, tokens_bt: jax.Array, token_types_bt: jax.Array, segment_ids_bt: jax.Array,
              key: jax.Array | None, train: bool) -> jax.Array:
        """Word + position + type embeddings -> LN -> dropout -> projection: ``[B, T, H]``."""
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        t = tokens_bt.shape[1]
        if t > cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds model.max_len={cfg.max_len}")
        if self._embeds_in_kernels(t, key):
            return self._kernel_embed(tokens_bt, token_types_bt, key)
        x_bte = (self.word_embeddings(tokens_bt) + self.position_rows(t)[None]
                 + self.token_type_rows(token_types_bt))
        x_bte = dropout(self.embedding_norm(x_bte), cfg.hidden_dropout, key,
                        cfg.dropout_rng).astype(dtype)
        if cfg.embed_projection:
            x_bte = self.projection_norm(self.projection(x_bte)).astype(dtype)
        return x_bte

    def _embeds_in_kernels(self, t: int, key: jax.Array | None) -> bool:
        """Whether :meth:`embed` runs as kernels (:mod:`~minilm_jax.model.embed_kernel`):
        :func:`~minilm_jax.model.layers.runs_kernels`, with this class's tables and norms the
        built-in ones at sizes the kernels take."""
        cfg = self.cfg

        def why_not() -> str | None:
            norms = [self.embedding_norm] + ([self.projection_norm] if cfg.embed_projection
                                             else [])
            builtin = (self.position_table and all(
                getattr(type(self), name) is getattr(TransformerEncoder, name)
                for name in ("position_rows", "token_type_rows", "make_norm"))
                and all(type(norm) is LayerNorm and norm.plain() for norm in norms)
                and (not cfg.embed_projection or self.projection.bias is not None))
            if not builtin:
                return "the embeddings' tables, norms or projection are not the built-in ones"
            if key is not None and cfg.hidden_dropout > 0.0 and cfg.dropout_rng != "hash":
                return f"model.dropout_rng={cfg.dropout_rng!r} (the kernels draw 'hash' masks)"
            return embed_kernel.unsupported(t, cfg.emb_dim, cfg.hidden_dim, cfg.type_vocab_size)

        return runs_kernels(cfg, "the embeddings", why_not)

    def _kernel_embed(self, tokens_bt: jax.Array, token_types_bt: jax.Array,
                      key: jax.Array | None) -> jax.Array:
        """:meth:`embed` as :func:`~minilm_jax.model.embed_kernel.fused_embeddings`."""
        cfg = self.cfg
        tables = (self.word_embeddings.embedding[...], self.position_rows(tokens_bt.shape[1]),
                  self.token_type_embeddings.embedding[...])
        params = [self.embedding_norm.scale[...], self.embedding_norm.bias[...]]
        if cfg.embed_projection:
            params += [self.projection.kernel[...], self.projection.bias[...],
                       self.projection_norm.scale[...], self.projection_norm.bias[...]]
        return embed_kernel.fused_embeddings(tokens_bt, token_types_bt, tables, tuple(params), key,
                                             rate=cfg.hidden_dropout, eps=cfg.layer_norm_eps,
                                             dtype=cfg.dtype)

    def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array | None = None,
                 token_types_bt: jax.Array | None = None, *, dropout_key: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        """Hidden states ``[B, T, H]``. Dropout runs iff ``dropout_key`` is given."""
        chex.assert_rank(tokens_bt, 2)  # shapes and dtypes at the boundary: checked when traced
        chex.assert_type(tokens_bt, int)
        if segment_ids_bt is None:
            segment_ids_bt = (tokens_bt != self.cfg.pad_id).astype(jnp.int32)
        if token_types_bt is None:
            token_types_bt = jnp.zeros_like(tokens_bt)
        chex.assert_equal_shape([tokens_bt, segment_ids_bt, token_types_bt])
        keys = split_key(dropout_key, self.cfg.num_layers + 1)
        # named scopes: the parts a compiled step's kernels are counted by (minilm_jax.hlo_kernels)
        with jax.named_scope("embeddings"):
            x_bth = self.embed(tokens_bt, token_types_bt, segment_ids_bt, keys[0], train)
        with jax.named_scope("encoder"):
            mask_b1tt = attention_mask(segment_ids_bt)
            shared = self.checked_shared_score_bias(tokens_bt.shape[1])  # once per forward
            for layer, key in zip(self.layers, keys[1:]):
                x_bth = (layer(x_bth, mask_b1tt, key) if shared is None
                         else layer(x_bth, mask_b1tt, key, score_bias=shared))
            if self.cfg.norm_position == "pre":
                x_bth = self.final_norm(x_bth).astype(x_bth.dtype)
        return x_bth


class ConvFrontEnd(nnx.Module):
    """Study B's front end: the embedding output ``[B, T, H]`` seen as a 1-channel image, through
    ``n`` 3x3 convs of C channels (each BatchNorm + GELU), then a 1x1 conv back to one channel."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.conv_layers <= 0 or cfg.conv_channels <= 0:
            raise ConfigError(f"arch {cfg.arch!r} needs model.conv_layers > 0 and "
                              f"model.conv_channels > 0 (got {cfg.conv_layers}, {cfg.conv_channels})")
        c = cfg.conv_channels
        dtype = jnp.dtype(cfg.dtype)
        pdt = jnp.dtype(cfg.param_dtype)
        ins = [1] + [c] * (cfg.conv_layers - 1)
        self.convs = nnx.List([nnx.Conv(i, c, (3, 3), padding="SAME", dtype=dtype, param_dtype=pdt,
                                        rngs=rngs) for i in ins])
        self.norms = nnx.List([nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, dtype=jnp.float32,
                                             param_dtype=pdt, rngs=rngs) for _ in ins])
        self.out = nnx.Conv(c, 1, (1, 1), dtype=dtype, param_dtype=pdt, rngs=rngs)

    def __call__(self, x_bth: jax.Array, segment_ids_bt: jax.Array, train: bool) -> jax.Array:
        real_bt11 = (segment_ids_bt != 0)[:, :, None, None]
        img_bth1 = x_bth[..., None]
        for conv, norm in zip(self.convs, self.norms):
            # Zero padding rows so that extra padding leaves real positions unchanged.
            img = conv(jnp.where(real_bt11, img_bth1, 0))
            mask = jnp.broadcast_to(real_bt11, img.shape)
            img_bth1 = gelu_exact(norm(img, use_running_average=not train, mask=mask)).astype(img.dtype)
        return self.out(jnp.where(real_bt11, img_bth1, 0))[..., 0]


class ConvFrontEncoder(TransformerEncoder):
    """BERT-style encoder with the convolutional front end between embeddings and layers."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.front_end = ConvFrontEnd(cfg, rngs=rngs)

    def embed(self, tokens_bt, token_types_bt, segment_ids_bt, key, train):
        x_bth = super().embed(tokens_bt, token_types_bt, segment_ids_bt, key, train)
        return self.front_end(x_bth, segment_ids_bt, train).astype(x_bth.dtype)
