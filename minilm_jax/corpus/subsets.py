"""The ``subsets`` stage (study B): the first 128 tokens of each of the first N articles of a shuffled corpus.

The shuffle is a seeded pseudo-random key per article (its position in the source); the articles with
the smallest keys, in key order, are the shuffled corpus's first ones, found in one streaming pass with
memory for ``max(N) + validation`` articles. The first ``validation`` articles of the shuffled order form
a validation split shared by every subset; the subsets take the next N articles, so a smaller subset is
contained in every larger one. Each subset is a shard folder ``n<N>/`` (padded rows: ``[CLS]`` + the
article's first ``seq_len - 2`` tokens + ``[SEP]``). Only the first ``4 x seq_len`` whitespace words of an
article are kept and tokenized (every word gives at least one token, so this always suffices).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from minilm_jax.corpus.control import BottomK, unit_key
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.manifest import atomic_output_dir, check_output_free, write_stage_manifest
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.shards_build import RowBuilder, ShardConfig
from minilm_jax.corpus.sources import SourceSpec, fingerprint, iter_documents
from minilm_jax.data.baselines import write_baselines
from minilm_jax.data.shards import write_shards
from minilm_jax.tokenizer import load_tokenizer

PREFIX_WORDS_PER_TOKEN = 4


def shuffled_head(spec: SourceSpec, count: int, seed: int, prefix_words: int,
                  progress: bool = False) -> tuple[list[str], int]:
    """The first ``count`` articles of the seeded shuffle (each cut to ``prefix_words`` words), and the total."""
    chooser = BottomK(count)
    total = 0
    with progress_bar(progress, iter_documents(spec), desc="subsets", unit="doc") as docs:
        for index, text in enumerate(docs):
            total += 1
            chooser.push(unit_key(seed, "subsets", index, 0), index, 0, " ".join(text.split()[:prefix_words]), 0)
    return [text for _, _, text, _ in chooser.by_key()], total


def run_subsets(source: SourceSpec, tokenizer_path: str, out_dir: str | os.PathLike, *, sizes: list[int],
                valid: int = 0, seed: int = 0, seq_len: int = 128, overwrite: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """Write one shard folder per subset size under ``out_dir``; return the stage summary."""
    if not sizes or min(sizes) < 1:
        raise CorpusError("give one or more positive subset sizes")
    check_output_free(out_dir, overwrite)
    tok = load_tokenizer(tokenizer_path)
    inputs = {"source": fingerprint(source), "tokenizer": {"path": tok.path, "sha256": tok.sha256}}
    need = max(sizes) + valid
    articles, total = shuffled_head(source, need, seed, PREFIX_WORDS_PER_TOKEN * seq_len, progress)
    if total == 0:
        raise CorpusError(f"corpus is empty: no articles in {source}")
    if total < need:
        raise CorpusError(f"corpus too small: {source} has {total} articles, the largest subset "
                          f"({max(sizes)}) plus {valid} validation articles need {need}")
    ids = tok.encode_batch(articles)
    cfg = ShardConfig(seq_len=seq_len, mode="padded", overflow="truncate", valid=0, test=0, seed=seed)

    def rows(chunk: list[list[int]]) -> np.ndarray:
        builder = RowBuilder(cfg, tok.bos_id, tok.eos_id, tok.pad_id)
        for item in chunk:
            builder.add(item)
        tokens, _ = builder.buffer.arrays()
        if tokens.shape[0] != len(chunk):
            raise CorpusError("an article has no tokens; every article must give at least one token")
        return tokens

    valid_rows = rows(ids[:valid]) if valid else None
    summary: dict[str, Any] = {}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for size in sorted(set(sizes)):
            splits = {"train": rows(ids[valid:valid + size])}
            if valid_rows is not None:
                splits["validation"] = valid_rows
            provenance = {"stage": "subsets", "articles": size, "validation_articles": valid, "seed": seed,
                          "inputs": inputs, "shuffled_corpus_articles": total,
                          "special_ids": tok.special_id_map}
            manifest = write_shards(tmp / f"n{size}", splits, pad_id=tok.pad_id, tokenizer=tok.info,
                                    source=provenance)
            write_baselines(tmp / f"n{size}")
            summary[f"n{size}"] = {name: {"num_sequences": e["num_sequences"], "num_tokens": e["num_tokens"]}
                                   for name, e in manifest["splits"].items()}
        write_stage_manifest(tmp, "subsets", inputs=inputs,
                             parameters={"sizes": sorted(set(sizes)), "validation": valid, "seed": seed,
                                         "seq_len": seq_len},
                             counts={"articles_in_corpus": total, "subsets": summary})
    return {"articles_in_corpus": total, "subsets": summary}
