"""Tokenizer training grid and the selection report (split ratio, ESMS, unk rate, recommendation)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.select_stage import run_select
from minilm_jax.corpus.text_selection import (esms, load_morphemes, recommend, unk_rates, word_esms,
                                              word_split_ratio)
from minilm_jax.corpus.sources import SourceSpec
from minilm_jax.corpus.tokenizer_train import reservoir_sample, run_train_tokenizers, train_sentencepiece
from minilm_jax.tokenizer import Tokenizer, load_tokenizer

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
AOCHILDES = SHARED / "aochildes" / "original_transcripts"
SST2_DEV = SHARED / "glue" / "SST-2" / "dev.tsv"
needs_shared = pytest.mark.skipif(not (AOCHILDES.is_dir() and SST2_DEV.is_file()), reason="shared data absent")
AO_SOURCE = f"aochildes:{AOCHILDES / 'Bates.csv'}#group_by=transcript_id"


class FakeTokenizer(Tokenizer):
    """Fixed segmentations, for hand-computed metrics."""

    kind, path, sha256, vocab_size = "fake", "", "", 10
    pad_id, bos_id, eos_id, unk_id, mask_id = 0, 1, 2, 3, 4

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def pieces(self, text: str) -> list[str]:
        return [p for w in text.split() for p in self.table.get(w, list(w))]

    def encode(self, text: str) -> list[int]:
        return [3 if p == "?" else 9 for p in self.pieces(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return ""

    def id_to_token(self, token_id: int) -> str:
        return ""


def test_esms_and_split_ratio_by_hand():
    reference = {"unhappiness": ("un", "happi", "ness"), "playing": ("play", "ing"),
                 "teachers": ("teach", "er", "s"), "careful": ("care", "ful"), "kindness": ("kind", "ness")}
    tok = FakeTokenizer({"unhappiness": ["un", "happi", "ness"],  # 3 of 3
                         "playing": ["playing"],                   # kept whole: 0
                         "teachers": list("teachers"),             # single characters: 0
                         "careful": ["car", "eful"],              # no morpheme: 0
                         "kindness": ["kind", "n", "ess"]})        # "kind": 1 of 2
    assert esms(tok, reference) == pytest.approx(4 / 12)
    assert word_esms(["hand", "hand", "s"], ("hand", "s")) == 2  # each morpheme matched once
    # words: "playing" 1 piece, "careful" 2, "ab" 2 (characters) -> 5 pieces / 3 words
    assert word_split_ratio(tok, ["playing careful", "ab"]) == pytest.approx(5 / 3)
    tok_unk = FakeTokenizer({"x": ["?"], "y": ["y"]})
    assert unk_rates(tok_unk, ["x y", "y y"]) == {"unk_token_rate": 0.25, "unk_text_rate": 0.5}


def test_recommendation_rule():
    rows = [{"model_type": "bpe", "vocab_size": v, "split_ratio": s, "esms": e}
            for v, s, e in ((1000, 1.50, 0.30), (2000, 1.22, 0.50), (4000, 1.18, 0.50), (8000, 1.16, 0.35))]
    # within 5% of 1.16 (<= 1.218): 4000 and 8000; highest ESMS: 4000
    assert recommend(rows) == {"bpe": 4000}
    assert recommend(rows, tolerance=0.06) == {"bpe": 2000}  # 2000 is now a candidate; ESMS tie -> smaller


def test_project_morpheme_list():
    table = load_morphemes()
    assert len(table) >= 300
    assert table["unhappiness"] == ("un", "happi", "ness")
    assert all(len(parts) >= 2 and "".join(parts) == word for word, parts in table.items())


def test_bad_morpheme_file(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("unhappy\tun hapy\n")
    with pytest.raises(CorpusError, match=r"m.tsv:1: expected 'word<TAB>m1 m2 ...'"):
        load_morphemes(path)


def test_reservoir_sample_is_seeded_and_ordered():
    a = reservoir_sample(map(str, range(1000)), 10, seed=1)
    assert a == reservoir_sample(map(str, range(1000)), 10, seed=1)
    assert a != reservoir_sample(map(str, range(1000)), 10, seed=2)
    assert [int(x) for x in a] == sorted(int(x) for x in a) and len(set(a)) == 10
    assert reservoir_sample(["x", "y"], 10, seed=0) == ["x", "y"]


def test_vocab_size_too_large_is_a_clear_error():
    with pytest.raises(CorpusError, match=r"could not train a bpe model of size 5000: Vocabulary size too high"):
        train_sentencepiece(["a small corpus of few words"] * 10, 5000, "bpe")


def test_text_of_only_overlong_lines_names_the_cause():
    """One 70,000-byte line (a file with no line breaks): SentencePiece would skip it and fail with
    an internal check; the error says why and what to do."""
    with pytest.raises(CorpusError, match=r"every document is longer than the 65,536 bytes .* "
                                          r"\(the longest: 70,000 bytes\): put one document"):
        train_sentencepiece(["word " * 14_000], 500, "bpe")


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    if not AOCHILDES.is_dir():
        pytest.skip("shared data absent")
    out = tmp_path_factory.mktemp("tok") / "grid"
    run_train_tokenizers([SourceSpec.parse(AO_SOURCE)], out, sizes=[300, 800], model_types=["bpe", "unigram"],
                         sample=400, seed=0)
    return out


@needs_shared
def test_training_grid_outputs_and_determinism(grid, tmp_path):
    manifest = json.loads((grid / "manifest.json").read_text())
    assert sorted(manifest["models"]) == ["bpe-300", "bpe-800", "unigram-300", "unigram-800"]
    for name, entry in manifest["models"].items():
        tok = load_tokenizer(grid / entry["file"])
        assert tok.vocab_size == entry["vocab_size"] and (tok.bos_id, tok.pad_id, tok.mask_id) == (0, 1, 4)
        assert tok.sha256 == manifest["outputs"][entry["file"]]["sha256"]
    again = tmp_path / "again"
    run_train_tokenizers([SourceSpec.parse(AO_SOURCE)], again, sizes=[300], model_types=["bpe"], sample=400, seed=0)
    assert (again / "bpe-300.model").read_bytes() == (grid / "bpe-300.model").read_bytes()


@needs_shared
def test_selection_report(grid, tmp_path):
    sst2 = SourceSpec.parse(f"tsv:{SST2_DEV}#column=sentence,limit=200")
    report = run_select([str(grid)], [SourceSpec.parse(AO_SOURCE)], tmp_path / "sel", downstream=[sst2],
                        sample=200)
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"bpe-300", "bpe-800", "unigram-300", "unigram-800"}
    for model_type in ("bpe", "unigram"):
        small, large = rows[f"{model_type}-300"], rows[f"{model_type}-800"]
        assert 1.0 <= large["split_ratio"] < small["split_ratio"]
        assert large["tokens_per_sequence"] < small["tokens_per_sequence"]
        assert 0.0 <= small["esms"] <= 1.0 and 0.0 <= large["unk_token_rate"] <= 1.0
        assert report["recommended"][model_type] in (300, 800)
    # the recommendation follows the stated rule on the measured rows
    assert report["recommended"] == recommend(report["rows"])
    written = json.loads((tmp_path / "sel" / "report.json").read_text())
    assert written["recommended"] == report["recommended"]
    assert (tmp_path / "sel" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bpe-300 | bpe | 300 |" in (tmp_path / "sel" / "report.md").read_text()
    # a modified model is refused
    copy = tmp_path / "grid"
    shutil.copytree(grid, copy)
    (copy / "bpe-300.model").write_bytes((copy / "bpe-800.model").read_bytes())
    with pytest.raises(CorpusError, match="bpe-300.model does not match the checksum"):
        run_select([str(copy)], [SourceSpec.parse(AO_SOURCE)], tmp_path / "sel2", sample=50)
    assert not (tmp_path / "sel2").exists()


@needs_shared
def test_a_grid_size_too_large_for_the_corpus_is_skipped_not_fatal(tmp_path):
    out = tmp_path / "grid"
    result = run_train_tokenizers([SourceSpec.parse(AO_SOURCE)], out, sizes=[300, 200_000],
                                  model_types=["bpe"], sample=400, seed=0)
    assert list(result["models"]) == ["bpe-300"]
    assert "Vocabulary size too high" in result["skipped"]["bpe-200000"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["models"]) == ["bpe-300"] and "bpe-200000" in manifest["skipped"]
    with pytest.raises(CorpusError, match="no tokenizer of the grid could be trained"):
        run_train_tokenizers([SourceSpec.parse(AO_SOURCE)], tmp_path / "none", sizes=[200_000],
                             model_types=["bpe"], sample=400, seed=0)
    assert not (tmp_path / "none").exists()


@needs_shared
def test_wordpiece_vocabulary_from_the_tokenizers_trainer(tmp_path):
    out = tmp_path / "wp"
    result = run_train_tokenizers([SourceSpec.parse(AO_SOURCE)], out, sizes=[600],
                                  model_types=["wordpiece"], sample=2000, seed=0)
    assert list(result["models"]) == ["wordpiece-600"]
    tok = load_tokenizer(out / "wordpiece-600.txt")
    assert tok.kind == "wordpiece" and tok.vocab_size == 600 and tok.lowercase
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("Where is the doggie going")
    assert ids and tok.unk_id not in ids and tok.decode(ids) == "where is the doggie going"
