"""PyTorch twin of a minilm-jax encoder (``transformers`` remote code, ``model_type`` minilm_jax).

The same computation as ``minilm_jax.model`` at inference (dropout off)::

    word + position (arange(T) + position_offset) + token-type embeddings   [B, T, E]
    -> LayerNorm(E) -> dropout -> [Linear(E->H) -> LayerNorm(H)]             (embed_projection)
    -> [conv front end: 3x3 convs + BatchNorm + GELU, then a 1x1 conv]       (conv_layers > 0)
    -> L layers: self-attention + GELU FFN, post-LN or pre-LN (+ final LayerNorm)
    MLM head:        Linear(H->H) -> GELU -> LayerNorm -> Linear(H->V) + bias (untied)
    classifier head: first token -> Linear(H->H) -> tanh (``cls_tanh``) or a learned, padding-masked
                     softmax over positions (``weighted_sum``) -> dropout -> Linear(H->num_labels)

Without ``attention_mask`` the padding is ``input_ids == pad_token_id``, as in minilm-jax; padding
queries attend nowhere (their rows are uniform), so every position matches minilm-jax's output.
Parameter names follow minilm-jax's module paths (``minilm.layers.0.attention.query.weight`` is
``encoder.layers.0.attention.query.kernel``, transposed).

Hooks, the twins of minilm-jax's: a custom encoder's own PyTorch file (its ``torch_twin``)
subclasses these classes and overrides only what its Flax variant changes::

    MinilmAttention.position_qk(q, k)        queries, keys [B, A, T, D] before the 1/sqrt(D) scaling
    MinilmAttention.score_bias(q_len, k_len) [A, Tq, Tk] added to the scaled scores, or None
    MinilmLayer.attention_class / feed_forward_class   built as cls(config)
    MinilmLayer.make_norm / MinilmModel.make_norm      staticmethod (config, dim) -> module
    MinilmModel.layer_class                  the layer, built as cls(config)
    MinilmModel.make_layers(config)          the list of layers (one module several times: shared)
    MinilmModel.position_table               False: no position_embeddings, none added
    MinilmForMaskedLM.encoder_class / MinilmForSequenceClassification.encoder_class

A variant's own fields (``--config.model.extra.<name>``) are ``config.variant_fields``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import (BaseModelOutput, MaskedLMOutput,
                                           SequenceClassifierOutput)

from .configuration_minilm import MinilmConfig

NEG_INF = -1e9  # minilm-jax's finite mask value


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x)  # exact (erf) GELU


def _layer_norm(config: MinilmConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


class MinilmAttention(nn.Module):
    def __init__(self, config: MinilmConfig):
        super().__init__()
        h = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, h // config.num_attention_heads
        self.query, self.key, self.value, self.output = (nn.Linear(h, h) for _ in range(4))
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(lin: nn.Linear) -> torch.Tensor:  # [B, A, T, D]
            return lin(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k = self.position_qk(split(self.query), split(self.key))
        q = q / math.sqrt(self.head_dim)
        scores = torch.matmul(q, k.transpose(-1, -2)).float()
        bias = self.score_bias(t, t)
        if bias is not None:
            scores = scores + bias.float()[None]
        scores = scores.masked_fill(~allowed, NEG_INF)
        probs = self.dropout(torch.softmax(scores, dim=-1).to(x.dtype))
        ctx = torch.matmul(probs, split(self.value)).transpose(1, 2).reshape(b, t, -1)
        return self.output(ctx)

    def position_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The position-encoding hook (minilm-jax's ``SelfAttention.position_qk``): queries and
        keys as the scores see them, before the 1/sqrt(D) scaling, head-major ``[B, A, T, D]``
        (minilm-jax's are ``[B, T, A, D]``: the position axis is 2 here, 1 there). Identity: the
        built-in encoder adds positions to its embeddings."""
        return q, k

    def score_bias(self, q_len: int, k_len: int) -> torch.Tensor | None:
        """The additive attention-prior hook (minilm-jax's ``SelfAttention.score_bias``):
        ``[A, Tq, Tk]`` added to the scaled scores before the mask and the softmax (e.g. ALiBi).
        None: nothing added."""
        return None


