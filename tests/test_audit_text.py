"""Audit of the text area (2026-11-29): minilm_jax/tokenizer.py, minilm_jax/text_norm.py and the MLM
masking in minilm_jax/train/masking.py (selection, 80/10/10 split, never-masked ids, padding,
per-key randomness, caps, packed rows). Mutation audit M: 40 mutants planted, 27 survived the
owning tests (2 of them equivalent); every other survivor fails a test here.

Counts are checked against hand counts (mask_prob 1.0 selects every maskable position exactly)
or against binomial bounds from scipy.stats with fixed seeds that fail only with probability
below 1e-8 per bound.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.corpus.words import check_words
from minilm_jax.model.config import ConfigError
from minilm_jax.tasks.vocab_filter import content_words
from minilm_jax.text_norm import join_contractions
from minilm_jax.tokenizer import (
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    WordPieceTokenizer,
    load_tokenizer,
)
from minilm_jax.train import masking as masking_module
from minilm_jax.train.masking import MaskingConfig, maskable_positions, packed_rows

ALPHA = 1e-9  # two-sided tail of every binomial bound below
SP_TEXTS = [
    "the little dog runs to the park and plays with a red ball",
    "do you want to read a book about a big brown bear",
    "we are going to the store to buy some apples and bananas",
] * 50
BERT_HEAD = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def write_vocab(path: Path, extra: Sequence[str]) -> Path:
    """A bert-base-uncased-like vocab.txt: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*BERT_HEAD, *extra]) + "\n", encoding="utf-8")
    return path


_MASK_JIT = jax.jit(masking_module.mask_tokens, static_argnums=3)
_PACK_JIT = jax.jit(masking_module.pack_predictions, static_argnums=1)


def mask_tokens(key: jax.Array, tokens: jax.Array, segments: jax.Array,
                cfg: MaskingConfig) -> masking_module.MaskedBatch:
    """``masking.mask_tokens`` compiled once per shape and config (as inside the train step)."""
    return _MASK_JIT(key, tokens, segments, cfg)


def pack_predictions(mb: masking_module.MaskedBatch,
                     cfg: MaskingConfig) -> masking_module.PackedPredictions:
    return _PACK_JIT(mb, cfg)


def binomial_ok(count: int, n: int, p: float, alpha: float = ALPHA) -> bool:
    """Whether ``count`` lies inside the central 1 - alpha interval of Binomial(n, p)."""
    low, high = stats.binom.interval(1.0 - alpha, n, p)
    return low <= count <= high


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory) -> SentencePieceTokenizer:
    path = tmp_path_factory.mktemp("sp") / "bpe-120.model"
    path.write_bytes(train_sentencepiece(SP_TEXTS, 120, "bpe"))
    tok = load_tokenizer(path)
    assert isinstance(tok, SentencePieceTokenizer)
    return tok


# ------------------------------------------------------------------------------- tokenizer.py


class _StubTokenizer(Tokenizer):
    """Three entries; ``encode`` starts with a continuation piece (``##b``)."""

    kind, path, sha256, vocab_size = "stub", "", "", 3
    pad_id = bos_id = eos_id = unk_id = mask_id = 0
    TOKENS = ("[PAD]", "a", "##b")

    def encode(self, text: str) -> list[int]:
        return [2, 1, 2]

    def decode(self, ids: Sequence[int]) -> str:
        return ""

    def pieces(self, text: str) -> list[str]:
        return []

    def id_to_token(self, token_id: int) -> str:
        return self.TOKENS[token_id]

    def _starts_word(self, token: str) -> bool:
        return not token.startswith("##")


def test_encode_words_first_id_always_starts_a_word():
    assert _StubTokenizer().encode_words("x") == ([2, 1, 2], [True, True, False])


def test_wordpiece_unknown_chars_and_word_starts(tmp_path):
    extra = [*LETTERS, "#", "the", "dog", "##s"]
    tok = load_tokenizer(write_vocab(tmp_path / "vocab.txt", extra))
    idx = {t: 104 + i for i, t in enumerate(extra)}
    # only "?" is unknown: letters and "#" are vocabulary entries
    assert tok.unknown_chars(["the dog? #s", "dogs"]) == ["?"]
    ids, starts = tok.encode_words("dogs # the")
    assert ids == [idx["dog"], idx["##s"], idx["#"], idx["the"]]
    assert starts == [True, False, True, True]  # "#" is a word of its own, not a "##" piece
    # [UNK] is kept by decode (only pad/bos/eos/mask are skipped)
    assert tok.decode([101, *tok.encode("the dog ?"), 102, 0]) == "the dog [UNK]"


