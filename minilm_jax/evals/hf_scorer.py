"""Minimal-pair scoring of a Hugging Face masked LM (a local folder ``transformers`` loads: an
exported run, a hub model downloaded beforehand), so our numbers compare with published ones.

The model runs in PyTorch through ``AutoModelForMaskedLM``; its tokenizer is the folder's own
``AutoTokenizer`` (a fast one: word boundaries are its ``word_ids``). The scoring rules, batching
and statistics are the ones our checkpoints use (:mod:`minilm_jax.evals.scoring`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.tokenizer import Tokenizer

from .scoring import ScoringModel

LOGITS_BUDGET = 1 << 28  # bytes of float32 logits per forward pass (rows are chunked to fit)


def is_hugging_face_dir(path: str | Path) -> bool:
    """A folder whose ``config.json`` is a ``transformers`` model config."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        flat = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(flat, dict) and ("model_type" in flat or "architectures" in flat)


def _transformers():
    try:
        import torch
        import transformers
    except ImportError:
        raise UserError("scoring a Hugging Face model needs torch and transformers: pip install "
                        "'minilm-jax[transformers]'") from None
    return torch, transformers


class HuggingFaceTokenizer(Tokenizer):
    """A fast ``AutoTokenizer`` behind our tokenizer interface (what scoring uses of it)."""

    kind = "huggingface"

    def __init__(self, path: str | Path) -> None:
        _, transformers = _transformers()
        self.path = str(path)
        self.sha256 = ""
        self._tok = transformers.AutoTokenizer.from_pretrained(self.path)
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
    (the random-init twin)."""
    torch, transformers = _transformers()
    if not is_hugging_face_dir(path):
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json with a "
                        "model_type)")
    tokenizer = HuggingFaceTokenizer(path)
    if random_seed is None:
        model = transformers.AutoModelForMaskedLM.from_pretrained(str(path))
    else:
        torch.manual_seed(int(random_seed))
        config = transformers.AutoConfig.from_pretrained(str(path))
        model = transformers.AutoModelForMaskedLM.from_config(config)
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

    from minilm_jax.interop.hf_roberta import METADATA_KEY

    flat = json.loads((Path(path) / "config.json").read_text())
    provenance = (flat.get(METADATA_KEY) or {}).get("provenance") or {}
    info = {"workdir": str(path), "point": flat.get("model_type", "hugging_face"),
            "step": 0 if random_seed is not None else int(provenance.get("step", 0)),
            "init": "random" if random_seed is not None else "pretrained",
            "validation_perplexity": None if random_seed is not None
            else provenance.get("validation_perplexity")}
    limit = int(getattr(tokenizer._tok, "model_max_length", 0) or 0)
    positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= tokenizer.pad_id + 1  # RoBERTa's positions start after the padding index
    max_len = min(v for v in (limit, positions) if 0 < v < 1_000_000) if positions > 0 else None
    return ScoringModel(tokenizer, fn, info, max_len=max_len)