class MinilmFeedForward(nn.Module):
    def __init__(self, config: MinilmConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(_gelu(self.up(x)))


class MinilmLayer(nn.Module):
    """One post- or pre-LN layer; a variant names its own blocks (minilm-jax's ``EncoderLayer``
    hooks): each block built as ``cls(config)``, each norm as ``make_norm(config, dim)``."""

    attention_class: type = MinilmAttention  # (x [B, T, H], allowed [B, 1, T, T]) -> [B, T, H]
    feed_forward_class: type = MinilmFeedForward  # (x [B, T, H]) -> [B, T, H]
    make_norm = staticmethod(_layer_norm)  # (config, dim) -> a module (x) -> x

    def __init__(self, config: MinilmConfig):
        super().__init__()
        self.pre = config.norm_position == "pre"
        self.attention = self.attention_class(config)
        self.attention_norm = self.make_norm(config, config.hidden_size)
        self.ffn = self.feed_forward_class(config)
        self.ffn_norm = self.make_norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self.dropout(self.attention(self.attention_norm(x), allowed))
            return x + self.dropout(self.ffn(self.ffn_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, allowed)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class MinilmConvFrontEnd(nn.Module):
    """The ``[B, T, H]`` embeddings as a one-channel image through 3x3 convs (BatchNorm, GELU) and a
    1x1 conv back to one channel; padding rows are zeroed before every conv."""

    def __init__(self, config: MinilmConfig):
        super().__init__()
        c = config.conv_channels
        ins = [1] + [c] * (config.conv_layers - 1)
        self.convs = nn.ModuleList(nn.Conv2d(i, c, 3, padding=1) for i in ins)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c, eps=1e-5, momentum=0.1) for _ in ins)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        keep = real[:, None, :, None].to(x.dtype)  # [B, 1, T, 1]
        img = x[:, None]  # [B, 1, T, H]
        for conv, norm in zip(self.convs, self.norms):
            img = _gelu(norm(conv(img * keep)))
        return self.out(img * keep)[:, 0]


def shared_parameters(module: nn.Module) -> dict[str, str]:
    """``{target: source}`` of every parameter ``module`` reaches under more than one name (a
    module held twice, e.g. one layer at every depth): each later name to the first."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        source = first.setdefault(id(param), name)
        if source != name:
            tied[name] = source
    return tied


class MinilmPreTrainedModel(PreTrainedModel):
    """Shared modules (a variant's ``make_layers`` returning one layer several times) are tied
    weights to ``transformers``, derived from the modules themselves: ``save_pretrained`` writes
    each shared tensor once (under its first name) and ``from_pretrained`` reports none missing."""

    config_class = MinilmConfig
    base_model_prefix = "minilm"
    _no_split_modules = ["MinilmLayer"]

    def post_init(self) -> None:
        shared = shared_parameters(self)  # what save_pretrained may leave out
        if shared:
            self._tied_weights_keys = {**(type(self)._tied_weights_keys or {}), **shared}
        super().post_init()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict[str, str]:
        """transformers' ``{target: source}`` (none here: ``tie_word_embeddings`` is False) plus
        the shared parameters, tied whatever ``tie_word_embeddings`` says."""
        expanded = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        return expanded if all_submodels else {**expanded, **shared_parameters(self)}

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MinilmPooler) and module.position_logits is not None:
            nn.init.zeros_(module.position_logits)


class MinilmModel(MinilmPreTrainedModel):
    """The encoder: hidden states ``[B, T, H]``. Hooks (minilm-jax's ``TransformerEncoder``'s):
    ``layer_class``, ``make_norm`` (the embedding, projection and final norms) and
    ``position_table`` (False: no learned position table, e.g. rotary in the attention)."""

    layer_class: type = MinilmLayer  # built as cls(config)
    make_norm = staticmethod(_layer_norm)  # (config, dim) -> a module (x) -> x
    position_table: bool = True

    def __init__(self, config: MinilmConfig):
        super().__init__(config)
        e, h = config.embedding_size, config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, e)
        if self.position_table:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, e)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, e)
        self.embedding_norm = self.make_norm(config, e)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        if config.embed_projection:
            self.projection = nn.Linear(e, h)
            self.projection_norm = self.make_norm(config, h)
        if config.conv_layers:
            self.front_end = MinilmConvFrontEnd(config)
        self.layers = nn.ModuleList(self.make_layers(config))
        if config.norm_position == "pre":
            self.final_norm = self.make_norm(config, h)
        self.post_init()

    def make_layers(self, config: MinilmConfig) -> list[nn.Module]:
        """The layer-instancing hook (minilm-jax's ``TransformerEncoder.make_layers``): the
        ``num_hidden_layers`` layers in order, each ``layer_class(config)``. One module returned
        several times shares its parameters across those layers (saved once, tied on load)."""
        return [self.layer_class(config) for _ in range(config.num_hidden_layers)]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def real_positions(self, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``[B, T]`` bool: the given mask, or every token that is not padding."""
        if attention_mask is None:
            return input_ids != self.config.pad_token_id
        return attention_mask.bool()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BaseModelOutput | tuple:
        cfg = self.config
        t = input_ids.shape[1]
        if t > cfg.max_position_embeddings - cfg.position_offset:
            raise ValueError(f"sequence length {t} exceeds the model's "
                             f"{cfg.max_position_embeddings - cfg.position_offset} positions")
        real = self.real_positions(input_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids)
        if self.position_table:  # word + position + type, in minilm-jax's order
            positions = torch.arange(t, device=input_ids.device) + cfg.position_offset
            x = x + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings(token_type_ids)
        x = self.embedding_dropout(self.embedding_norm(x))
        if cfg.embed_projection:
            x = self.projection_norm(self.projection(x))
        if cfg.conv_layers:
            x = self.front_end(x, real)
        allowed = (real[:, :, None] & real[:, None, :])[:, None]  # [B, 1, T, T]
        states = [x]
        for layer in self.layers:
            x = layer(x, allowed)
            states.append(x)
        if cfg.norm_position == "pre":
            x = self.final_norm(x)
            states[-1] = x
        out = BaseModelOutput(last_hidden_state=x,
                              hidden_states=tuple(states) if output_hidden_states else None)
        return out if return_dict is not False else out.to_tuple()


class MinilmMlmHead(nn.Module):
    def __init__(self, config: MinilmConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(_gelu(self.dense(hidden))))


class MinilmForMaskedLM(MinilmPreTrainedModel):
    """Encoder + untied MLM head: logits ``[B, T, V]`` at every position."""

    encoder_class: type = MinilmModel  # a variant's encoder, built as cls(config)

    def __init__(self, config: MinilmConfig):
        super().__init__(config)
        self.minilm = self.encoder_class(config)
        self.mlm_head = MinilmMlmHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm_head.decoder = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> MaskedLMOutput | tuple:
        base = self.minilm(input_ids, attention_mask, token_type_ids,
                           output_hidden_states=output_hidden_states)
        logits = self.mlm_head(base.last_hidden_state)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(),
                                               labels.view(-1), ignore_index=-100)
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=base.hidden_states)
        return out if return_dict is not False else out.to_tuple()


