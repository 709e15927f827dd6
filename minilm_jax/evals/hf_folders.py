"""What a local Hugging Face folder holds, checked before anything loads: whether it is one of our
exports, whether it is a masked LM, whether transformers could load it without running code from
the folder, and whether its weights and tokenizer files are there and whole. Every refusal is one
line (:class:`~minilm_jax.errors.UserError`) naming the folder or the file.

Our own exports are recognised by their ``config.json``: the ``minilm_jax`` block holding the
model's config (written by ``python -m minilm_jax.interop export``). A RoBERTa-layout export loads
with transformers' own code; a remote-code export (``model_type`` minilm_jax: the default recipe's
factorized model, pre-LN, the conv front end) is imported back into our JAX model
(:func:`~minilm_jax.interop.hf_import.import_minilm`), so its ``modeling_minilm.py`` never runs.
Any other folder whose model needs code from the folder (``auto_map``, or a ``model_type``
transformers does not know) is refused: nothing asks the trust_remote_code question.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from minilm_jax.errors import UserError

# Files a fast tokenizer is read or converted from (tokenizer.json, else a slow tokenizer's vocab)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
TASK_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
              "ForMultipleChoice", "ForCausalLM")


def read_config(path: str | Path) -> dict[str, Any] | None:
    """A folder's ``config.json`` when it is a ``transformers`` model config (a JSON object with
    ``model_type`` or ``architectures``), else None."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        flat = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(flat, dict) and ("model_type" in flat or "architectures" in flat):
        return flat
    return None


@dataclasses.dataclass(frozen=True)
class HuggingFaceFolder:
    """A Hugging Face folder that passed :func:`inspect_folder`."""

    path: Path
    config: dict[str, Any]
    ours: bool  # exported by minilm-jax (its config.json keeps our model config)
    remote: bool  # our remote-code layout: scored through our JAX model, never its PyTorch code


def _ours(config: dict[str, Any]) -> bool:
    from minilm_jax.interop.hf_roberta import METADATA_KEY

    meta = config.get(METADATA_KEY)
    return isinstance(meta, dict) and isinstance(meta.get("model_config"), dict)


def _custom_code_problem(path: Path, config: dict[str, Any]) -> str | None:
    """Why transformers could load this folder's masked LM only by running code from the folder
    (None: its own classes serve)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = str(config.get("model_type", ""))
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return None
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    code = auto_map.get("AutoModelForMaskedLM") or auto_map.get("AutoConfig")
    if code:
        return (f"{path}: its model needs custom code from the folder ({code}, named in "
                "config.json's auto_map), which zero-shot scoring does not run; only "
                "transformers' own masked LMs and minilm-jax exports are scored")
    return (f"{path}: transformers {transformers.__version__} has no masked LM for model_type "
            f"{model_type or '(none)'!r}")


def _check_tokenizer_files(path: Path, ours: bool) -> None:
    present = [name for name in TOKENIZER_FILES if (path / name).is_file()]
    if ours and "tokenizer.json" not in present:
        raise UserError(f"{path}: tokenizer.json is missing (an export writes it next to the "
                        "weights: export the run again, with its tokenizer)")
    if not present:
        raise UserError(f"{path}: no tokenizer files: tokenizer.json is missing (nor is there a "
                        f"slow tokenizer's {', '.join(TOKENIZER_FILES[1:])})")


def inspect_folder(path: str | Path) -> HuggingFaceFolder:
    """Check a Hugging Face folder can be scored without running code from it: a masked LM (not a
    classifier export), transformers' own classes or our remote-code export, its weights present
    and whole, tokenizer files present."""
    from minilm_jax.interop.hf_files import hf_weight_files
    from minilm_jax.interop.hf_minilm import REMOTE_MODEL_TYPE

    path = Path(path)
    config = read_config(path)
    if config is None:
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json with a "
                        "model_type)")
    names = [str(a) for a in config.get("architectures") or []]
    if names and all(any(a.endswith(head) for head in TASK_HEADS) for a in names):
        hint = " (export the pre-training run, not a fine-tuned one)" if _ours(config) else ""
        raise UserError(f"{path} holds a {names[0]}, not a masked LM: zero-shot scoring needs a "
                        f"masked LM{hint}")
    ours = _ours(config)
    remote = ours and config.get("model_type") == REMOTE_MODEL_TYPE
    if not remote:
        problem = _custom_code_problem(path, config)
        if problem:
            raise UserError(problem)
    hf_weight_files(path, torch_formats=not remote)
    _check_tokenizer_files(path, ours)
    return HuggingFaceFolder(path, config, ours, remote)
