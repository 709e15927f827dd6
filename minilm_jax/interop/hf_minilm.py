"""Hugging Face export of any model the tool builds: a masked LM or a sequence classifier.

A model RoBERTa can hold (:func:`~minilm_jax.interop.hf_roberta.export_problems` is empty; for a
classifier also the ``cls_tanh`` pooler) is written as ``RobertaForMaskedLM`` /
``RobertaForSequenceClassification``. Any other built-in encoder (factorized embeddings with the
E->H projection, pre-LN, a position offset other than ``pad_id + 1``, study B's conv front end, the
``weighted_sum`` pooler) is written with ``model_type`` ``minilm_jax`` and our own PyTorch code
(:mod:`minilm_jax.interop.hf_remote`, copied into the directory and named in ``auto_map``), loaded
with ``AutoModelForMaskedLM`` / ``AutoModelForSequenceClassification`` and
``trust_remote_code=True``. A custom encoder exports with its own PyTorch file beside ours (its
``torch_twin``, :mod:`minilm_jax.interop.hf_twin`), whose classes ``auto_map`` names; its variant
fields are ``config.json``'s ``variant_fields``. Every tensor crosses by name: our nnx path with
``encoder`` as ``minilm`` (``kernel``/``scale``/``embedding`` as ``weight``, Linear kernels
transposed, conv kernels ``[kh, kw, in, out]`` as ``[out, in, kh, kw]``, BatchNorm
``mean``/``var`` as ``running_*``). A layer shared across depths (a variant's ``make_layers``) is
one entry of the nnx state, so it is written once, under its first path; the twin ties its other
names to it (:mod:`minilm_jax.interop.hf_remote`'s base class).
No torch needed: weights go through ``safetensors.numpy``; where torch and transformers are
installed, the written folder is loaded and its logits compared with ours before it is moved into
place (:mod:`minilm_jax.interop.twin_check`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from flax import nnx

from minilm_jax.interop.hf_files import (CONFIG_NAME, WEIGHTS_NAME, InteropError, check_target,
                                         tokenizer_files, write_hf_dir)
from minilm_jax.interop.hf_remote import remote_files
from minilm_jax.interop.hf_roberta import (_KERNEL, BOS_ID, EOS_ID, METADATA_KEY, METADATA_VERSION,
                                           _flat_params, export_problems,
                                           hf_config_from_model_config, hf_tensors, mapped_tensors,
                                           param_map)
from minilm_jax.interop.hf_twin import TorchTwin, torch_twin
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.models import MaskedLM, SequenceClassifier
from minilm_jax.model.registry import is_library_encoder

if TYPE_CHECKING:
    from minilm_jax.tokenizer import Tokenizer

REMOTE_MODEL_TYPE = "minilm_jax"
MLM, CLASSIFIER = "MaskedLM", "SequenceClassification"
AUTO_MAP = {"AutoConfig": "configuration_minilm.MinilmConfig",
            "AutoModel": "modeling_minilm.MinilmModel",
            "AutoModelForMaskedLM": "modeling_minilm.MinilmForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_minilm.MinilmForSequenceClassification"}
_RENAMED = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean",
            "var": "running_var"}
_PREFIX = {"encoder": "minilm", "mlm_head": "mlm_head", "head": "head"}


def remote_problems(cfg: ModelConfig) -> list[str]:
    """Why a model of ``cfg`` cannot be exported at all (empty: it can, in one layout or other):
    a custom encoder without a usable PyTorch twin (:func:`~.hf_twin.torch_twin`)."""
    try:
        torch_twin(cfg)
    except InteropError as err:
        return [str(err)]
    return []


def export_twin(cfg: ModelConfig) -> TorchTwin | None:
    """The custom encoder's PyTorch twin (None: a built-in encoder, ours); one-line
    :class:`InteropError` when there is none usable."""
    try:
        return torch_twin(cfg)
    except InteropError as err:
        raise InteropError(f"cannot export to Hugging Face: {err}") from None


def export_note(config: Any) -> str | None:
    """The line pre-training prints before it trains when the run's model will not export to
    Hugging Face at all, and why (None: it exports, as RoBERTa or with its own PyTorch code)."""
    from minilm_jax.settings.model_fields import model_from_config

    try:
        problems = remote_problems(model_from_config(config))
    except ConfigError:
        return None  # the run itself reports a bad model config
    return f"note: this model will not export to Hugging Face ({problems[0]})" if problems else None


def fits_roberta(model: MaskedLM | SequenceClassifier) -> bool:
    """Whether ``model`` exports as a stock RoBERTa (no remote code; never a custom encoder)."""
    cfg = model.cfg
    if export_problems(cfg) or cfg.arch == "bert_conv" or not is_library_encoder(cfg.arch):
        return False
    return isinstance(model, MaskedLM) or cfg.pooler == "cls_tanh"


def label_fields(labels: Sequence[str], regression: bool) -> dict[str, Any]:
    """``id2label``, ``label2id`` and ``problem_type`` of a classifier's ``config.json``."""
    names = [str(name) for name in labels]
    return {"id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "regression" if regression else "single_label_classification"}


def minilm_hf_config(cfg: ModelConfig, kind: str) -> dict[str, Any]:
    """The remote-code ``config.json`` of a model of ``cfg`` (``kind``: :data:`MLM` or
    :data:`CLASSIFIER`; a classifier's label fields are added by the caller). A custom encoder's
    ``architectures`` and ``auto_map`` name its twin's classes."""
    twin = export_twin(cfg)
    conv = twin.conv_front_end if twin else cfg.arch == "bert_conv"  # others ignore conv fields
    auto_map = dict(AUTO_MAP)
    if twin:
        del auto_map["AutoModel"]  # named only when the twin defines its base model
        auto_map |= twin.auto_map()
    return {
        "architectures": [twin.architecture(kind) if twin else f"MinilmFor{kind}"],
        "model_type": REMOTE_MODEL_TYPE, "auto_map": auto_map,
        "variant_fields": dict(cfg.extra), "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.emb_dim, "hidden_size": cfg.hidden_dim,
        "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "max_position_embeddings": cfg.num_positions, "position_offset": cfg.position_offset,
        "type_vocab_size": cfg.type_vocab_size, "embed_projection": cfg.embed_projection,
        "norm_position": cfg.norm_position, "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout, "hidden_act": "gelu",
        "conv_layers": cfg.conv_layers if conv else 0,
        "conv_channels": cfg.conv_channels if conv else 0, "pooler": cfg.pooler,
        "initializer_range": 0.02, "pad_token_id": cfg.pad_id, "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID, "tie_word_embeddings": False, "dtype": "float32",
        METADATA_KEY: {"version": METADATA_VERSION, "model_config": cfg.to_dict()},
    }


def _torch_key(path: tuple[Any, ...]) -> str:
    head, *rest = path
    if head not in _PREFIX or not rest:
        raise InteropError(f"model state {'.'.join(map(str, path))} has no Hugging Face name")
    leaf = str(rest[-1])
    return ".".join([_PREFIX[head], *map(str, rest[:-1]), _RENAMED.get(leaf, leaf)])


def minilm_tensors(model: MaskedLM | SequenceClassifier) -> dict[str, np.ndarray]:
    """The remote-code state dict (float32 numpy; parameters and BatchNorm statistics)."""
    out: dict[str, np.ndarray] = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        arr = np.asarray(var.get_value(), dtype=np.float32)
        if path[-1] == "kernel":
            arr = arr.T if arr.ndim == 2 else arr.transpose(3, 2, 0, 1)
        key = _torch_key(tuple(path))
        out[key] = np.ascontiguousarray(arr)
        if path[-1] == "mean":  # torch's BatchNorm counts its updates too
            out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


def roberta_classifier_tensors(model: SequenceClassifier) -> dict[str, np.ndarray]:
    """The ``RobertaForSequenceClassification`` state dict of a model :func:`fits_roberta`."""
    params = _flat_params(model)
    rows = [r for r in param_map(model.cfg.num_layers) if r[0][0] == "encoder"]
    rows += [(("head", "pooler", "dense", p), f"classifier.dense.{n}", k)
             for p, n, k in (("kernel", "weight", _KERNEL), ("bias", "bias", ""))]
    rows += [(("head", "classifier", p), f"classifier.out_proj.{n}", k)
             for p, n, k in (("kernel", "weight", _KERNEL), ("bias", "bias", ""))]
    extra = sorted(".".join(map(str, p)) for p in set(params) - {r[0] for r in rows})
    if extra:
        raise InteropError(f"classifier state {extra[:5]} has no name in "
                           "RobertaForSequenceClassification")
    return mapped_tensors(params, rows)


def hf_layout(model: MaskedLM | SequenceClassifier, labels: Sequence[str] = (),
              regression: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """``(config.json dict, state dict, remote code?)`` of ``model`` in the layout it fits."""
    if not isinstance(model, (MaskedLM, SequenceClassifier)):
        raise TypeError(f"export needs a MaskedLM or SequenceClassifier, not "
                        f"{type(model).__name__}")
    classifier = isinstance(model, SequenceClassifier)
    if classifier and len(labels) != model.num_labels:
        raise InteropError(f"{len(labels)} label names for a head of {model.num_labels} outputs")
    if fits_roberta(model):
        config = hf_config_from_model_config(model.cfg)
        if not classifier:
            return config, hf_tensors(model), False
        config["architectures"] = ["RobertaForSequenceClassification"]
        return config | label_fields(labels, regression), roberta_classifier_tensors(model), False
    config = minilm_hf_config(model.cfg, CLASSIFIER if classifier else MLM)
    if classifier:
        config |= label_fields(labels, regression)
    return config, minilm_tensors(model), True


def implementation_of(model: MaskedLM | SequenceClassifier, architecture: str,
                      remote: bool) -> str:
    """How an export's PyTorch side is named in what the export says: the custom encoder's twin
    file, our remote code, or transformers' own class."""
    if not remote:
        return f"transformers' {architecture}"
    twin = export_twin(model.cfg)
    if twin:
        return f"the PyTorch twin {twin.path.name} ({architecture})"
    return f"minilm-jax's PyTorch code modeling_minilm.py ({architecture})"


def twin_record(twin: TorchTwin) -> dict[str, str]:
    """The twin file an export ships, by name and sha256 (its provenance)."""
    return {"file": twin.path.name, "sha256": hashlib.sha256(twin.path.read_bytes()).hexdigest()}


def export_model(model: MaskedLM | SequenceClassifier, out_dir: str | os.PathLike, *,
                 labels: Sequence[str] = (), regression: bool = False,
                 tokenizer: "Tokenizer | None" = None, provenance: Mapping[str, Any] | None = None,
                 files: Mapping[str, str] | None = None, overwrite: bool = False,
                 notes: list[str] | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory: ``config.json``, ``model.safetensors``
    (float32), our remote code when RoBERTa cannot hold it (a custom encoder's ``torch_twin``
    file too, named with its sha256 in the provenance), the tokenizer (ours plus
    ``tokenizer.json`` & co.) and ``files`` (name -> text, e.g. ``README.md``). A classifier needs
    its ``labels`` (one name per output; one output and ``regression=True`` for a regressor).

    Before the directory reaches ``out_dir`` it is checked by its numbers where torch and
    transformers are installed (:mod:`minilm_jax.interop.twin_check`): loaded through the Auto
    classes, its logits must be ours at the exported and at perturbed parameters, else one-line
    :class:`InteropError` and nothing written. What the check found is appended to the
    ``README.md`` model card (when ``files`` has one) and to ``notes``; without torch it says
    "PyTorch twin not verified". Atomic; a non-empty ``out_dir`` is replaced only with
    ``overwrite=True``. Returns its path."""
    from minilm_jax.interop.model_card import CARD_NAME, twin_check_section
    from minilm_jax.interop.twin_check import not_verified, verify_export

    config, tensors, remote = hf_layout(model, labels, regression)
    twin = export_twin(model.cfg) if remote else None
    if provenance or twin:
        config[METADATA_KEY]["provenance"] = {**(provenance or {}),
                                              **({"torch_twin": twin_record(twin)} if twin else {})}
    check_target(Path(out_dir), overwrite)
    copies = tokenizer_files(tokenizer.path if tokenizer else None)
    if remote:
        copies += remote_files(twin.path if twin else None)
    clash = sorted(set(files or {}) & ({CONFIG_NAME, WEIGHTS_NAME} | {f.name for f in copies}))
    if clash:
        raise InteropError(f"extra export files {clash} would overwrite the model's own")
    implementation = implementation_of(model, config["architectures"][0], remote)

    def check(folder: Path) -> None:
        result = not_verified(implementation)
        if result is None:
            try:
                result = verify_export(
                    model, folder, implementation=implementation, remote=remote, labels=labels,
                    tensors_of=lambda m: hf_layout(m, labels, regression)[1])
            except InteropError as err:
                raise InteropError(f"cannot export to Hugging Face: {err}; nothing was written "
                                   f"to {out_dir}") from None
        card = folder / CARD_NAME
        if files and CARD_NAME in files and card.is_file():
            card.write_text(card.read_text(encoding="utf-8") + twin_check_section(result.line()),
                            encoding="utf-8")
        if notes is not None:
            notes.append(result.line())

    return write_hf_dir(out_dir, config, tensors, copies=copies, tokenizer=tokenizer,
                        max_len=model.cfg.max_len, files=files, overwrite=overwrite, check=check)


def architecture_of(out_dir: str | os.PathLike) -> str:
    """The ``architectures[0]`` an export's ``config.json`` names."""
    return json.loads((Path(out_dir) / CONFIG_NAME).read_text())["architectures"][0]
