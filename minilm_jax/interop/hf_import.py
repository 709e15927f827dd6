"""Import of a Hugging Face ``RobertaForMaskedLM`` directory into our :class:`MaskedLM` (the mapping
and config rules are in :mod:`minilm_jax.interop.hf_roberta`), and of our own remote-code masked-LM
exports (:func:`import_minilm`); numpy and safetensors only."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from minilm_jax.interop.hf_files import (CONFIG_NAME, InteropError, hf_weight_files,
                                         safetensors_numpy)
from minilm_jax.interop.hf_minilm import MLM, REMOTE_MODEL_TYPE, _torch_key
from minilm_jax.interop.hf_roberta import (_KERNEL, METADATA_KEY, OVERRIDABLE_FIELDS, _dotted,
                                           _flat_params, model_config_from_hf, param_map)
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.models import MaskedLM



def read_hf_config(hf_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a Hugging Face directory, as a dict."""
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir} is not a directory (expected a Hugging Face model directory)")
    config_path = hf_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{hf_dir}: no {CONFIG_NAME}; not a Hugging Face model directory")
    try:
        hf_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise InteropError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(hf_config, dict):
        raise InteropError(f"{config_path}: expected a JSON object")
    return hf_config


def read_hf_tensors(hf_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a Hugging Face directory's safetensors weights (single file or sharded),
    each file checked whole first (:func:`~minilm_jax.interop.hf_files.hf_weight_files`)."""
    files = hf_weight_files(Path(hf_dir))
    st_numpy = safetensors_numpy()
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(st_numpy.load_file(str(f)))
    return tensors


def _ignorable(key: str) -> bool:
    """Tensors of a RobertaForMaskedLM checkpoint that carry nothing we model."""
    return (key.startswith("roberta.pooler.") or key.endswith(".position_ids")
            or key.endswith(".token_type_ids") or key in ("lm_head.bias", "lm_head.decoder.weight",
                                                          "lm_head.decoder.bias"))


def _hf_values(tensors: Mapping[str, np.ndarray],
               hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``tensors`` with ``lm_head.decoder.{weight,bias}`` resolved as transformers would tie them."""
    values = dict(tensors)
    tied = hf_config.get("tie_word_embeddings", True)  # RobertaConfig's default
    word = "roberta.embeddings.word_embeddings.weight"
    if tied:
        if word in values:
            if ("lm_head.decoder.weight" in values
                    and not np.array_equal(values["lm_head.decoder.weight"], values[word])):
                warnings.warn("config.json ties the word embeddings, so lm_head.decoder.weight is "
                              "ignored (as transformers does) and the word embedding is used",
                              stacklevel=3)
            values["lm_head.decoder.weight"] = values[word]
        if "lm_head.bias" in values:
            values["lm_head.decoder.bias"] = values["lm_head.bias"]
    else:
        if "lm_head.decoder.weight" not in values:
            raise InteropError("config.json says tie_word_embeddings=false but the checkpoint has no "
                               "lm_head.decoder.weight")
    if "lm_head.decoder.bias" not in values and "lm_head.bias" in values:
        values["lm_head.decoder.bias"] = values["lm_head.bias"]
    return values


def import_roberta(hf_dir: str | os.PathLike, **overrides: Any) -> MaskedLM:
    """A :class:`MaskedLM` with exactly the weights of a Hugging Face ``RobertaForMaskedLM`` directory.

    Reads ``config.json`` and ``model.safetensors`` (or a sharded index) with numpy only. A checkpoint
    with tied embeddings (no separate decoder weight) gets the word embedding copied into our
    untied decoder. ``overrides`` set non-architectural fields (see :func:`model_config_from_hf`).
    """
    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir)
    cfg = model_config_from_hf(hf_config, **overrides)
    values = _hf_values(read_hf_tensors(hf_dir), hf_config)

    model = nnx.eval_shape(lambda: MaskedLM(cfg, rngs=nnx.Rngs(0)))  # shapes only, no init cost
    params = _flat_params(model)
    rows = param_map(cfg.num_layers)
    missing = [hf for _, hf, _ in rows if hf not in values]
    if missing:
        raise InteropError(f"{hf_dir}: checkpoint lacks {len(missing)} RobertaForMaskedLM tensor(s), "
                           f"e.g. {missing[:4]}")
    used = {hf for _, hf, _ in rows}
    unexpected = sorted(k for k in values if k not in used and not _ignorable(k))
    if unexpected:
        raise InteropError(f"{hf_dir}: checkpoint has tensors this RoBERTa mapping does not know "
                           f"(a different architecture?): {unexpected[:6]}")
    if set(params) != {ours for ours, _, _ in rows}:  # pragma: no cover - guards model edits
        raise InteropError("MaskedLM parameters changed; update "
                           "minilm_jax.interop.hf_roberta.param_map")
    for ours, hf, kind in rows:
        var = params[ours]
        want = var.get_value()
        arr = np.asarray(values[hf])
        if kind == _KERNEL:
            arr = arr.T
        if arr.shape != tuple(want.shape):
            raise InteropError(f"{hf_dir}: tensor {hf} has shape {tuple(np.asarray(values[hf]).shape)}, "
                               f"expected {tuple(want.shape[::-1]) if kind == _KERNEL else want.shape} "
                               f"for {_dotted(ours)}")
        var.set_value(jnp.asarray(arr, dtype=want.dtype))
    return model


