"""The frozen, typed model configuration that every model module receives."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from minilm_jax.errors import UserError

NORM_POSITIONS = ("post", "pre")
INIT_SCHEMES = ("paper", "bert")
ATTENTION_IMPLS = ("einsum", "xla", "cudnn", "flash")
DROPOUT_RNGS = ("hash", "threefry")
LOSS_IMPLS = ("auto", "fused", "logits", "kernel")
LAYER_IMPLS = ("auto", "xla", "fused")
NORM_IMPLS = ("auto", "xla", "gpu")
POOLERS = ("cls_tanh", "weighted_sum")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(UserError, ValueError):
    """A model or run configuration that cannot be honoured, with a message naming the field."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one encoder. Shapes: E emb_dim, H hidden_dim, I ffn_dim, L num_layers,
    A num_heads, V vocab_size, T max_len."""

    vocab_size: int = 19010
    emb_dim: int = 32
    hidden_dim: int = 32
    ffn_dim: int = 128
    num_layers: int = 1
    num_heads: int = 2
    arch: str = "roberta"
    max_len: int = 128
    position_offset: int = 2  # RoBERTa: real tokens sit at positions 2..T+1 (130 rows for T=128)
    type_vocab_size: int = 2
    embed_projection: bool = True  # E->H Linear + LayerNorm (the paper's code has it even when E == H)
    norm_position: Literal["post", "pre"] = "post"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # Dropout masks: "hash" (a keyed integer hash of each element's index; 4x cheaper than threefry
    # on CPU and the same masks on any mesh) or "threefry" (jax.random.bernoulli).
    dropout_rng: str = "hash"
    # MLM loss: "fused" (output layer + cross-entropy in row chunks under lax.scan, never the whole
    # [N, V] logits; fastest on CPU), "kernel" (the same fused in one Pallas kernel per pass, logits
    # only in on-chip memory; GPUs, interpreted elsewhere), "logits" (one GEMM, then cross-entropy
    # with its one-pass gradient; TPUs) or "auto" (fused on CPU, kernel on GPU, logits on TPU).
    mlm_loss_impl: str = "auto"
    mlm_loss_chunk: int = 128  # rows per chunk of the fused loss
    init: Literal["paper", "bert"] = "paper"
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    attention_impl: str = "einsum"
    # Encoder layer: "xla" (the modules, each op an XLA op), "fused" (the built-in post-LN layer as
    # two Pallas kernels, forward and backward: model/fused_layer.py, and the embeddings as two:
    # model/embed_kernel.py) or "auto" (xla on every backend: on an H200 the kernels' step was
    # the slower, docs/performance.md "Device check").
    layer_impl: str = "auto"
    # LayerNorm of the modules: "xla" (nnx.LayerNorm), "gpu" (the same function written for XLA's
    # GPU fusions: two-pass statistics, a gradient that keeps only the input and recomputes them;
    # fewer launches, more bytes: docs/performance.md) or "auto" (gpu in a program built for a
    # GPU, xla elsewhere). The fused layer's kernels compute their own.
    norm_impl: str = "auto"
    pad_id: int = 1
    # Study B's convolutional front end (arch "bert_conv"): conv_layers 3x3 convs of conv_channels.
    conv_layers: int = 0
    conv_channels: int = 0
    # Classification head.
    pooler: str = "cls_tanh"
    # A variant's own fields (declared by its class as ``config_fields``, set with
    # --config.model.extra.<name>=...): sorted (name, value) pairs; empty for the built-in encoders.
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        def need(cond: bool, field: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"model.{field}: {msg} (got {getattr(self, field)!r})")

        for field in ("vocab_size", "emb_dim", "hidden_dim", "ffn_dim", "num_layers", "num_heads",
                      "max_len"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) > 0, field,
                 "must be a positive integer")
        need(isinstance(self.arch, str) and bool(self.arch), "arch",
             "must name a registered encoder or module.path:Name")
        need(self.norm_position in NORM_POSITIONS, "norm_position", f"must be one of {NORM_POSITIONS}")
        need(self.init in INIT_SCHEMES, "init", f"must be one of {INIT_SCHEMES}")
        need(self.attention_impl in ATTENTION_IMPLS, "attention_impl",
             f"must be one of {ATTENTION_IMPLS}")
        need(self.layer_impl in LAYER_IMPLS, "layer_impl", f"must be one of {LAYER_IMPLS}")
        need(self.norm_impl in NORM_IMPLS, "norm_impl", f"must be one of {NORM_IMPLS}")
        need(self.mlm_loss_impl in LOSS_IMPLS, "mlm_loss_impl", f"must be one of {LOSS_IMPLS}")
        need(isinstance(self.mlm_loss_chunk, int) and self.mlm_loss_chunk > 0, "mlm_loss_chunk",
             "must be a positive integer")
        need(self.dropout_rng in DROPOUT_RNGS, "dropout_rng", f"must be one of {DROPOUT_RNGS}")
        need(self.attention_impl != "flash" or self.dropout_rng == "hash"
             or self.attention_dropout == 0.0, "dropout_rng",
             "must be 'hash' with attention_impl='flash' (its kernel draws the hash mask)")
        need(self.pooler in POOLERS, "pooler", f"must be one of {POOLERS}")
        need(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}")
        need(self.param_dtype in DTYPES, "param_dtype", f"must be one of {DTYPES}")
        need(self.hidden_dim % self.num_heads == 0, "num_heads",
             f"must divide hidden_dim={self.hidden_dim}")
        need(0.0 <= self.hidden_dropout < 1.0, "hidden_dropout", "must be in [0, 1)")
        need(0.0 <= self.attention_dropout < 1.0, "attention_dropout", "must be in [0, 1)")
        need(self.position_offset >= 0, "position_offset", "must be >= 0")
        need(isinstance(self.type_vocab_size, int) and self.type_vocab_size >= 1,
             "type_vocab_size", "must be a positive integer")
        need(0.0 < self.layer_norm_eps < float("inf"), "layer_norm_eps",
             "must be > 0: it is added to the variance under a square root")
        need(isinstance(self.pad_id, int) and 0 <= self.pad_id < self.vocab_size, "pad_id",
             f"must be a token id in [0, vocab_size={self.vocab_size})")
        for field in ("conv_layers", "conv_channels"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) >= 0, field,
                 "must be an integer >= 0; 0: no convolutional front end")
        need(self.embed_projection or self.emb_dim == self.hidden_dim, "embed_projection",
             f"may be False only when emb_dim == hidden_dim ({self.emb_dim} != {self.hidden_dim})")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def num_positions(self) -> int:
        """Rows of the position table (T + offset: 130 for RoBERTa at T=128)."""
        return self.max_len + self.position_offset

    @property
    def point(self) -> str:
        """This size in the point grammar ``E-H-I-L-A-V``."""
        return (f"E{self.emb_dim}-H{self.hidden_dim}-I{self.ffn_dim}-L{self.num_layers}"
                f"-A{self.num_heads}-V{self.vocab_size}")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def extra_value(self, name: str, default: Any = None) -> Any:
        """A variant field's value (``default`` when not set)."""
        return dict(self.extra).get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """Every field; ``extra`` (a dict) only when a variant has fields."""
        out = dataclasses.asdict(self)
        out.pop("extra")
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a plain mapping (e.g. ``config.model.to_dict()``; a variant's fields as an
        ``extra`` mapping or flattened ``extra.<name>`` keys); unknown keys are an error."""
        values = dict(values)
        extra = dict(values.pop("extra", None) or {})
        for key in [k for k in values if k.startswith("extra.")]:
            extra[key[len("extra."):]] = values.pop(key)
        if extra:
            values["extra"] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                           for k, v in extra.items()))
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown model field(s) {unknown}; valid fields: "
                              f"{', '.join(cls.field_names())}")
        return cls(**dict(values))
