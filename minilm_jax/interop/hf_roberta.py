"""Hugging Face ``RobertaForMaskedLM`` export and import for :class:`~minilm_jax.model.MaskedLM`.

A RoBERTa-style ``MaskedLM`` (``arch`` "roberta"/"bert" with ``embed_projection=False``, so E == H,
post-LN layers, learned positions offset by ``pad_id + 1``) has exactly the parameters of
``transformers.RobertaForMaskedLM``; this module maps them one to one::

    ours (nnx path)                                  Hugging Face (safetensors key)
    encoder.word_embeddings.embedding      [V, H]    roberta.embeddings.word_embeddings.weight
    encoder.position_embeddings.embedding  [T+2, H]  roberta.embeddings.position_embeddings.weight
    encoder.token_type_embeddings.embedding          roberta.embeddings.token_type_embeddings.weight
    encoder.embedding_norm.{scale,bias}              roberta.embeddings.LayerNorm.{weight,bias}
    encoder.layers.i.attention.{query,key,value}     roberta.encoder.layer.i.attention.self.{q,k,v}
    encoder.layers.i.attention.output                roberta.encoder.layer.i.attention.output.dense
    encoder.layers.i.attention_norm                  roberta.encoder.layer.i.attention.output.LayerNorm
    encoder.layers.i.ffn.up                          roberta.encoder.layer.i.intermediate.dense
    encoder.layers.i.ffn.down                        roberta.encoder.layer.i.output.dense
    encoder.layers.i.ffn_norm                        roberta.encoder.layer.i.output.LayerNorm
    mlm_head.dense / mlm_head.norm                   lm_head.dense / lm_head.layer_norm
    mlm_head.decoder.{kernel,bias}                   lm_head.decoder.{weight,bias} (+ lm_head.bias)

An nnx ``Linear`` kernel is ``[in, out]``; a torch ``Linear`` weight is ``[out, in]`` (transposed on
the way through). LayerNorm ``scale`` is torch's ``weight``. Our MLM decoder is not tied to the input
embedding, so exports say ``tie_word_embeddings: false``; importing a tied checkpoint copies the
word embedding into our decoder.

Neither direction needs torch: weights go through ``safetensors.numpy``. The numerical check against
``transformers`` lives in ``tests/test_interop_hf.py``; ``python -m minilm_jax.interop export`` writes
a trained workdir, ``python -m minilm_jax.interop demo`` runs a round trip on a freshly built point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from flax import nnx

from minilm_jax.interop.hf_files import (InteropError, check_target, tokenizer_files,
                                         write_hf_dir)
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.models import MaskedLM

if TYPE_CHECKING:
    from minilm_jax.tokenizer import Tokenizer

HF_ARCHITECTURE = "RobertaForMaskedLM"
HF_MODEL_TYPE = "roberta"
METADATA_KEY = "minilm_jax"  # our own, non-architectural fields, kept in config.json
METADATA_VERSION = 1
BOS_ID, EOS_ID = 0, 2  # RoBERTa's <s> and </s>
EXPORTABLE_ARCHS = ("roberta", "bert")  # both build a plain TransformerEncoder
# ModelConfig fields that the Hugging Face config does not carry: restored from our metadata on import
# and accepted as import overrides. Everything else is decided by the Hugging Face config.
RESTORABLE_FIELDS = ("arch", "init", "dtype", "param_dtype", "attention_impl", "pooler")
OVERRIDABLE_FIELDS = RESTORABLE_FIELDS + ("hidden_dropout", "attention_dropout")

_EMBED, _KERNEL, _VECTOR = "embed", "kernel", "vector"  # how a tensor crosses: as is / transposed
Path_ = tuple[Any, ...]



# ----------------------------------------------------------------------------------------- mapping


def _linear(ours: Path_, hf: str) -> list[tuple[Path_, str, str]]:
    return [(ours + ("kernel",), f"{hf}.weight", _KERNEL), (ours + ("bias",), f"{hf}.bias", _VECTOR)]


def _norm(ours: Path_, hf: str) -> list[tuple[Path_, str, str]]:
    return [(ours + ("scale",), f"{hf}.weight", _VECTOR), (ours + ("bias",), f"{hf}.bias", _VECTOR)]


def param_map(num_layers: int) -> list[tuple[Path_, str, str]]:
    """``(our nnx path, Hugging Face key, kind)`` for every parameter of a RoBERTa-style MaskedLM."""
    enc, emb = ("encoder",), "roberta.embeddings"
    rows = [
        (enc + ("word_embeddings", "embedding"), f"{emb}.word_embeddings.weight", _EMBED),
        (enc + ("position_embeddings", "embedding"), f"{emb}.position_embeddings.weight", _EMBED),
        (enc + ("token_type_embeddings", "embedding"), f"{emb}.token_type_embeddings.weight", _EMBED),
        *_norm(enc + ("embedding_norm",), f"{emb}.LayerNorm"),
    ]
    for i in range(num_layers):
        ours, hf = enc + ("layers", i), f"roberta.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            rows += _linear(ours + ("attention", name), f"{hf}.attention.self.{name}")
        rows += _linear(ours + ("attention", "output"), f"{hf}.attention.output.dense")
        rows += _norm(ours + ("attention_norm",), f"{hf}.attention.output.LayerNorm")
        rows += _linear(ours + ("ffn", "up"), f"{hf}.intermediate.dense")
        rows += _linear(ours + ("ffn", "down"), f"{hf}.output.dense")
        rows += _norm(ours + ("ffn_norm",), f"{hf}.output.LayerNorm")
    rows += _linear(("mlm_head", "dense"), "lm_head.dense")
    rows += _norm(("mlm_head", "norm"), "lm_head.layer_norm")
    rows += _linear(("mlm_head", "decoder"), "lm_head.decoder")
    return rows


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


# ------------------------------------------------------------------------------------------ config


def export_problems(cfg: ModelConfig) -> list[str]:
    """Why a model of ``cfg`` cannot be a RobertaForMaskedLM (empty: it can)."""
    problems = []
    if cfg.arch not in EXPORTABLE_ARCHS:
        problems.append(f"model.arch={cfg.arch!r}: only {EXPORTABLE_ARCHS} (a plain transformer "
                        "encoder) map to RoBERTa")
    if cfg.conv_layers or cfg.conv_channels:
        problems.append(f"model.conv_layers={cfg.conv_layers}/model.conv_channels={cfg.conv_channels}: "
                        "RoBERTa has no convolutional front end")
    if cfg.embed_projection:
        problems.append("model.embed_projection=True: RoBERTa has no E->H projection (+LayerNorm); "
                        "only models built with embed_projection=False (and E == H) export")
    if cfg.emb_dim != cfg.hidden_dim:
        problems.append(f"model.emb_dim={cfg.emb_dim} != model.hidden_dim={cfg.hidden_dim}: RoBERTa's "
                        "embeddings are H wide")
    if cfg.norm_position != "post":
        problems.append(f"model.norm_position={cfg.norm_position!r}: RoBERTa layers are post-LN")
    if cfg.position_offset != cfg.pad_id + 1:
        problems.append(f"model.position_offset={cfg.position_offset}: Hugging Face RoBERTa numbers "
                        f"positions from pad_token_id + 1 = {cfg.pad_id + 1} "
                        f"(model.pad_id={cfg.pad_id})")
    return problems


def hf_config_from_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a ``RobertaForMaskedLM`` equivalent to ``cfg``."""
    problems = export_problems(cfg)
    if problems:
        raise InteropError("cannot export to Hugging Face RobertaForMaskedLM: " + "; ".join(problems))
    return {
        "architectures": [HF_ARCHITECTURE],
        "model_type": HF_MODEL_TYPE,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "gelu",  # exact (erf) GELU in transformers, as ours
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.num_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_id,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": False,
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "use_cache": True,
        "classifier_dropout": None,
        "dtype": "float32",
        METADATA_KEY: {"version": METADATA_VERSION, "model_config": cfg.to_dict()},
    }


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise InteropError(msg)


