"""The model-size grammar and the named scaling points of both studies, decoded in one place.

Grammar: ``E<emb>-H<hidden>-I<ffn>-L<layers>-A<heads>[-V<vocab>]``, e.g. ``E32-H32-I128-L1-A2-V19010``.
A named point (``paper-1.25m``, ``bert6``, ...) is an alias for a grammar string plus architecture
fields. ``resolve_point`` accepts either and returns a frozen :class:`ModelConfig`.
"""

from __future__ import annotations

import re
from typing import Any

from minilm_jax.model.config import ConfigError, ModelConfig

POINT_RE = re.compile(r"^E(\d+)-H(\d+)-I(\d+)-L(\d+)-A(\d+)(?:-V(\d+))?$")
GRAMMAR = "E<emb>-H<hidden>-I<ffn>-L<layers>-A<heads>[-V<vocab>]"

SPARE_VOCAB_ROWS = 10  # embedding rows beyond the tokenizer's pieces that pre-training accepts
ROBERTA_VOCAB = 19000 + SPARE_VOCAB_ROWS  # 19,000-token constrained BPE + 10 spare rows (SPEC A2)
BERT_VOCAB = 30522  # bert-base-uncased WordPiece

# Study B's BERT-style fields (SPEC B): LN eps 1e-12, learned positions without offset, no E->H
# projection, WordPiece ids ([PAD]=0), BERT initialisation.
_BERT_FIELDS: dict[str, Any] = dict(arch="bert", layer_norm_eps=1e-12, position_offset=0,
                                    embed_projection=False, pad_id=0, init="bert")


def _bert(heads: int, layers: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    """BERT-style point: head size 64, FFN 4H."""
    hidden = 64 * heads
    return (f"E{hidden}-H{hidden}-I{4 * hidden}-L{layers}-A{heads}-V{BERT_VOCAB}",
            {**_BERT_FIELDS, **extra})


def _bert_conv(heads: int, conv_layers: int, channels: int) -> tuple[str, dict[str, Any]]:
    return _bert(heads, 1, arch="bert_conv", conv_layers=conv_layers, conv_channels=channels)


# name -> (grammar string, extra ModelConfig fields, description)
NAMED_POINTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "paper-1.25m": ("E32-H32-I128-L1-A2-V19010", {}, "study A: the 1.25M-parameter model"),
    "base-small": ("E32-H32-I128-L2-A2-V19010", {}, "study A: small one-factor-at-a-time base"),
    "base-large": ("E256-H256-I1024-L8-A8-V19010", {}, "study A: large one-factor-at-a-time base"),
    # Iso-FLOP / iso-parameter groups of SPEC A5: depth traded against FFN width.
    "iso1-deep": ("E32-H32-I128-L2-A2-V19010", {}, "study A group 1: 2 layers, I=128"),
    "iso1-wide": ("E32-H32-I256-L1-A2-V19010", {}, "study A group 1: 1 layer, I=256"),
    "iso2-deep": ("E64-H128-I1024-L4-A8-V19010", {}, "study A group 2: 4 layers, E=64"),
    "iso2-wide": ("E128-H128-I128-L1-A1-V19010", {}, "study A group 2: 1 layer, E=128, I=128"),
    "iso3-deep": ("E64-H32-I128-L8-A1-V19010", {}, "study A group 3: 8 layers, I=128"),
    "iso3-wide": ("E64-H32-I256-L4-A1-V19010", {}, "study A group 3: 4 layers, I=256"),
}
for _heads in (8, 12, 24):
    _s, _f = _bert(_heads, 1)
    NAMED_POINTS[f"bert1-a{_heads}"] = (_s, _f, f"study B: 1-layer BERT, {_heads} heads")
    for _convs in (2, 3):
        for _ch in (32, 64):
            _s, _f = _bert_conv(_heads, _convs, _ch)
            NAMED_POINTS[f"bert1-a{_heads}-conv{_convs}x{_ch}"] = (
                _s, _f, f"study B: 1-layer BERT, {_heads} heads, {_convs} conv layers x {_ch} channels")
_s, _f = _bert(12, 6)
NAMED_POINTS["bert6"] = (_s, _f, "study B: 6-layer BERT, 12 heads, H=768")


def parse_point(point: str) -> dict[str, int]:
    """Decode a grammar string into size fields; error names the string and the grammar."""
    match = POINT_RE.match(point.strip())
    if not match:
        raise ConfigError(
            f"malformed model point {point!r}: expected {GRAMMAR} (e.g. E32-H32-I128-L1-A2-V19010) "
            f"or one of the named points: {', '.join(sorted(NAMED_POINTS))}")
    emb, hidden, ffn, layers, heads, vocab = match.groups()
    fields = dict(emb_dim=int(emb), hidden_dim=int(hidden), ffn_dim=int(ffn), num_layers=int(layers),
                  num_heads=int(heads))
    if vocab is not None:
        fields["vocab_size"] = int(vocab)
    return fields


def point_fields(point: str) -> dict[str, Any]:
    """All ModelConfig fields a point (name or grammar string) sets."""
    if point in NAMED_POINTS:
        grammar, extra, _ = NAMED_POINTS[point]
        return {**parse_point(grammar), **extra}
    fields = parse_point(point)
    fields.setdefault("vocab_size", ROBERTA_VOCAB)
    return fields


def resolve_point(point: str, **overrides: Any) -> ModelConfig:
    """A frozen ModelConfig for a named point or grammar string, with optional field overrides
    (a variant's fields not given at their declared defaults: :func:`with_variant_defaults`)."""
    fields = {**point_fields(point), **overrides}
    return with_variant_defaults(ModelConfig.from_mapping(fields))


def with_variant_defaults(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with every field its variant declares (``config_fields``) that it does not set at
    the declared default, as the commands record them (``--config.model.extra.<name>``), so
    ``cfg.extra_value(name)`` is the same in Python as in a run. A built-in encoder declares
    none: ``cfg`` itself (nothing imported)."""
    from minilm_jax.model.registry import encoder_factory, is_library_encoder

    if not cfg.arch or is_library_encoder(cfg.arch):
        return cfg
    declared = dict(getattr(encoder_factory(cfg.arch), "config_fields", None) or {})
    missing = {k: v for k, v in declared.items() if k not in dict(cfg.extra)}
    if not missing:
        return cfg
    return ModelConfig.from_mapping({**cfg.to_dict(), "extra": {**dict(cfg.extra), **missing}})
