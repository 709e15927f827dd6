"""Encoder variants as a user writes them in their own module (not the library's), selected with
``--config.model.arch=encoder_variants:GatedEmbeddingEncoder``."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from minilm_jax.model.encoder import TransformerEncoder


class GatedEmbeddingEncoder(TransformerEncoder):
    """The built-in encoder plus one learned gate on the embeddings: one parameter more than the
    baseline's tree, so a baseline checkpoint does not fit it."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.embedding_gate = nnx.Param(jnp.ones((cfg.emb_dim,), jnp.dtype(cfg.param_dtype)))
