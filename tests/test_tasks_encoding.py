"""Encoding of examples into fixed-length arrays, with a tiny fake tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from minilm_jax.tasks import encode_examples, unk_rate
from minilm_jax.tasks.base import Example
from minilm_jax.tasks.encoding import build_inputs, truncate_pair


class FakeTokenizer:
    """Whitespace tokenizer over a fixed word list; ids from 10 upward; unknown -> unk_id."""

    def __init__(self, kind: str, words: str = "a b c d e f g h the cat sat"):
        self.kind = kind
        self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id = 1, 0, 2, 3, 4
        self.word_ids = {w: 10 + i for i, w in enumerate(words.split())}
        self.vocab_size = 10 + len(self.word_ids)

    def encode(self, text: str) -> list[int]:
        return [self.word_ids.get(w, self.unk_id) for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


A, B, C, D, E, F = 10, 11, 12, 13, 14, 15


def test_roberta_layout_single_and_pair():
    tok = FakeTokenizer("sentencepiece")
    out = encode_examples([Example("a b", None, 1, "u0"), Example("a b c", "d e", 0, "u1")],
                          tok, max_len=10)
    assert out["tokens"].dtype == np.int32 and out["tokens"].shape == (2, 10)
    assert out["tokens"][0].tolist() == [0, A, B, 2, 1, 1, 1, 1, 1, 1]
    assert out["tokens"][1].tolist() == [0, A, B, C, 2, 2, D, E, 2, 1]
    assert out["token_types"].tolist() == [[0] * 10, [0] * 10]
    assert out["segments"].tolist() == [[1] * 4 + [0] * 6, [1] * 9 + [0]]
    assert out["labels"].tolist() == [1, 0] and out["labels"].dtype == np.int32


def test_bert_layout_pair_types():
    tok = FakeTokenizer("wordpiece")
    out = encode_examples([Example("a b", "c", 1, "u")], tok, max_len=8)
    assert out["tokens"][0].tolist() == [0, A, B, 2, C, 2, 1, 1]
    assert out["token_types"][0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert out["segments"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]


def test_truncation_longest_first():
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
    assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])  # ties: B first
    tok = FakeTokenizer("sentencepiece")
    toks, types = build_inputs(tok, list(range(100, 200)), [7, 8], max_len=12)
    assert toks == [0, *range(100, 106), 2, 2, 7, 8, 2] and len(types) == 12
    single = encode_examples([Example(" ".join(["a"] * 300), None, 0, "u")], tok, max_len=128)
    assert single["segments"].sum() == 128
    assert single["tokens"][0, 0] == 0 and single["tokens"][0, -1] == 2
    with pytest.raises(ValueError, match="no room"):
        build_inputs(tok, [1], [2], max_len=5)


def test_regression_and_unlabelled_labels():
    tok = FakeTokenizer("wordpiece")
    reg = encode_examples([Example("a", "b", 3.5, "u"), Example("a", "b", None, "v")], tok, 8)
    assert reg["labels"].dtype == np.float32
    assert reg["labels"][0] == 3.5 and np.isnan(reg["labels"][1])
    cls = encode_examples([Example("a", None, None, "u")], tok, 8, regression=False)
    assert cls["labels"].tolist() == [-1]


def test_unknown_kind_and_unk_rate():
    with pytest.raises(ValueError, match="kind"):
        encode_examples([Example("a", None, 0, "u")], FakeTokenizer("char"), 8)
    tok = FakeTokenizer("wordpiece")
    assert unk_rate(tok, ["a b zz", "yy"]) == pytest.approx(2 / 4)
    assert unk_rate(tok, [Example("a zz", "b c", 0, "u")]) == pytest.approx(1 / 4)
    assert unk_rate(tok, []) == 0.0
