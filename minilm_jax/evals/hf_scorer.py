"""Minimal-pair scoring of a Hugging Face masked LM (a local folder ``transformers`` loads: an
exported run, a hub model downloaded beforehand), so our numbers compare with published ones.

The model runs in PyTorch through ``AutoModelForMaskedLM``; its tokenizer is the folder's own
``AutoTokenizer`` (a fast one: word boundaries are its ``word_ids``). The scoring rules, batching
and statistics are the ones our checkpoints use (:mod:`minilm_jax.evals.scoring`). Code from the
folder never runs (``trust_remote_code=False`` throughout, so transformers never asks either): our
own remote-code export is scored through our JAX model, another folder needing custom code is
refused in one line (:mod:`minilm_jax.evals.hf_folders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.tokenizer import Tokenizer

from .hf_folders import TOKENIZER_FILES, HuggingFaceFolder, inspect_folder, read_config
from .scoring import ScoringModel, mlm_target_logprobs

LOGITS_BUDGET = 1 << 28  # bytes of float32 logits per forward pass (rows are chunked to fit)


def is_hugging_face_dir(path: str | Path) -> bool:
    """A folder whose ``config.json`` is a ``transformers`` model config."""
    return read_config(path) is not None


def _transformers(torch_too: bool = True):
    """``(torch, transformers)``, or without ``torch_too`` ``transformers`` alone (a tokenizer)."""
    try:
        import transformers
        torch = None
        if torch_too:
            import torch
    except ImportError:
        raise UserError("scoring a Hugging Face model needs torch and transformers: pip install "
                        "'minilm-jax[transformers]'") from None
    return (torch, transformers) if torch_too else transformers


def first_line(err: BaseException) -> str:
    """The first non-blank line of an error's message (its type's name when it has none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class HuggingFaceTokenizer(Tokenizer):
    """A fast ``AutoTokenizer`` behind our tokenizer interface (what scoring uses of it)."""

    kind = "huggingface"

    def __init__(self, path: str | Path, ours: bool = False) -> None:
        transformers = _transformers(torch_too=False)
        self.path = str(path)
        self.sha256 = ""
        try:
            if ours:  # our export's tokenizer.json: no model config read, no custom code at all
                self._tok = transformers.PreTrainedTokenizerFast.from_pretrained(self.path)
            else:  # never asks (nor runs) a tokenizer's custom code: refused in one line
                self._tok = transformers.AutoTokenizer.from_pretrained(self.path,
                                                                       trust_remote_code=False)
        except Exception as err:  # noqa: BLE001 - tokenizers and transformers raise many types
            files = [n for n in TOKENIZER_FILES if (Path(path) / n).is_file()]
            raise UserError(f"{Path(path) / files[0] if files else path}: its tokenizer does not "
                            f"load ({first_line(err)})") from None
        if not self._tok.is_fast:
            raise UserError(f"{path}: its tokenizer has no fast (Rust) version, whose word ids "
                            "give word boundaries")
        t = self._tok
        found = {"bos": t.cls_token_id if t.cls_token_id is not None else t.bos_token_id,
                 "eos": t.sep_token_id if t.sep_token_id is not None else t.eos_token_id,
                 "pad": t.pad_token_id, "unk": t.unk_token_id, "mask": t.mask_token_id}
        missing = [role for role, idx in found.items() if idx is None]
        if missing:
            raise UserError(f"{path}: its tokenizer lacks special tokens: {', '.join(missing)}")
        self.bos_id, self.eos_id, self.pad_id = found["bos"], found["eos"], found["pad"]
        self.unk_id, self.mask_id = found["unk"], found["mask"]
        self.vocab_size = len(t)

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def encode_words(self, text: str) -> tuple[list[int], list[bool]]:
        encoding = self._tok(text, add_special_tokens=False)
        words = encoding.word_ids()
        starts = [i == 0 or w is None or w != words[i - 1] for i, w in enumerate(words)]
        return list(encoding["input_ids"]), starts

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def pieces(self, text: str) -> list[str]:
        return self._tok.tokenize(text)

    def id_to_token(self, token_id: int) -> str:
        return self._tok.convert_ids_to_tokens(int(token_id))