def minilm_export_config(hf_config: Mapping[str, Any], where: str | os.PathLike = "config.json",
                         **overrides: Any) -> ModelConfig:
    """Our :class:`ModelConfig` of one of our remote-code exports (``model_type`` minilm_jax),
    from the ``model_config`` its ``config.json`` keeps; ``overrides`` as for
    :func:`~minilm_jax.interop.hf_roberta.model_config_from_hf`."""
    meta = hf_config.get(METADATA_KEY)
    if hf_config.get("model_type") != REMOTE_MODEL_TYPE or not isinstance(meta, Mapping) \
            or not isinstance(meta.get("model_config"), Mapping):
        raise InteropError(f"{where}: not a minilm-jax export (model_type {REMOTE_MODEL_TYPE} with "
                           f"{METADATA_KEY}.model_config)")
    bad = sorted(set(overrides) - set(OVERRIDABLE_FIELDS))
    if bad:
        raise InteropError(f"cannot override {bad}: only {OVERRIDABLE_FIELDS} may be overridden")
    try:
        return ModelConfig.from_mapping({**meta["model_config"], **overrides})
    except (ConfigError, TypeError) as err:
        raise InteropError(f"{where}: its {METADATA_KEY}.model_config does not build ({err})") \
            from None


def import_minilm(hf_dir: str | os.PathLike, **overrides: Any) -> MaskedLM:
    """A :class:`MaskedLM` with exactly the weights of one of our remote-code masked-LM exports
    (``MinilmForMaskedLM``: the default recipe's factorized model, pre-LN, the conv front end), read
    with numpy and safetensors only: its PyTorch code is never run. The inverse of
    :func:`~minilm_jax.interop.hf_minilm.minilm_tensors`."""
    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir)
    cfg = minilm_export_config(hf_config, hf_dir / CONFIG_NAME, **overrides)
    architecture = (hf_config.get("architectures") or ["(none)"])[0]
    if architecture != f"MinilmFor{MLM}":
        raise InteropError(f"{hf_dir} holds a {architecture}, not a MinilmFor{MLM}")
    tensors = read_hf_tensors(hf_dir)
    model = nnx.eval_shape(lambda: MaskedLM(cfg, rngs=nnx.Rngs(0)))  # shapes only, no init cost
    variables = [(tuple(path), var) for path, var in nnx.to_flat_state(nnx.state(model))]
    names = {path: _torch_key(path) for path, _ in variables}
    missing = [names[path] for path, _ in variables if names[path] not in tensors]
    if missing:
        raise InteropError(f"{hf_dir}: checkpoint lacks {len(missing)} tensor(s) of its model, "
                           f"e.g. {missing[:4]}")
    unexpected = sorted(set(tensors) - set(names.values()))
    unexpected = [k for k in unexpected if not k.endswith(".num_batches_tracked")]
    if unexpected:
        raise InteropError(f"{hf_dir}: checkpoint has tensors its config's model lacks: "
                           f"{unexpected[:6]}")
    for path, var in variables:
        want = var.get_value()
        arr = np.asarray(tensors[names[path]])
        if path[-1] == "kernel":  # Linear [out, in] -> [in, out]; conv [o, i, kh, kw] -> [kh, kw, i, o]
            arr = arr.T if arr.ndim == 2 else arr.transpose(2, 3, 1, 0)
        if arr.shape != tuple(want.shape):
            raise InteropError(f"{hf_dir}: tensor {names[path]} has shape {arr.shape} once "
                               f"converted, expected {tuple(want.shape)}")
        var.set_value(jnp.asarray(arr, dtype=want.dtype))
    return model