def test_wordpiece_first_duplicate_wins_and_long_words(tmp_path):
    extra = ["the", "dog", "the", "a", "##a"]
    tok = load_tokenizer(write_vocab(tmp_path / "vocab.txt", extra))
    assert tok.vocab_size == 104 + 5  # lines, duplicates included
    assert tok.encode("the dog") == [104, 105]  # "the" is the first of its two lines
    # BERT's 100-character limit per word: 100 characters are pieces, 101 are [UNK]
    assert tok.encode("a" * 100) == [107] + [108] * 99
    assert tok.encode("a" * 101) == [100]


def test_wordpiece_tokenizer_config_decides_lowercasing(tmp_path):
    vocab = write_vocab(tmp_path / "cfg" / "vocab.txt", ["the", "dog"])  # uncased entries
    (vocab.parent / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert load_tokenizer(vocab).lowercase is False
    assert WordPieceTokenizer(vocab, lowercase=True).lowercase is False  # the file wins
    assert WordPieceTokenizer(vocab).encode("The dog") == [100, 105]
    plain = write_vocab(tmp_path / "plain" / "vocab.txt", ["the", "dog"])
    assert WordPieceTokenizer(plain, lowercase=False).lowercase is False  # argument, no file
    assert WordPieceTokenizer(plain).encode("The dog") == [104, 105]


def test_sentencepiece_decode_keeps_unk_and_lone_marker_starts_a_word(sp_tok):
    sp = sp_tok._sp
    for text in ("the xyz dog", "q the", "a zzz", "the 9 dog"):
        ids, starts = sp_tok.encode_words(text)
        assert sp_tok.unk_id in ids
        assert sum(starts) == len(text.split()), (text, [sp.id_to_piece(i) for i in ids])
        # decode skips <s>, </s>, <pad>, <mask> only: the same text as SentencePiece's own
        wrapped = [sp_tok.bos_id, *ids, sp_tok.eos_id, sp_tok.pad_id, sp_tok.mask_id]
        assert sp_tok.decode(wrapped) == sp.decode(ids)
        assert sp.decode(ids).count("\u2047") == ids.count(sp_tok.unk_id)


def test_tokenizer_folder_must_hold_one_model(sp_tok, tmp_path):
    data = Path(sp_tok.path).read_bytes()
    (tmp_path / "a.model").write_bytes(data)
    assert load_tokenizer(tmp_path).sha256 == sp_tok.sha256
    (tmp_path / "b.model").write_bytes(data)
    with pytest.raises(TokenizerError, match="exactly one"):
        load_tokenizer(tmp_path)


def test_rewritten_file_of_same_size_is_read_again(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", ["cat", "dog"])
    assert load_tokenizer(path).encode("dog cat") == [105, 104]
    stat = path.stat()
    write_vocab(path, ["dog", "cat"])  # same size, other order
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert path.stat().st_size == stat.st_size
    assert load_tokenizer(path).encode("dog cat") == [104, 105]


# ------------------------------------------------------------------------------- text_norm.py


def test_join_contractions_only_between_word_characters():
    assert join_contractions("don\u2019t stop") == "dont stop"  # a curly apostrophe alone
    assert join_contractions("won\u2019t it\u2019s") == "wont its"
    # an apostrophe after a word but before punctuation, or after punctuation, stays
    assert join_contractions("the dogs'. (x)'y") == "the dogs'. (x)'y"
    assert join_contractions("'quoted', kids' toys") == "'quoted', kids' toys"


def test_pre_tokenized_contraction_stubs_are_not_words():
    text = "we 'll go and they 're here he 'd go it 's the dog do n't"
    want = ["we", "go", "and", "they", "here", "he", "go", "it", "the", "dog", "do"]
    assert check_words(text) == want
    assert content_words(text) == want


# ------------------------------------------------------------------------ train/masking.py

NEVER = (0, 1, 2, 3)


def masking(mask_prob: float, max_predictions: int, *, replacement: str = "mask",
            vocab_size: int = 50, pack_prob: float | None = None,
            pack_groups: int = 1) -> MaskingConfig:
    return MaskingConfig(mask_prob=mask_prob, max_predictions=max_predictions,
                         replacement=replacement, mask_id=4, never_mask_ids=NEVER,
                         random_token_min_id=5, vocab_size=vocab_size,
                         pack_prob=mask_prob if pack_prob is None else pack_prob,
                         pack_groups=pack_groups)


def small_batch() -> tuple[np.ndarray, np.ndarray]:
    """6 x 16 tokens with every never-mask id present and padding (segment 0) over ordinary ids."""
    tokens = np.random.default_rng(3).integers(5, 50, size=(6, 16)).astype(np.int32)
    tokens[:, 0], tokens[:, 7], tokens[1, 3], tokens[2, 9] = 0, 2, 3, 1
    tokens[4, 5] = 3
    segments = np.ones_like(tokens)
    segments[0, 12:], segments[3, 4:], segments[5, 10:] = 0, 0, 0  # padding of ordinary ids
    return tokens, segments


def hand_maskable(tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
    return (segments != 0) & ~np.isin(tokens, NEVER)


def test_mask_prob_one_selects_exactly_the_maskable_positions():
    tokens, segments = small_batch()
    want = hand_maskable(tokens, segments)
    assert want.sum(axis=1).tolist() == [10, 13, 13, 3, 13, 8]  # counted by hand
    got = maskable_positions(jnp.asarray(tokens), jnp.asarray(segments), masking(1.0, 16))
    np.testing.assert_array_equal(np.asarray(got), want)
    mb = mask_tokens(jax.random.key(0), jnp.asarray(tokens), jnp.asarray(segments),
                     masking(1.0, 16))
    inputs = np.asarray(mb.inputs_bt)
    np.testing.assert_array_equal(inputs, np.where(want, 4, tokens))
    np.testing.assert_array_equal(np.asarray(mb.weights_bp).sum(axis=1), want.sum(axis=1))
    w = np.asarray(mb.weights_bp) > 0
    rows = np.repeat(np.arange(6)[:, None], 16, axis=1)
    assert want[rows[w], np.asarray(mb.positions_bp)[w]].all()
    np.testing.assert_array_equal(np.asarray(mb.targets_bp)[w],
                                  tokens[rows[w], np.asarray(mb.positions_bp)[w]])
    # a cap of 5: min(maskable, 5) per row, chosen among the maskable, nothing else changed
    capped = mask_tokens(jax.random.key(0), jnp.asarray(tokens), jnp.asarray(segments),
                         masking(1.0, 5))
    cw = np.asarray(capped.weights_bp) > 0
    np.testing.assert_array_equal(cw.sum(axis=1), [5, 5, 5, 3, 5, 5])
    changed = np.asarray(capped.inputs_bt) != tokens
    assert changed.sum() == 28 and not (changed & ~want).any()
    # mask_prob 0: nothing selected, nothing changed
    none = mask_tokens(jax.random.key(0), jnp.asarray(tokens), jnp.asarray(segments),
                       masking(0.0, 5))
    assert float(np.asarray(none.weights_bp).sum()) == 0.0
    np.testing.assert_array_equal(np.asarray(none.inputs_bt), tokens)


def test_selection_is_a_function_of_the_key():
    tokens = np.random.default_rng(4).integers(5, 50, size=(8, 64)).astype(np.int32)
    seg = jnp.ones((8, 64), jnp.int32)
    cfg = masking(0.3, 64)
    base = jax.random.key(7)

    def chosen(key: jax.Array) -> np.ndarray:
        return np.asarray(mask_tokens(key, jnp.asarray(tokens), seg, cfg).inputs_bt) == 4

    first = chosen(jax.random.fold_in(base, 0))
    np.testing.assert_array_equal(first, chosen(jax.random.fold_in(base, 0)))
    masks = [first] + [chosen(jax.random.fold_in(base, s)) for s in (1, 2)] + [
        chosen(jax.random.key(8))]
    n = tokens.size
    for i in range(len(masks)):
        assert binomial_ok(int(masks[i].sum()), n, 0.3)
        for j in range(i):  # independent draws: overlap ~ Binomial(n, 0.09), not n * 0.3
            assert binomial_ok(int((masks[i] & masks[j]).sum()), n, 0.09)


def test_bert_split_and_random_ids_against_binomial_bounds():
    """Every token is id 5 and the vocabulary 13 ids: a selected position becomes <mask> (80%),
    stays 5 (10% + 10% x 1/8 random draws of 5) or is each of 6..12 (10% x 1/8)."""
    b, t = 512, 128
    tokens = jnp.full((b, t), 5, jnp.int32)
    cfg = masking(0.5, t, replacement="bert", vocab_size=13)
    mb = mask_tokens(jax.random.key(11), tokens, jnp.ones_like(tokens), cfg)
    w = np.asarray(mb.weights_bp) > 0
    n = int(w.sum())
    assert binomial_ok(n, b * t, 0.5)
    rows = np.repeat(np.arange(b)[:, None], t, axis=1)[w]
    new = np.asarray(mb.inputs_bt)[rows, np.asarray(mb.positions_bp)[w]]
    counts = np.bincount(new, minlength=13)
    assert counts[:4].sum() == 0 and counts.sum() == n and len(counts) == 13
    assert binomial_ok(int(counts[4]), n, 0.8), counts
    assert binomial_ok(int(counts[5]), n, 0.1 + 0.1 / 8), counts
    for token_id in range(6, 13):
        assert binomial_ok(int(counts[token_id]), n, 0.1 / 8), (token_id, counts)
    # outside the selected positions nothing changed
    assert int((np.asarray(mb.inputs_bt) != 5).sum()) == n - int(counts[5])


def scipy_cap(mask_prob: float, max_len: int, tail: float = 1e-4) -> int:
    """The smallest cap c with E[(X - c)+] / E[X] <= tail, X ~ Binomial(max_len, mask_prob)."""
    k = np.arange(max_len + 1)
    pmf = stats.binom.pmf(k, max_len, mask_prob)
    return next(c for c in k if np.sum(np.maximum(k - c, 0) * pmf) / (max_len * mask_prob) <= tail)


def test_derived_cap_from_the_static_pack_prob_and_sequence_length():
    assert scipy_cap(0.5, 16) == 14 and scipy_cap(0.15, 16) == 8  # not the batch size's
    cfg = masking(0.5, 0)
    tokens = jnp.full((4, 16), 9, jnp.int32)
    mb = mask_tokens(jax.random.key(0), tokens, jnp.ones_like(tokens), cfg)
    assert mb.positions_bp.shape == (4, scipy_cap(0.5, 16))
    # a traced/other mask_prob: the cap follows pack_prob (the group's largest), not mask_prob
    assert masking(0.15, 0, pack_prob=0.5).per_sequence(16) == scipy_cap(0.5, 16)
    assert masking(0.15, 0).per_sequence(16) == scipy_cap(0.15, 16)


def test_from_config_keeps_every_never_mask_id_and_refuses_unknown_replacement():
    mlm = ml_collections.ConfigDict(dict(mask_prob=0.15, max_predictions=32, replacement="bert",
                                         mask_id=4, never_mask_ids=(0, 1, 2, 3),
                                         random_token_min_id=5))
    cfg = MaskingConfig.from_config(mlm, 100)
    assert cfg.never_mask_ids == NEVER and cfg.pack_prob == 0.15 and cfg.vocab_size == 100
    mlm.replacement = "Bert"
    with pytest.raises(ConfigError, match="mlm.replacement"):
        MaskingConfig.from_config(mlm, 100)


def hand_rows(n: int, p: float) -> int:
    """p n + 7 binomial sd + 1, rounded up to a multiple of 128."""
    return 128 * math.ceil((p * n + 7.0 * math.sqrt(n * p * (1.0 - p)) + 1.0) / 128)


@pytest.mark.parametrize(("sequences", "seq_len", "p", "cap", "want"), [
    (130, 64, 0.5, 64, 4608),  # p n + 7 sd = 4479.25: the + 1 crosses 4480
    (8, 128, 0.4, 128, 640),  # 7 sd: 520.3 -> 640 (6 sd would give 512)
    (32, 128, 0.15, 128, 896),
    (4, 128, 0.15, 32, 128),  # the cap 4 x 32 binds
])
def test_packed_rows_hold_every_selection_but_with_negligible_probability(sequences, seq_len, p,
                                                                          cap, want):
    n = sequences * seq_len
    assert want == min(hand_rows(n, p), sequences * cap)
    assert packed_rows(n, sequences, masking(p, cap)) == want
    if want < sequences * cap:
        assert stats.binom.sf(want, n, p) < 1e-11  # the docstring's promise


def test_packed_rows_per_shard_of_the_batch():
    """pack_groups=2: each half's selected positions (batch order), then weight-0 rows, then the
    next half's; 2 x packed_rows(32 x 128, 32) = 2 x 896 rows (the whole batch's bound, 1536,
    would give each half 1024 = all of its 32 x 32 slots)."""
    b, t, half = 64, 128, 32
    cfg = masking(0.15, 32, pack_groups=2)
    assert packed_rows(half * t, half, cfg) == hand_rows(half * t, 0.15) == 896
    assert packed_rows(b * t, b, cfg) == hand_rows(b * t, 0.15) == 1536
    tokens = jax.random.randint(jax.random.key(1), (b, t), 5, 50)
    mb = mask_tokens(jax.random.key(2), tokens, jnp.ones_like(tokens), cfg)
    packed = pack_predictions(mb, cfg)
    assert packed.rows_n.shape == (2 * 896,)
    w = np.asarray(mb.weights_bp) > 0
    flat = np.arange(b)[:, None] * t + np.asarray(mb.positions_bp)
    targets = np.asarray(mb.targets_bp)
    for g in range(2):
        rows = slice(g * half, (g + 1) * half)
        sel = w[rows]
        k = int(sel.sum())
        assert binomial_ok(k, half * t, 0.15) and k < 896
        part = slice(g * 896, (g + 1) * 896)
        np.testing.assert_array_equal(np.asarray(packed.rows_n)[part][:k], flat[rows][sel])
        np.testing.assert_array_equal(np.asarray(packed.targets_n)[part][:k], targets[rows][sel])
        np.testing.assert_array_equal(np.asarray(packed.weights_n)[part],
                                      (np.arange(896) < k).astype(np.float32))
