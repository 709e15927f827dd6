"""The constrained-language filter and packing, on hand-checked windows of real text; the filter stage."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from minilm_jax.corpus.constrained import FilterConfig, FilterCounts, VocabularyChecker, filter_document
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.filter_stage import PackConfig, run_filter
from minilm_jax.corpus.sequence_packing import pack
from minilm_jax.corpus.sources import SourceSpec
from minilm_jax.corpus.vocab import load_word_list
from minilm_jax.corpus.words import check_words, normalize_for_check

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VOCAB_CSV = SHARED / "vocab" / "AOChildes_word_frequency.csv"
AOCHILDES = SHARED / "aochildes" / "original_transcripts"
WIKI_VALID = SHARED / "wikitext2" / "tokenized" / "wiki.valid.tokens"
needs_shared = pytest.mark.skipif(not (VOCAB_CSV.is_file() and AOCHILDES.is_dir() and WIKI_VALID.is_file()),
                                  reason="shared data absent")


@pytest.fixture(scope="module")
def vocab() -> frozenset[str]:
    if not VOCAB_CSV.is_file():
        pytest.skip("shared data absent")
    return load_word_list(VOCAB_CSV)


def _run(doc: str, vocab: frozenset[str], cfg: FilterConfig) -> tuple[list[str], FilterCounts, Counter]:
    counts, oov = FilterCounts(), Counter()
    kept = filter_document(doc, VocabularyChecker(vocab), cfg, counts, oov)
    return kept, counts, oov


def test_check_normalisation_by_hand():
    assert check_words("He rushed for 48 yards on 9 carries") == ["he", "rushed", "for", "number", "yards", "on",
                                                                  "number", "carries"]
    assert check_words("special @-@ teams, 10 @,@ 000 well-known") == ["special", "teams", "number", "number",
                                                                      "number", "well", "known"]
    assert check_words("What's a URL: https://x-y.org/a?b=1 now") == ["whats", "url", "hlink", "now"]
    assert check_words("1990s covid-19 abc123 hoo_hoo I") == ["number", "covid", "number", "abc123", "hoo_hoo"]
    text = "a-b 12 http://x y"
    assert normalize_for_check(text).count(" ") == text.count(" ")  # windows stay aligned with the original


@needs_shared
def test_wikitext_line_windows_by_hand(vocab):
    line = WIKI_VALID.read_text(encoding="utf-8").split("\n")[535].strip()
    assert line.startswith("<unk> played a role as a receiver") and line.endswith("special @-@ teams tackles .")
    # 61 words; only "<unk>" (word 0) is out of vocabulary; "a", ",", ".", "@-@" have no check word.
    kept, counts, oov = _run(line, vocab, FilterConfig(window=20, stride=10, min_words=15))
    assert kept == [
        "player in 2013 , but was almost entirely absent from the rushing game . he rushed for 48 yards on",
        "the rushing game . he rushed for 48 yards on 9 carries , but caught 20 passes for 186 yards",
        "9 carries , but caught 20 passes for 186 yards and two touchdowns . he continued to play on the",
        "and two touchdowns . he continued to play on the special teams , and recorded nine special @-@ teams tackles",
    ]
    assert (counts.units, counts.kept, counts.rejected_oov, counts.too_short) == (7, 4, 1, 2)
    assert oov == Counter({"unk": 1})
    # With the paper's parameters: [0:61] has <unk>; [30:61] has 26 words (<= 40); [60:61] is ".".
    kept, counts, _ = _run(line, vocab, FilterConfig())
    assert kept == [] and (counts.units, counts.rejected_oov, counts.too_short) == (3, 1, 2)


@needs_shared
def test_aochildes_excerpt_windows_and_sentences_by_hand(vocab):
    with open(AOCHILDES / "Bates.csv", newline="") as handle:
        glosses = [row["gloss"] for row, _ in zip(csv.DictReader(handle), range(12))]
    doc = " ".join(glosses)
    assert doc == ("what's that yyy it's a chicken yeah yeah what's this what is that yyy it's a woof+woof "
                   "yeah yeah xxx woof")
    # words: 0 what's 1 that 2 yyy 3 it's 4 a 5 chicken 6 yeah 7 yeah 8 what's 9 this 10 what 11 is 12 that
    # 13 yyy 14 it's 15 a 16 woof+woof 17 yeah 18 yeah 19 xxx 20 woof; yyy and xxx are out of vocabulary.
    kept, counts, oov = _run(doc, vocab, FilterConfig(window=6, stride=3, min_words=3))
    assert kept == ["it's a chicken yeah yeah what's", "yeah yeah what's this what is"]
    assert (counts.units, counts.kept, counts.rejected_oov) == (7, 2, 5)
    assert oov == Counter({"yyy": 2, "xxx": 1})
    kept = []
    counts, oov = FilterCounts(), Counter()
    checker = VocabularyChecker(vocab)
    for gloss in glosses:
        kept += filter_document(gloss, checker, FilterConfig(unit="sentence"), counts, oov)
    assert kept == ["what's that", "it's a chicken", "yeah", "yeah", "what's this", "what is that",
                    "it's a woof+woof", "yeah", "yeah"]
    assert (counts.units, counts.kept, counts.rejected_oov) == (12, 9, 3)


def test_paper_window_rule_on_a_long_document():
    words = [f"w{i}" for i in range(200)]
    vocab = frozenset(words)
    words[150] = "oov"
    doc = " ".join(words).upper()  # the filter lowercases
    kept, counts, oov = _run(doc, vocab, FilterConfig())
    # starts 0, 30, ..., 180; windows containing word 150 are rejected; [180:200] has 20 words <= 40.
    assert kept == [" ".join(words[0:110]), " ".join(words[30:140])]
    assert (counts.units, counts.kept, counts.rejected_oov, counts.too_short) == (7, 2, 4, 1)
    assert oov == Counter({"oov": 1})


def test_min_words_boundary_is_strictly_more_than():
    vocab = frozenset({"ab"})
    kept, counts, _ = _run(" ".join(["ab"] * 41), vocab, FilterConfig(window=41, stride=41))
    assert len(kept) == 1
    kept, counts, _ = _run(" ".join(["ab"] * 40), vocab, FilterConfig(window=41, stride=41))
    assert kept == [] and counts.too_short == 1


def test_packing_rule_by_hand():
    units = [" ".join(["x"] * n) for n in (50, 50, 10, 110, 30)]
    # 50 -> 50+50=100 (120 < 128) -> +10 = 110 (132 >= 128): close; 10+110 too long; 110+30 too long; last kept.
    assert [len(s.split()) for s in pack(units)] == [100, 10, 110, 30]
    assert list(pack([])) == []


def _vocab_file(tmp_path: Path, words: list[str]) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def test_stage_dedup_report_and_manifest(tmp_path):
    vocab = _vocab_file(tmp_path, ["the", "dog", "cat", "sat"])
    src = tmp_path / "docs.txt"
    src.write_text("the dog sat the cat sat\nthe dog sat the cat sat\nthe zebra sat the cat sat\n")
    report = run_filter([SourceSpec.parse(f"text:{src}#name=docs.txt")], vocab, tmp_path / "out",
                        cfg=FilterConfig(window=4, stride=2, min_words=2), pack=PackConfig(pack=False))
    entry = report["sources"]["docs.txt"]
    # per line: windows [0:4], [2:6], [4:6] (2 words: too short); only "the zebra sat the" has "zebra";
    # line 2 repeats line 1 and line 3's "sat the cat sat" repeats line 1's second window.
    assert (entry["units"], entry["kept"], entry["rejected_oov"], entry["too_short"]) == (9, 5, 1, 3)
    assert entry["duplicates"] == 3 and entry["sequences"] == 2
    lines = [json.loads(x) for x in (tmp_path / "out" / "sequences.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["the dog sat the", "sat the cat sat"]
    assert report["top_oov"] == [["zebra", 1]]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "filter" and manifest["inputs"]["vocab"]["words"] == 4
    assert set(manifest["outputs"]) == {"sequences.jsonl", "report.json"}


def _no_leftovers(parent: Path) -> bool:
    return not any(p.name.startswith(".") for p in parent.iterdir())


def test_stage_bad_inputs_write_nothing(tmp_path):
    vocab = _vocab_file(tmp_path, ["dog"])
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="corpus not found"):
        run_filter([SourceSpec.parse(f"text:{tmp_path / 'missing.txt'}")], vocab, out)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CorpusError, match="corpus is empty: source text:.*empty.txt has no documents"):
        run_filter([SourceSpec.parse(f"text:{tmp_path / 'empty.txt'}")], vocab, out)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"dog dog dog\n\xffdog\n")
    with pytest.raises(CorpusError, match=r"bad.txt:2: undecodable bytes"):
        run_filter([SourceSpec.parse(f"text:{bad}")], vocab, out, on_decode_error="fail",
                   cfg=FilterConfig(unit="sentence"))
    (tmp_path / "oov.txt").write_text("cat cat cat\n")
    with pytest.raises(CorpusError, match="nothing kept.*cat"):
        run_filter([SourceSpec.parse(f"text:{tmp_path / 'oov.txt'}")], vocab, out, cfg=FilterConfig(unit="sentence"))
    assert not out.exists() and _no_leftovers(tmp_path)
    report = run_filter([SourceSpec.parse(f"text:{bad}")], vocab, out, cfg=FilterConfig(unit="sentence"))
    assert report["total"]["undecodable_skipped"] == 1
    assert report["sources"][f"{tmp_path.name}/bad.txt"]["first_undecodable"] == f"{bad}:2"
    with pytest.raises(CorpusError, match="output already exists"):
        run_filter([SourceSpec.parse(f"text:{bad}")], vocab, out, cfg=FilterConfig(unit="sentence"))


@needs_shared
def test_aochildes_sentence_stage_is_deterministic_across_workers(tmp_path):
    sources = [SourceSpec.parse(f"aochildes:{AOCHILDES / name}") for name in ("Garvey.csv", "McMillan.csv",
                                                                             "Nelson.csv")]
    one = run_filter(sources, VOCAB_CSV, tmp_path / "one", cfg=FilterConfig(unit="sentence"), workers=1)
    two = run_filter(sources, VOCAB_CSV, tmp_path / "two", cfg=FilterConfig(unit="sentence"), workers=2)
    data = (tmp_path / "one" / "sequences.jsonl").read_bytes()
    assert data == (tmp_path / "two" / "sequences.jsonl").read_bytes()
    assert one["sources"] == two["sources"]
    total = one["total"]
    assert total["kept"] + total["rejected_oov"] + total["too_short"] == total["units"]
    seqs = [json.loads(x) for x in data.decode().splitlines()]
    assert len(seqs) == total["sequences"] and sum(len(s["text"].split()) for s in seqs) == total["words"]
    names = [f"original_transcripts/{n}" for n in ("Garvey.csv", "McMillan.csv", "Nelson.csv")]
    order = [s["source"] for s in seqs]
    assert sorted(set(order), key=names.index) == [n for n in names if n in order]
    assert order == sorted(order, key=names.index)  # sources in the given order, each packed separately
    # packing: every sequence fits the rule (kept units here are short utterances)
    assert all(len(s["text"].split()) * 1.2 < 128 for s in seqs)
    vocab = load_word_list(VOCAB_CSV)
    for s in seqs:
        assert all(w in vocab for w in check_words(s["text"]))
