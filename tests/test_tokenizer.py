"""The common tokenizer interface: SentencePiece (RoBERTa specials) and BERT WordPiece vocab.txt."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import sentencepiece as spm

from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.tokenizer import (
    SentencePieceTokenizer,
    TokenizerError,
    WordPieceTokenizer,
    load_tokenizer,
)

TEXTS = [
    "the little dog runs to the park and plays with a red ball",
    "do you want to read a book about a big brown bear",
    "unhappiness is not kindness but the cat is playing happily",
    "we are going to the store to buy some apples and bananas",
] * 50


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sp") / "bpe-120.model"
    path.write_bytes(train_sentencepiece(TEXTS, 120, "bpe"))
    return path


def test_sentencepiece_specials_and_round_trip(sp_model):
    tok = load_tokenizer(sp_model)
    assert isinstance(tok, SentencePieceTokenizer) and tok.kind == "sentencepiece"
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == frozenset(range(5)) and tok.vocab_size == 120
    assert tok.sha256 == hashlib.sha256(sp_model.read_bytes()).hexdigest() and tok.path == str(sp_model.resolve())
    text = "the little dog plays with the cat"
    ids = tok.encode(text)
    assert ids and not set(ids) & tok.special_ids
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text
    assert tok.encode_batch([text, "a book"]) == [ids, tok.encode("a book")]
    assert "".join(tok.pieces("unhappiness")) == "unhappiness"
    assert tok.info.sha256 == tok.sha256 and tok.info.vocab_size == 120


def test_sentencepiece_without_mask_or_pad_is_refused(tmp_path):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=model, vocab_size=100,
                                   model_type="bpe", minloglevel=2)
    path = tmp_path / "plain.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(TokenizerError, match=r"plain.model lacks special tokens: <pad>, <mask>"):
        load_tokenizer(path)


def _bert_vocab(path: Path, extra: list[str], drop: str | None = None) -> Path:
    """A vocab.txt laid out like bert-base-uncased: [PAD]=0, [unused*], [UNK]=100 ... [MASK]=103."""
    entries = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + extra
    if drop:
        entries.remove(drop)
    path.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return path


def test_wordpiece_ids_from_file_and_greedy_longest_match(tmp_path):
    vocab = ["the", "lobster", "un", "happy", "##happi", "##ness", "##s", "a", ".", "cafe"]
    tok = load_tokenizer(_bert_vocab(tmp_path / "vocab.txt", vocab))
    assert isinstance(tok, WordPieceTokenizer) and tok.kind == "wordpiece"
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 104 + len(vocab) and tok.lowercase
    ids = {t: 104 + i for i, t in enumerate(vocab)}
    # uncased: lowercased, accents stripped; "unhappiness" -> un ##happi ##ness; "lobsters" -> lobster ##s
    assert tok.encode("The UNHAPPINESS of lobsters. Café zebra") == [
        ids["the"], ids["un"], ids["##happi"], ids["##ness"], 100, ids["lobster"], ids["##s"], ids["."],
        ids["cafe"], 100]
    assert tok.pieces("unhappiness") == ["un", "happi", "ness"]
    assert tok.decode([101, ids["the"], ids["lobster"], ids["##s"], 102, 0]) == "the lobsters"
    assert tok.encode("[MASK] the") == [103, ids["the"]]


def test_wordpiece_missing_special_and_bad_paths(tmp_path):
    with pytest.raises(TokenizerError, match=r"vocab.txt lacks special tokens: \[MASK\]"):
        load_tokenizer(_bert_vocab(tmp_path / "vocab.txt", ["the"], drop="[MASK]"))
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.model")
    other = tmp_path / "tok.json"
    other.write_text("{}")
    with pytest.raises(TokenizerError, match="unknown tokenizer file"):
        load_tokenizer(other)


def test_cased_vocab_is_not_lowercased(tmp_path):
    tok = load_tokenizer(_bert_vocab(tmp_path / "vocab.txt", ["The", "the", "Dog"]))
    assert not tok.lowercase
    assert tok.encode("The dog") == [104, 100]