def model_config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Our :class:`ModelConfig` for a Hugging Face RoBERTa ``config.json`` dict.

    ``overrides`` may set only fields the Hugging Face config does not decide
    (:data:`OVERRIDABLE_FIELDS`: compute dtype, attention implementation, dropout, ...).
    """
    model_type = hf_config.get("model_type")
    archs = hf_config.get("architectures") or []
    _need(model_type == HF_MODEL_TYPE or (model_type is None and HF_ARCHITECTURE in archs),
          f"config.json: model_type={model_type!r} is not supported; only {HF_MODEL_TYPE!r} "
          f"({HF_ARCHITECTURE}) converts")
    _need(not archs or HF_ARCHITECTURE in archs,
          f"config.json: architectures={archs!r}; only {HF_ARCHITECTURE} checkpoints (with an MLM "
          "head) convert")
    act = hf_config.get("hidden_act", "gelu")
    _need(act == "gelu", f"config.json: hidden_act={act!r} is not supported; ours is the exact "
          "(erf) 'gelu'")
    pos = hf_config.get("position_embedding_type", "absolute")
    _need(pos == "absolute", f"config.json: position_embedding_type={pos!r} is not supported; only "
          "'absolute' learned positions")
    _need(not hf_config.get("is_decoder", False), "config.json: is_decoder=true is not supported "
          "(ours is a bidirectional encoder)")
    _need(not hf_config.get("add_cross_attention", False),
          "config.json: add_cross_attention=true is not supported")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings"):
        _need(isinstance(hf_config.get(key), int), f"config.json: {key} missing or not an integer "
              f"(got {hf_config.get(key)!r})")
    pad = hf_config.get("pad_token_id", 1)
    _need(isinstance(pad, int) and pad >= 0,
          f"config.json: pad_token_id={pad!r} must be an integer >= 0")
    offset = pad + 1
    max_len = hf_config["max_position_embeddings"] - offset
    _need(max_len > 0, f"config.json: max_position_embeddings={hf_config['max_position_embeddings']} "
          f"leaves no positions after the offset pad_token_id + 1 = {offset}")
    hidden = hf_config["hidden_size"]
    fields: dict[str, Any] = dict(
        vocab_size=hf_config["vocab_size"], emb_dim=hidden, hidden_dim=hidden,
        ffn_dim=hf_config["intermediate_size"], num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"], arch="roberta", max_len=max_len,
        position_offset=offset, type_vocab_size=hf_config.get("type_vocab_size", 2),
        embed_projection=False, norm_position="post",
        layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
        hidden_dropout=float(hf_config.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf_config.get("attention_probs_dropout_prob", 0.1)),
        init="bert", pad_id=pad)
    meta = hf_config.get(METADATA_KEY)
    if isinstance(meta, Mapping) and isinstance(meta.get("model_config"), Mapping):
        ours = meta["model_config"]
        restored = {k: ours[k] for k in RESTORABLE_FIELDS if k in ours}
        if restored.get("arch") not in EXPORTABLE_ARCHS:
            restored.pop("arch", None)
        fields.update(restored)
    bad = sorted(set(overrides) - set(OVERRIDABLE_FIELDS))
    _need(not bad, f"import overrides {bad} are not allowed: the checkpoint decides them; allowed: "
          f"{', '.join(OVERRIDABLE_FIELDS)}")
    fields.update(overrides)
    _need(fields["arch"] in EXPORTABLE_ARCHS, f"model.arch={fields['arch']!r}: an imported RoBERTa "
          f"is one of {EXPORTABLE_ARCHS}")
    try:
        return ModelConfig.from_mapping(fields)
    except ConfigError as err:
        raise InteropError(f"config.json describes a model we cannot build: {err}") from err


# ------------------------------------------------------------------------------------------ export


def _flat_params(model: nnx.Module) -> dict[Path_, Any]:
    return {tuple(path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _export_problems(model: MaskedLM) -> list[str]:
    problems = export_problems(model.cfg)
    if not problems and type(model.encoder) is not TransformerEncoder:
        problems.append(f"model.encoder is a {type(model.encoder).__name__}, not a plain "
                        "TransformerEncoder")
    other = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param)))
    if not problems and len(other):
        problems.append(f"model has non-parameter state {[_dotted(p) for p, _ in other][:5]} "
                        "that RoBERTa cannot hold")
    return problems


def mapped_tensors(params: dict[Path_, Any], rows: list[tuple[Path_, str, str]]
                   ) -> dict[str, np.ndarray]:
    """The float32 state dict of ``rows`` (ours, Hugging Face name, kind): kernels transposed."""
    out: dict[str, np.ndarray] = {}
    for ours, hf, kind in rows:
        arr = np.asarray(params[ours].get_value(), dtype=np.float32)
        out[hf] = np.ascontiguousarray(arr.T if kind == _KERNEL else arr)
    return out


def hf_tensors(model: MaskedLM) -> dict[str, np.ndarray]:
    """The ``RobertaForMaskedLM`` state dict (float32 numpy arrays) of ``model``."""
    if not isinstance(model, MaskedLM):
        raise TypeError(f"export_roberta needs a MaskedLM, got {type(model).__name__}")
    problems = _export_problems(model)
    if problems:
        raise InteropError("cannot export to Hugging Face RobertaForMaskedLM: " + "; ".join(problems))
    params = _flat_params(model)
    rows = param_map(model.cfg.num_layers)
    mapped = {ours for ours, _, _ in rows}
    unmapped = sorted(_dotted(p) for p in set(params) - mapped)
    missing = sorted(_dotted(p) for p in mapped - set(params))
    if unmapped or missing:
        raise InteropError(f"model parameters do not match RobertaForMaskedLM: unmapped {unmapped}, "
                           f"missing {missing}")
    out = mapped_tensors(params, rows)
    # transformers keeps the output bias twice (lm_head.bias, tied to lm_head.decoder.bias when the
    # embeddings are tied); an untied save_pretrained writes both, so do we.
    out["lm_head.bias"] = out["lm_head.decoder.bias"].copy()
    return out


def export_roberta(model: MaskedLM, out_dir: str | os.PathLike, *,
                   tokenizer_path: str | os.PathLike | None = None,
                   tokenizer: "Tokenizer | None" = None, provenance: Mapping[str, Any] | None = None,
                   overwrite: bool = False) -> Path:
    """Write ``model`` as a Hugging Face ``RobertaForMaskedLM`` directory (``config.json`` +
    ``model.safetensors``, float32), loadable with ``RobertaForMaskedLM.from_pretrained(out_dir)``.

    ``tokenizer`` (ours) adds its own file plus ``tokenizer.json`` & co., which ``AutoTokenizer``
    loads and which encode as ``tokenizer`` does (:mod:`minilm_jax.interop.hf_tokenizer`);
    ``tokenizer_path`` (a file, or a directory whose files are all copied) is copied as is.
    ``provenance`` (e.g. the workdir and step exported) is kept in ``config.json`` under our key.
    Configurations RoBERTa cannot represent (E->H projection, E != H, pre-LN, conv front end, a
    position offset other than pad_id + 1) raise :class:`InteropError` naming the field. The
    directory is written atomically; a non-empty ``out_dir`` is replaced only with ``overwrite=True``.
    Returns the absolute output directory.
    """
    if not isinstance(model, MaskedLM):
        raise TypeError(f"export_roberta needs a MaskedLM, got {type(model).__name__}")
    hf_config = hf_config_from_model_config(model.cfg)
    if provenance:
        hf_config[METADATA_KEY]["provenance"] = dict(provenance)
    check_target(Path(out_dir), overwrite)  # fail before doing any work
    copies = tokenizer_files(tokenizer_path) + tokenizer_files(tokenizer.path if tokenizer else None)
    return write_hf_dir(out_dir, hf_config, hf_tensors(model), copies=copies, tokenizer=tokenizer,
                        max_len=model.cfg.max_len, overwrite=overwrite)
