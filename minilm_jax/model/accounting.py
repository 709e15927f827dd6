"""Parameter and FLOPs accounting.

* Parameter counts split into embedding / non-embedding, from the real parameter tree and from the
  paper's closed form (SPEC A3).
* Training FLOPs per sequence: the paper's formula (forward x 3, SPEC A5; it omits the
  attention-times-values and output-projection terms, kept for comparison with the paper) and a
  complete analytic count of every matmul (attention fully counted, MLM head only at the P masked
  positions), used for model-FLOPs utilization.
* A variant's counts beyond the built-in encoder (:func:`variant_counts`): what its class declares,
  or, when it declares none, derived from its built tree and its traced matmuls
  (:func:`counts_source` says which).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal

import jax
from flax import nnx

from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_mlm
from minilm_jax.model.registry import encoder_factory, is_library_encoder
from minilm_jax.model.sizes import with_variant_defaults
from minilm_jax.model.traced_flops import encoder_matmul_flops

EMBEDDING_MODULES = ("word_embeddings", "position_embeddings", "token_type_embeddings",
                     "embedding_norm")


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    non_embedding: int


def count_params(model: nnx.Module) -> ParamCounts:
    """Count the real parameter tree; embedding = word/position/type tables + their LayerNorm."""
    params = nnx.state(model, nnx.Param)
    total = embedding = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size = int(leaf.size)
        total += size
        names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
        if names & set(EMBEDDING_MODULES):
            embedding += size
    return ParamCounts(total=total, embedding=embedding, non_embedding=total - embedding)


@dataclasses.dataclass(frozen=True)
class VariantCounts:
    """What an encoder variant adds to (negative: removes from) the built-in encoder of the same
    config, each a difference from the built-in encoder's closed form (:func:`formula_params`):

    * ``params``: the **non-embedding** parameters beyond it (everything but the word, position
      and type tables and their LayerNorm; :attr:`non_embedding_params` names it), added to
      ``ParamCounts.non_embedding``;
    * ``embedding_params``: the embedding parameters beyond it, added to ``ParamCounts.embedding``
      (the total moves by both);
    * ``forward_flops``: forward matmul FLOPs per sequence of ``seq_len`` tokens (2 per
      multiply-add; the paper's training FLOPs take 3x).

    Declared by its class with ``counts_beyond_baseline(cfg, seq_len)`` (checked against the
    built tree, exactly, and the traced matmuls: :mod:`minilm_jax.model.count_check`) or derived
    from them (:func:`derived_counts`)."""

    params: int = 0
    embedding_params: int = 0
    forward_flops: float = 0.0

    @property
    def non_embedding_params(self) -> int:
        """``params``: the non-embedding parameters beyond the built-in encoder."""
        return self.params


def builtin_arch(cfg: ModelConfig) -> str:
    """The built-in encoder whose closed form counts ``cfg``: study B's with a conv front end
    (the formula's FLOPs count one where ``conv_layers`` is set), RoBERTa's otherwise."""
    return "bert_conv" if cfg.conv_layers and cfg.conv_channels else "roberta"


def _declaration(cfg: ModelConfig) -> Callable[..., Any] | None:
    """``cfg.arch``'s ``counts_beyond_baseline`` (None: its class declares none)."""
    return getattr(encoder_factory(cfg.arch), "counts_beyond_baseline", None)


def counts_source(cfg: ModelConfig) -> Literal["formula", "declared", "derived"]:
    """Where ``cfg``'s counts come from: the closed form alone (a built-in encoder), the closed
    form plus what the variant's class declares, or plus what :func:`derived_counts` finds."""
    if is_library_encoder(cfg.arch):
        return "formula"
    return "derived" if _declaration(cfg) is None else "declared"


@functools.lru_cache(maxsize=256)
def derived_counts(cfg: ModelConfig, seq_len: int) -> VariantCounts:
    """``cfg.arch``'s counts beyond the built-in encoder, measured: parameters (embedding vs the
    rest as :func:`count_params` splits them) = its MLM model's tree minus the closed form of the
    built-in encoder's; forward FLOPs = its traced encoder's matmuls minus the built-in encoder's
    at the same config (the MLM head is the formula's in both)."""
    builtin = cfg.replace(arch=builtin_arch(cfg))
    tree = count_params(nnx.eval_shape(lambda: build_mlm(cfg)))
    formula = formula_params(builtin)
    flops = encoder_matmul_flops(cfg, seq_len) - encoder_matmul_flops(builtin, seq_len)
    return VariantCounts(params=tree.non_embedding - formula.non_embedding,
                         embedding_params=tree.embedding - formula.embedding, forward_flops=flops)


def variant_counts(cfg: ModelConfig, seq_len: int | None = None) -> VariantCounts:
    """What ``cfg.arch`` adds beyond the built-in encoder: zero for the built-in encoders, what a
    variant's class declares, or (it declares none) :func:`derived_counts`."""
    if is_library_encoder(cfg.arch):
        return VariantCounts()
    cfg = with_variant_defaults(cfg)  # its declaration reads its fields as a run's config has them
    declare = _declaration(cfg)
    if declare is None:
        return derived_counts(cfg, seq_len or cfg.max_len)
    counts = declare(cfg, seq_len or cfg.max_len)
    if not isinstance(counts, VariantCounts):
        raise TypeError(f"model.arch={cfg.arch}: counts_beyond_baseline must return "
                        f"accounting.VariantCounts, not {type(counts).__name__}")
    return counts


def formula_params(cfg: ModelConfig) -> ParamCounts:
    """SPEC A3's closed form for the MLM model (RoBERTa layout; conv front end and pooler
    excluded), plus what a variant adds (:func:`variant_counts`)."""
    e, h, i, l, v = cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.num_layers, cfg.vocab_size
    embedding = e * (v + cfg.num_positions + cfg.type_vocab_size + 2)
    projection = e * h + 3 * h if cfg.embed_projection else 0
    layers = l * (4 * h * h + 2 * h * i + 9 * h + i)
    final_norm = 2 * h if cfg.norm_position == "pre" else 0
    head = h * h + 3 * h + h * v + v
    non_embedding = projection + layers + final_norm + head
    variant = variant_counts(cfg)
    embedding += variant.embedding_params
    non_embedding += variant.params
    return ParamCounts(total=embedding + non_embedding, embedding=embedding,
                       non_embedding=non_embedding)


def paper_train_flops_per_sequence(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """The paper's training FLOPs per sequence (forward x 3), SPEC A5, plus 3x a variant's
    forward FLOPs (:func:`variant_counts`)."""
    t = seq_len or cfg.max_len
    e, h, i, l, v, a = (cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.num_layers, cfg.vocab_size,
                        cfg.num_heads)
    embeddings = 2 * t * v * e + 2 * t * e * h
    attention = 6 * t * h * h + 2 * t * t * h + 3 * a * t * t
    ffn = 4 * t * h * i
    logits = 2 * t * h * v
    return 3.0 * (embeddings + l * (attention + ffn) + logits
                  + variant_counts(cfg, t).forward_flops)


def forward_flops_per_sequence(cfg: ModelConfig, *, seq_len: int | None = None,
                               num_predictions: int | None = None, head: str = "mlm",
                               num_labels: int = 2) -> float:
    """Complete matmul FLOPs of one forward pass of one sequence (2 per multiply-add).

    Counts the E->H projection, Q/K/V/O projections, scores and probabilities-times-values, the FFN,
    the conv front end, and the head: MLM at ``num_predictions`` gathered positions (default: all T),
    or classification (pooler + classifier). Embedding lookups are gathers and count zero. A
    variant's forward FLOPs are added (:func:`variant_counts`).
    """
    t = seq_len or cfg.max_len
    e, h, i, l, v = cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.num_layers, cfg.vocab_size
    flops = 2 * t * e * h if cfg.embed_projection else 0
    flops += l * (8 * t * h * h + 4 * t * t * h + 4 * t * h * i)
    if cfg.conv_layers:
        c = cfg.conv_channels
        flops += 2 * t * h * 9 * c + (cfg.conv_layers - 1) * 2 * t * h * 9 * c * c + 2 * t * h * c
    flops += variant_counts(cfg, t).forward_flops
    if head == "mlm":
        p = t if num_predictions is None else num_predictions
        flops += 2 * p * h * h + 2 * p * h * v
    elif head == "classifier":
        flops += (2 * h * h if cfg.pooler == "cls_tanh" else 2 * t * h) + 2 * h * num_labels
    else:
        raise ValueError(f"unknown head {head!r}: 'mlm' or 'classifier'")
    return float(flops)


def train_flops_per_sequence(cfg: ModelConfig, *, seq_len: int | None = None,
                             num_predictions: int | None = None) -> float:
    """Complete training FLOPs per sequence: forward + backward (2x forward) = 3x forward."""
    return 3.0 * forward_flops_per_sequence(cfg, seq_len=seq_len, num_predictions=num_predictions)
