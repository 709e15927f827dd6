"""Turn examples into fixed-length int32 arrays for a classifier.

Layouts by ``tokenizer.kind`` (``bos_id``/``eos_id`` play ``[CLS]``/``[SEP]`` for WordPiece):

* ``"sentencepiece"`` (RoBERTa): ``<s> A </s>`` or ``<s> A </s></s> B </s>``; token types all 0.
* ``"wordpiece"`` (BERT): ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``; token types 0
  up to and including the first ``[SEP]``, 1 after.

Sequences longer than ``max_len`` are truncated before adding specials: single
texts from the end, pairs longest-first (one token at a time from the longer
text, from ``B`` on ties, as BERT's ``_truncate_seq_pair``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from .base import Example

_LAYOUTS = {"sentencepiece": "roberta", "wordpiece": "bert"}


class Tokenizer(Protocol):
    """The tokenizer interface this module needs (see ``minilm_jax.tokenizer``)."""

    kind: str
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int
    mask_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


def _layout(tokenizer: Tokenizer) -> str:
    try:
        return _LAYOUTS[tokenizer.kind]
    except KeyError:
        raise ValueError(f"unknown tokenizer kind {tokenizer.kind!r}; "
                         f"expected one of {sorted(_LAYOUTS)}") from None


def num_special_tokens(tokenizer: Tokenizer, pair: bool) -> int:
    """How many special tokens the layout adds (2 single; 4 RoBERTa pair; 3 BERT pair)."""
    if not pair:
        return 2
    return 4 if _layout(tokenizer) == "roberta" else 3


def truncate_pair(ids_a: list[int], ids_b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Longest-first truncation of a pair to ``len(a) + len(b) <= budget``."""
    a, b = list(ids_a), list(ids_b)
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def build_inputs(tokenizer: Tokenizer, ids_a: Sequence[int], ids_b: Sequence[int] | None,
                 max_len: int) -> tuple[list[int], list[int]]:
    """Truncate and add special tokens; returns ``(token ids, token types)``, unpadded."""
    pair = ids_b is not None
    layout = _layout(tokenizer)
    budget = max_len - num_special_tokens(tokenizer, pair)
    if budget < (2 if pair else 1):
        raise ValueError(f"max_len={max_len} leaves no room for text after special tokens")
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    if not pair:
        a = list(ids_a)[:budget]
        return [bos, *a, eos], [0] * (len(a) + 2)
    a, b = truncate_pair(list(ids_a), list(ids_b), budget)
    if layout == "roberta":
        tokens = [bos, *a, eos, eos, *b, eos]
        return tokens, [0] * len(tokens)
    return [bos, *a, eos, *b, eos], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def encode_examples(examples: Sequence[Example], tokenizer: Tokenizer, max_len: int = 128,
                    regression: bool | None = None) -> dict[str, np.ndarray]:
    """Encode examples into ``tokens``, ``token_types``, ``segments`` ``[N, max_len]`` and ``labels [N]``.

    ``segments`` is 1 at real tokens (specials included) and 0 at padding. Labels
    are int32 (unlabelled -> -1), or float32 when ``regression`` (unlabelled ->
    NaN); ``regression=None`` infers it from the label types.
    """
    n = len(examples)
    _layout(tokenizer)
    if regression is None:
        regression = any(isinstance(ex.label, float) for ex in examples)
    ids_a = tokenizer.encode_batch([ex.text_a for ex in examples])
    pair_rows = [i for i, ex in enumerate(examples) if ex.text_b is not None]
    ids_b_list = tokenizer.encode_batch([examples[i].text_b for i in pair_rows]) if pair_rows else []
    ids_b: list[list[int] | None] = [None] * n
    for i, ids in zip(pair_rows, ids_b_list):
        ids_b[i] = ids
    tokens = np.full((n, max_len), tokenizer.pad_id, dtype=np.int32)
    token_types = np.zeros((n, max_len), dtype=np.int32)
    segments = np.zeros((n, max_len), dtype=np.int32)
    for i in range(n):
        toks, types = build_inputs(tokenizer, ids_a[i], ids_b[i], max_len)
        tokens[i, :len(toks)] = toks
        token_types[i, :len(types)] = types
        segments[i, :len(toks)] = 1
    if regression:
        labels = np.array([math.nan if ex.label is None else float(ex.label) for ex in examples],
                          dtype=np.float32)
    else:
        labels = np.array([-1 if ex.label is None else int(ex.label) for ex in examples],
                          dtype=np.int32)
    return {"tokens": tokens, "token_types": token_types, "segments": segments,
            "labels": labels.reshape(n)}


def _texts(items: Iterable[str | Example]) -> list[str]:
    texts: list[str] = []
    for item in items:
        if isinstance(item, Example):
            texts.append(item.text_a)
            if item.text_b is not None:
                texts.append(item.text_b)
        else:
            texts.append(item)
    return texts


def unk_rate(tokenizer: Tokenizer, items: Iterable[str | Example]) -> float:
    """Share of tokens (specials excluded) that are ``unk_id``, over texts or examples' texts."""
    ids = tokenizer.encode_batch(_texts(items))
    total = sum(len(x) for x in ids)
    unk = sum(sum(1 for t in x if t == tokenizer.unk_id) for x in ids)
    return unk / total if total else 0.0
