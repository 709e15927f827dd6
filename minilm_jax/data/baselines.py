"""Count-based reference perplexities of a shard set: what an MLM's perplexity must beat to mean anything.

- ``unigram``: each maskable token predicted by its training-split frequency (add-one smoothed over the
  tokenizer's vocabulary). An MLM that has learned nothing but token frequencies sits here (the
  "unigram plateau").
- ``bigram``: interpolated left-context bigram, ``p(w | v) = lam * c(v, w) / c(v) + (1 - lam) * p_uni(w)``,
  counts from the training split, ``lam`` chosen on the validation split from a fixed grid (never on
  test). A masked LM sees both neighbours of most masked positions, so it should beat this too.

Maskable tokens are those the pre-training engine may select: real tokens (segment != 0 where the shard
set has segments, else != pad) whose id is not in ``never_mask_ids`` (``<s>``, ``<pad>``, ``</s>``,
``<unk>`` by default, as in ``mlm.never_mask_ids``). Perplexity = exp(mean cross-entropy in nats) over
those tokens, the definition the engine's validation perplexity uses. The never-masked ids are the
shards' own: their tokenizer's ``<s>``/``[CLS]``, ``<pad>``/``[PAD]``, ``</s>``/``[SEP]`` and
``<unk>``/``[UNK]`` as the manifest records them (0-3 for the project's tokenizers; 101, 0, 102,
100 for a BERT ``vocab.txt``), (0, 1, 2, 3) for shards that record none.

Results are cached as ``baselines.json`` next to the manifest (keyed by the splits' sha256).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .shards import (ShardError, open_split, read_manifest, recorded_special_ids,
                     split_fingerprints)
from minilm_jax.storage import atomic_write_json

CACHE = "baselines.json"
NEVER_MASK_IDS = (0, 1, 2, 3)  # shards that record no special ids
NEVER_MASKED_ROLES = ("bos", "pad", "eos", "unk")
LAMBDAS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
_CHUNK_ROWS = 8192


def _split_pairs(shard_dir: Path, split: str, pad_id: int, never: tuple[int, ...]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maskable tokens, their left neighbours or -1, mask of pairs with a real left neighbour)."""
    data = open_split(shard_dir, split)
    tokens_all, prev_all = [], []
    for start in range(0, data.tokens.shape[0], _CHUNK_ROWS):
        tokens = np.asarray(data.tokens[start:start + _CHUNK_ROWS], dtype=np.int64)
        if data.segments is not None:
            segments = np.asarray(data.segments[start:start + _CHUNK_ROWS])
            real = segments != 0
            same_doc = np.zeros_like(real)
            same_doc[:, 1:] = (segments[:, 1:] == segments[:, :-1]) & real[:, :-1]
        else:
            real = tokens != pad_id
            same_doc = np.zeros_like(real)
            same_doc[:, 1:] = real[:, :-1]
        maskable = real & ~np.isin(tokens, never)
        prev = np.full_like(tokens, -1)
        prev[:, 1:] = np.where(same_doc[:, 1:], tokens[:, :-1], -1)
        tokens_all.append(tokens[maskable])
        prev_all.append(prev[maskable])
    tokens = np.concatenate(tokens_all) if tokens_all else np.zeros(0, np.int64)
    prev = np.concatenate(prev_all) if prev_all else np.zeros(0, np.int64)
    return tokens, prev, prev >= 0


