"""Configuration of a minilm-jax encoder exported to Hugging Face (remote code, ``model_type``
``minilm_jax``): factorized embeddings (width E), an optional E->H projection + LayerNorm, an
optional convolutional front end, post- or pre-LN transformer layers (width H), an MLM head and a
sequence-classification head. Written by ``python -m minilm_jax.interop export``; needs only
``transformers``."""

from __future__ import annotations

try:  # transformers >= 5
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig


class MinilmConfig(_BaseConfig):
    """The fields of minilm-jax's ``ModelConfig`` under Hugging Face names (E ``embedding_size``,
    H ``hidden_size``, I ``intermediate_size``, L ``num_hidden_layers``, A ``num_attention_heads``,
    V ``vocab_size``; ``max_position_embeddings`` = T + ``position_offset``). A custom encoder's
    own fields (minilm-jax's ``--config.model.extra.<name>``) are ``variant_fields``, a dict its
    PyTorch twin reads (``config.variant_fields.get("rope_base", 10000.0)``); empty otherwise."""

    model_type = "minilm_jax"

    def __init__(self, vocab_size: int = 1000, embedding_size: int = 64, hidden_size: int = 64,
                 intermediate_size: int = 256, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, max_position_embeddings: int = 130,
                 position_offset: int = 2, type_vocab_size: int = 2, embed_projection: bool = True,
                 norm_position: str = "post", layer_norm_eps: float = 1e-5,
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 hidden_act: str = "gelu", conv_layers: int = 0, conv_channels: int = 0,
                 pooler: str = "cls_tanh", initializer_range: float = 0.02,
                 pad_token_id: int = 1, bos_token_id: int = 0, eos_token_id: int = 2,
                 tie_word_embeddings: bool = False, variant_fields: dict | None = None,
                 **kwargs):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.position_offset = position_offset
        self.type_vocab_size = type_vocab_size
        self.embed_projection = embed_projection
        self.norm_position = norm_position
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.hidden_act = hidden_act
        self.conv_layers = conv_layers
        self.conv_channels = conv_channels
        self.pooler = pooler
        self.initializer_range = initializer_range
        self.variant_fields = dict(variant_fields or {})
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
                         **kwargs)
        if self.norm_position not in ("post", "pre"):
            raise ValueError(f"norm_position must be 'post' or 'pre', not {self.norm_position!r}")
        if self.pooler not in ("cls_tanh", "weighted_sum"):
            raise ValueError(f"pooler must be 'cls_tanh' or 'weighted_sum', not {self.pooler!r}")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (exact, erf), not {self.hidden_act!r}")
        if not self.embed_projection and self.embedding_size != self.hidden_size:
            raise ValueError("embed_projection=False needs embedding_size == hidden_size")
