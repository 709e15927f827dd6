"""A user's encoder variant with cross-layer parameter sharing (ALBERT): one layer's parameters
applied ``loop_repeats`` times (0: ``num_layers`` times) inside ``lax.fori_loop``, selected with
``--config.model.arch=looped_encoder:LoopSharedEncoder``."""

from __future__ import annotations

import jax.numpy as jnp

from minilm_jax.model import accounting
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.layers import attention_mask, split_key

from looped_encoder_blocks import layer_flops, layer_params, repeats, run_shared


class LoopSharedEncoder(TransformerEncoder):
    """The built-in encoder's embeddings and one layer, run ``repeats(cfg)`` times."""

    config_fields = {"loop_repeats": 0}

    def __init__(self, cfg, *, rngs):
        super().__init__(cfg.replace(num_layers=1), rngs=rngs)
        self.cfg = cfg

    def __call__(self, tokens_bt, segment_ids_bt=None, token_types_bt=None, *, dropout_key=None,
                 train=False):
        if segment_ids_bt is None:
            segment_ids_bt = (tokens_bt != self.cfg.pad_id).astype(jnp.int32)
        if token_types_bt is None:
            token_types_bt = jnp.zeros_like(tokens_bt)
        embed_key, loop_key = split_key(dropout_key, 2)
        x_bth = self.embed(tokens_bt, token_types_bt, segment_ids_bt, embed_key, train)
        x_bth = run_shared(self.layers[0], x_bth, attention_mask(segment_ids_bt), loop_key,
                           repeats(self.cfg))
        if self.cfg.norm_position == "pre":
            x_bth = self.final_norm(x_bth).astype(x_bth.dtype)
        return x_bth

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        """L - 1 layers' parameters less; repeats - L layers' FLOPs more (none by default)."""
        return accounting.VariantCounts(
            params=-(cfg.num_layers - 1) * layer_params(cfg),
            forward_flops=(repeats(cfg) - cfg.num_layers) * layer_flops(cfg, seq_len))


class UndeclaredLoopSharedEncoder(LoopSharedEncoder):
    """The same without a declaration: its counts are derived from its tree and trace."""

    counts_beyond_baseline = None