class _Counts:
    """Training-split unigram and bigram counts."""

    def __init__(self, tokens: np.ndarray, prev: np.ndarray, has_prev: np.ndarray, vocab: int):
        self.vocab = vocab
        self.unigram = np.bincount(tokens, minlength=vocab).astype(np.float64)
        self.p_uni = (self.unigram + 1.0) / (self.unigram.sum() + vocab)
        keys = prev[has_prev] * vocab + tokens[has_prev]
        self.pair_keys, self.pair_counts = np.unique(keys, return_counts=True)
        self.context = np.bincount(prev[has_prev], minlength=vocab).astype(np.float64)

    def unigram_nll(self, tokens: np.ndarray) -> np.ndarray:
        return -np.log(self.p_uni[tokens])

    def bigram_probs(self, tokens: np.ndarray, prev: np.ndarray, has_prev: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(ML bigram probability, or 0 where unseen / no context; unigram probability)."""
        keys = np.where(has_prev, prev * self.vocab + tokens, -1)
        where = np.searchsorted(self.pair_keys, keys)
        where = np.minimum(where, max(len(self.pair_keys) - 1, 0))
        found = has_prev & (len(self.pair_keys) > 0)
        if len(self.pair_keys):
            found &= self.pair_keys[where] == keys
        pair = np.where(found, self.pair_counts[where] if len(self.pair_keys) else 0, 0.0)
        ctx = np.where(has_prev, self.context[np.maximum(prev, 0)], 0.0)
        ml = np.divide(pair, ctx, out=np.zeros_like(pair, dtype=np.float64), where=ctx > 0)
        return ml, self.p_uni[tokens]


def _bigram_nll(ml: np.ndarray, uni: np.ndarray, has_context: np.ndarray, lam: float) -> np.ndarray:
    lam_v = np.where(has_context, lam, 0.0)
    return -np.log(lam_v * ml + (1.0 - lam_v) * uni)


def shard_never_mask_ids(manifest: dict[str, Any]) -> tuple[int, ...]:
    """The ids a shard set's tokens are never predicted at: its tokenizer's ``<s>``, ``<pad>``,
    ``</s>`` and ``<unk>`` as recorded, else :data:`NEVER_MASK_IDS`."""
    recorded = recorded_special_ids(manifest)
    if not all(role in recorded for role in NEVER_MASKED_ROLES):
        return NEVER_MASK_IDS
    return tuple(sorted({recorded[role] for role in NEVER_MASKED_ROLES}))


def compute_baselines(shard_dir: str | Path, never_mask_ids: tuple[int, ...] | None = None
                      ) -> dict[str, Any]:
    """Unigram and bigram cross-entropy / perplexity on every evaluation split of ``shard_dir``
    (tokens at ``never_mask_ids`` left out: the shards' own special ids when not given)."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if never_mask_ids is None:
        never_mask_ids = shard_never_mask_ids(manifest)
    if "train" not in manifest["splits"]:
        raise ShardError(f"{shard_dir}: no train split to count from")
    vocab = int(manifest["tokenizer"]["vocab_size"])
    pad_id = int(manifest["pad_id"])
    counts = _Counts(*_split_pairs(shard_dir, "train", pad_id, never_mask_ids), vocab)
    splits: dict[str, Any] = {}
    probs = {}
    for split in manifest["splits"]:
        if split == "train":
            continue
        tokens, prev, has_prev = _split_pairs(shard_dir, split, pad_id, never_mask_ids)
        if tokens.size == 0:
            continue
        ml, uni = counts.bigram_probs(tokens, prev, has_prev)
        has_context = has_prev & (counts.context[np.maximum(prev, 0)] > 0)
        probs[split] = (ml, uni, has_context)
        splits[split] = {"tokens": int(tokens.size),
                         "unigram": float(counts.unigram_nll(tokens).mean())}
    tune = "validation" if "validation" in probs else next(iter(probs), None)
    lam = 0.0
    if tune is not None:
        lam = min(LAMBDAS, key=lambda v: float(_bigram_nll(*probs[tune], v).mean()))
    for split, (ml, uni, has_context) in probs.items():
        splits[split]["bigram"] = float(_bigram_nll(ml, uni, has_context, lam).mean())
    return {"version": 1, "never_mask_ids": list(never_mask_ids), "bigram_lambda": lam,
            "lambda_chosen_on": tune, "train_tokens": int(counts.unigram.sum()),
            "splits_sha256": split_fingerprints(manifest),
            "splits": splits}


def load_baselines(shard_dir: str | Path) -> dict[str, Any]:
    """``compute_baselines`` through the ``baselines.json`` cache (recomputed when shards change;
    a read-only shard folder is computed every time)."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    want = split_fingerprints(manifest)
    cache = shard_dir / CACHE
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if (cached.get("splits_sha256") == want and cached.get("version") == 1
                    and cached.get("never_mask_ids") == list(shard_never_mask_ids(manifest))):
                return cached
        except (OSError, json.JSONDecodeError):
            pass
    result = compute_baselines(shard_dir)
    try:
        atomic_write_json(cache, result)
    except OSError:
        pass
    return result


def write_baselines(shard_dir: str | Path) -> None:
    """Compute and cache the baselines of a shard set just built (every command that builds one
    calls this, so a shard set always carries its ``baselines.json``); nothing without a train
    split or an evaluation split."""
    splits = read_manifest(shard_dir)["splits"]
    if "train" in splits and len(splits) > 1:
        load_baselines(shard_dir)


def shard_baselines(shard_dir: str | Path) -> list[dict[str, Any]]:
    """Result rows ``{"kind": "baseline", "name", "split", "loss", "perplexity", "shards"}``."""
    result = load_baselines(shard_dir)
    rows = []
    for split, values in sorted(result["splits"].items()):
        for name in ("unigram", "bigram"):
            if name in values:
                rows.append({"kind": "baseline", "name": name, "split": split,
                             "loss": values[name], "perplexity": math.exp(values[name]),
                             "shards": str(shard_dir)})
    return rows