def hugging_face_model(path: str | Path, random_seed: int | None = None) -> ScoringModel:
    """The masked LM in ``path``, or with ``random_seed`` its architecture freshly initialised
    (the random-init twin). The folder is checked first (:func:`~.hf_folders.inspect_folder`);
    our remote-code export is scored through our JAX model
    (:func:`~.scoring_models.exported_minilm_model`), anything else through transformers' own
    classes, never code from the folder."""
    folder = inspect_folder(path)
    if folder.remote:
        return exported_minilm_model(folder, random_seed)
    torch, transformers = _transformers()
    tokenizer = HuggingFaceTokenizer(path)
    # its load report and progress bar: our one line says what matters
    verbosity, bars = (transformers.logging.get_verbosity(),
                       transformers.utils.logging.is_progress_bar_enabled())
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        if random_seed is None:
            model, loading = transformers.AutoModelForMaskedLM.from_pretrained(
                str(path), trust_remote_code=False, output_loading_info=True)
            refuse_partial_load(path, loading)
        else:
            torch.manual_seed(int(random_seed))
            config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=False)
            model = transformers.AutoModelForMaskedLM.from_config(config, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: transformers {transformers.__version__} cannot load its masked "
                        f"LM ({first_line(err)})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device=device, dtype=torch.float32).eval()
    vocab = int(model.get_output_embeddings().weight.shape[0])

    def fn(tokens: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        rows = max(1, LOGITS_BUDGET // (4 * vocab * tokens.shape[1]))
        out = []
        with torch.no_grad():
            def chunk(array: np.ndarray, start: int):
                return torch.from_numpy(np.asarray(array[start:start + rows], np.int64)).to(device)

            for start in range(0, tokens.shape[0], rows):
                ids = chunk(tokens, start)
                logits = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_id).long()).logits
                pos, tgt = chunk(positions, start), chunk(targets, start)
                index = pos[..., None].expand(-1, -1, logits.shape[-1])
                picked = torch.gather(logits.float(), 1, index)
                logp = torch.log_softmax(picked, dim=-1)
                out.append(torch.gather(logp, 2, tgt[..., None])[..., 0].cpu().numpy())
        return np.concatenate(out)

    info = folder_info(folder, folder.config.get("model_type", "hugging_face"), random_seed)
    positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= tokenizer.pad_id + 1  # RoBERTa's positions start after the padding index
    return ScoringModel(tokenizer, fn, info, max_len=longest_input(tokenizer, positions))


def refuse_partial_load(path: str | Path, loading: dict[str, Any]) -> None:
    """Refuse a folder whose weights do not fit its config: transformers would initialise the
    missing (or re-shape the mismatched) tensors at random and score a partly random model."""
    missing = list(loading.get("missing_keys") or [])
    mismatched = [str(m[0]) if isinstance(m, (tuple, list)) else str(m)
                  for m in loading.get("mismatched_keys") or []]
    if missing or mismatched:
        names = missing + mismatched
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise UserError(f"{path}: its weights do not fit its config.json ({len(missing)} tensor(s) "
                        f"missing, {len(mismatched)} of another shape: {shown}); transformers "
                        "would initialise them at random: refusing to score a partly random model")


def folder_info(folder: HuggingFaceFolder, point: str, random_seed: int | None) -> dict[str, Any]:
    """What a folder's model is (``ScoringModel.info``): its step and validation perplexity from
    an export's provenance."""
    from minilm_jax.interop.hf_roberta import METADATA_KEY

    provenance = (folder.config.get(METADATA_KEY) or {}).get("provenance") or {}
    pretrained = random_seed is None
    return {"workdir": str(folder.path), "point": point,
            "step": int(provenance.get("step", 0)) if pretrained else 0,
            "init": "pretrained" if pretrained else "random",
            "validation_perplexity": provenance.get("validation_perplexity") if pretrained
            else None}


def longest_input(tokenizer: HuggingFaceTokenizer, positions: int) -> int | None:
    """The longest input (specials included) both the tokenizer and ``positions`` take."""
    limit = int(getattr(tokenizer._tok, "model_max_length", 0) or 0)
    if positions <= 0:
        return None
    return min(v for v in (limit, positions) if 0 < v < 1_000_000)


def exported_minilm_model(folder: HuggingFaceFolder, random_seed: int | None = None
                          ) -> ScoringModel:
    """One of our remote-code exports (``model_type`` minilm_jax, e.g. the default recipe's
    factorized model) read back into our ``MaskedLM`` with numpy and safetensors
    (:func:`~minilm_jax.interop.hf_import.import_minilm`: its PyTorch code never runs), with the
    export's own ``tokenizer.json``; with ``random_seed`` its architecture freshly initialised, as
    a checkpoint's twin is."""
    import jax
    from flax import nnx

    from minilm_jax.interop.hf_import import import_minilm, minilm_export_config
    from minilm_jax.model.models import MaskedLM

    cfg = minilm_export_config(folder.config, folder.path / "config.json")
    tokenizer = HuggingFaceTokenizer(folder.path, ours=True)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(f"{folder.path}: its tokenizer has {tokenizer.vocab_size} tokens, more "
                        f"than the model's vocabulary ({cfg.vocab_size} rows)")
    if random_seed is None:
        model = import_minilm(folder.path)
    else:
        model = MaskedLM(cfg, rngs=nnx.Rngs(params=int(random_seed)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.device_put((params, rest))
    info = folder_info(folder, cfg.point, random_seed)
    return ScoringModel(tokenizer, mlm_target_logprobs(graphdef, params, rest), info,
                        (graphdef, params, rest), None, longest_input(tokenizer, cfg.max_len))
