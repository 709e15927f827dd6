"""The unconstrained control: sampling to match the constrained corpus, determinism, stale inputs."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from minilm_jax.corpus.constrained import FilterConfig
from minilm_jax.corpus.control import BottomK, run_control
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.filter_stage import run_filter
from minilm_jax.corpus.sources import SourceSpec

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VOCAB_CSV = SHARED / "vocab" / "AOChildes_word_frequency.csv"
WIKI = SHARED / "wikitext2" / "tokenized"
needs_shared = pytest.mark.skipif(not (VOCAB_CSV.is_file() and WIKI.is_dir()), reason="shared data absent")


def test_bottom_k_matches_brute_force():
    rng = random.Random(1)
    items = [(rng.random(), i, 0, f"t{i}", rng.randint(1, 9)) for i in range(500)]
    for target, by_words in ((37, False), (800, True)):
        chooser = BottomK(target)
        for key, doc, unit, text, words in items:
            chooser.push(key, doc, unit, text, words, words if by_words else 1)
        ranked = sorted(items)
        expected, total = [], 0
        for key, doc, unit, text, words in ranked:
            if total >= target:
                break
            expected.append(doc)
            total += words if by_words else 1
        assert [doc for doc, *_ in chooser.by_key()] == expected
        assert sorted(doc for doc, *_ in chooser.items()) == sorted(expected)


def _make_constrained(tmp_path: Path) -> tuple[Path, Path]:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["the", "dog", "cat", "sat", "ran", "big"]) + "\n")
    rng = random.Random(0)
    words = ["the", "dog", "cat", "sat", "ran", "big", "zebra", "moon"]
    src = tmp_path / "docs.txt"
    src.write_text("\n".join(" ".join(rng.choice(words[:6] if i % 3 else words) for _ in range(rng.randint(8, 40)))
                             for i in range(300)) + "\n")
    out = tmp_path / "constrained"
    run_filter([SourceSpec.parse(f"text:{src}#name=docs")], vocab, out, cfg=FilterConfig(window=10, stride=5,
               min_words=4))
    return out, src


def test_control_matches_units_and_words_and_is_deterministic(tmp_path):
    constrained, _ = _make_constrained(tmp_path)
    report_c = json.loads((constrained / "report.json").read_text())["sources"]["docs"]
    one = run_control(constrained, tmp_path / "c1", workers=1, seed=3)
    two = run_control(constrained, tmp_path / "c2", workers=2, seed=3)
    assert (tmp_path / "c1" / "sequences.jsonl").read_bytes() == (tmp_path / "c2" / "sequences.jsonl").read_bytes()
    entry = one["sources"]["docs"]
    assert entry["units"] == entry["target"] == report_c["kept"] - report_c["duplicates"]
    assert two["sources"] == one["sources"]
    other = run_control(constrained, tmp_path / "c3", seed=4)
    assert (tmp_path / "c3" / "sequences.jsonl").read_bytes() != (tmp_path / "c1" / "sequences.jsonl").read_bytes()
    assert other["sources"]["docs"]["units"] == entry["units"]
    words = run_control(constrained, tmp_path / "w", match="words")["sources"]["docs"]
    # the smallest-key sample whose words first reach the constrained corpus's words (windows <= 10 words)
    assert words["duplicates"] == 0
    assert report_c["words"] <= words["words"] < report_c["words"] + 10
    manifest = json.loads((tmp_path / "c1" / "manifest.json").read_text())
    assert manifest["stage"] == "control" and manifest["parameters"]["seed"] == 3


def test_control_refuses_changed_sources_and_wrong_stage(tmp_path):
    constrained, src = _make_constrained(tmp_path)
    run_control(constrained, tmp_path / "ok")
    with pytest.raises(CorpusError, match="is the output of stage 'control', expected filter"):
        run_control(tmp_path / "ok", tmp_path / "bad")
    src.write_text(src.read_text() + "the dog sat\n")
    with pytest.raises(CorpusError, match="changed since it was recorded"):
        run_control(constrained, tmp_path / "stale")
    assert not (tmp_path / "stale").exists()
    (constrained / "sequences.jsonl").write_text("tampered\n")
    with pytest.raises(CorpusError, match="does not match the checksum in its manifest"):
        run_control(constrained, tmp_path / "tampered")


@needs_shared
def test_control_on_wikitext_windows_matches_the_constrained_size(tmp_path):
    src = SourceSpec.parse(f"wikitext:{WIKI / 'wiki.valid.tokens'}")
    constrained = tmp_path / "constrained"
    # a lenient window rule so that real text keeps some windows
    report = run_filter([src], VOCAB_CSV, constrained, cfg=FilterConfig(window=20, stride=10, min_words=12))
    kept = report["total"]["kept"] - report["total"]["duplicates"]
    assert kept > 0
    control = run_control(constrained, tmp_path / "control")
    assert control["total"]["units"] == kept
    texts = [json.loads(x)["text"] for x in (tmp_path / "control" / "sequences.jsonl").read_text().splitlines()]
    assert len(texts) == control["total"]["sequences"]
    assert any("<unk>" in t for t in texts)  # not vocabulary-filtered
