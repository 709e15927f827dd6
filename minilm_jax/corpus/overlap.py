"""Token overlap between a pre-training shard set and a task's tokenized text (study B).

Special tokens are excluded on both sides. Two shares are reported:

* ``type_share``: share of the task's distinct token types that occur in the pre-training shards;
* ``occurrence_share``: share of the task's token occurrences whose type occurs in the pre-training shards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.shards_build import check_shards_tokenizer
from minilm_jax.corpus.sources import SourceSpec, check_unique_names, iter_documents
from minilm_jax.data.shards import open_split
from minilm_jax.tokenizer import load_tokenizer

_ROWS = 1 << 14


def shard_token_presence(shard_dir: str | os.PathLike, splits: Sequence[str], vocab_size: int) -> np.ndarray:
    """Boolean ``[vocab_size]``: which token ids occur in the given splits (read in blocks)."""
    present = np.zeros(vocab_size, dtype=bool)
    for split in splits:
        tokens = open_split(shard_dir, split).tokens
        for start in range(0, tokens.shape[0], _ROWS):
            block = np.asarray(tokens[start:start + _ROWS]).ravel()
            if block.size and (block.min() < 0 or block.max() >= vocab_size):
                raise CorpusError(f"{shard_dir}/{split}: token ids outside the tokenizer's vocabulary")
            present[np.unique(block)] = True
    return present


def token_overlap(present: np.ndarray, task_ids: Iterable[Sequence[int]], special_ids: Iterable[int]) -> dict[str, Any]:
    """Type- and occurrence-level share of task tokens whose type occurs in the pre-training data."""
    size = present.shape[0]
    counts = np.zeros(size, dtype=np.int64)
    pending: list[int] = []
    for ids in task_ids:
        pending.extend(int(i) for i in ids)
        if len(pending) >= 1 << 20:
            counts += np.bincount(np.asarray(pending, dtype=np.int64), minlength=size)[:size]
            pending = []
    if pending:
        counts += np.bincount(np.asarray(pending, dtype=np.int64), minlength=size)[:size]
    counts[list(special_ids)] = 0
    task_types = counts > 0
    shared_types = task_types & present
    n_tokens = int(counts.sum())
    n_shared = int(counts[present].sum())
    return {"task_types": int(task_types.sum()), "shared_types": int(shared_types.sum()),
            "task_tokens": n_tokens, "shared_tokens": n_shared,
            "type_share": float(shared_types.sum() / task_types.sum()) if task_types.any() else float("nan"),
            "occurrence_share": n_shared / n_tokens if n_tokens else float("nan")}


def run_overlap(shard_dir: str | os.PathLike, tokenizer_path: str, tasks: list[SourceSpec], *,
                splits: Sequence[str] = ("train",)) -> dict[str, Any]:
    """Overlap of each task source (and of all together) with the shards; the tokenizer must match them."""
    check_unique_names(tasks)
    tok = load_tokenizer(tokenizer_path)
    check_shards_tokenizer(shard_dir, tok)
    present = shard_token_presence(shard_dir, splits, tok.vocab_size)
    present[list(tok.special_ids)] = False
    result: dict[str, Any] = {"shards": str(shard_dir), "splits": list(splits),
                              "pretrain_types": int(present.sum()), "tasks": {}}
    all_ids: list[list[int]] = []
    for spec in tasks:
        texts = list(iter_documents(spec))
        if not texts:
            raise CorpusError(f"task source {spec} has no texts")
        ids = tok.encode_batch(texts)
        all_ids.extend(ids)
        result["tasks"][spec.name] = {"texts": len(texts), **token_overlap(present, ids, tok.special_ids)}
    if len(tasks) > 1:
        result["all"] = token_overlap(present, all_ids, tok.special_ids)
    return result


def format_overlap(result: dict[str, Any]) -> str:
    """Plain-text table of :func:`run_overlap`'s result."""
    lines = [f"pre-training shards: {result['shards']} ({', '.join(result['splits'])}), "
             f"{result['pretrain_types']} token types (specials excluded)",
             f"{'task':<30} {'texts':>8} {'types':>8} {'type share':>11} {'tokens':>10} {'occurrence share':>17}"]
    rows = list(result["tasks"].items()) + ([("ALL", result["all"])] if "all" in result else [])
    for name, r in rows:
        lines.append(f"{name:<30} {r.get('texts', ''):>8} {r['task_types']:>8} {r['type_share']:>11.4f} "
                     f"{r['task_tokens']:>10} {r['occurrence_share']:>17.4f}")
    return "\n".join(lines)