class MinilmPooler(nn.Module):
    def __init__(self, config: MinilmConfig):
        super().__init__()
        self.kind = config.pooler
        self.position_logits = None
        if self.kind == "cls_tanh":
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        else:
            n = config.max_position_embeddings - config.position_offset
            self.position_logits = nn.Parameter(torch.zeros(n))

    def forward(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.kind == "cls_tanh":
            return torch.tanh(self.dense(hidden[:, 0]))
        t = hidden.shape[1]
        logits = self.position_logits[:t][None].expand(real.shape).float()
        weights = torch.softmax(logits.masked_fill(~real, NEG_INF), dim=-1).to(hidden.dtype)
        return torch.einsum("bt,bth->bh", weights, hidden)


class MinilmClassificationHead(nn.Module):
    def __init__(self, config: MinilmConfig):
        super().__init__()
        self.pooler = MinilmPooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(hidden, real)))


class MinilmForSequenceClassification(MinilmPreTrainedModel):
    """Encoder + pooler + linear head: logits ``[B, num_labels]`` (one column: regression)."""

    encoder_class: type = MinilmModel  # a variant's encoder, built as cls(config)

    def __init__(self, config: MinilmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.minilm = self.encoder_class(config)
        self.head = MinilmClassificationHead(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> SequenceClassifierOutput | tuple:
        base = self.minilm(input_ids, attention_mask, token_type_ids,
                           output_hidden_states=output_hidden_states)
        logits = self.head(base.last_hidden_state,
                           self.minilm.real_positions(input_ids, attention_mask)).float()
        loss = None
        if labels is not None:
            if self.config.problem_type == "regression" or self.num_labels == 1:
                loss = nn.functional.mse_loss(logits[:, 0], labels.float().view(-1))
            elif self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.view(-1))
        out = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states)
        return out if return_dict is not False else out.to_tuple()
