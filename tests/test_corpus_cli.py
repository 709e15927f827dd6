"""The corpus command line, end to end through subprocesses: AO-CHILDES -> constrained corpus -> tokenizer
-> shards, and one clear error line (no traceback, nothing written) for each kind of bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from minilm_jax.data.shards import open_split

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or REPO.parent / "shared" / "data")
VOCAB_CSV = SHARED / "vocab" / "AOChildes_word_frequency.csv"
AOCHILDES = SHARED / "aochildes" / "original_transcripts"
SST2_DEV = SHARED / "glue" / "SST-2" / "dev.tsv"
needs_shared = pytest.mark.skipif(not (VOCAB_CSV.is_file() and AOCHILDES.is_dir() and SST2_DEV.is_file()),
                                  reason="shared data absent")
COMMANDS = ["vocab", "filter", "control", "train-tokenizer", "select-tokenizer", "shards", "subsets", "overlap"]


def cli(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MINILM_JAX_VOCAB", "MINILM_JAX_CACHE")}
    if cache is not None:
        env["MINILM_JAX_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "minilm_jax.corpus", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_for_every_command():
    result = cli("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in COMMANDS)
    for command in COMMANDS:
        result = cli(command, "--help")
        assert result.returncode == 0 and f"usage: python -m minilm_jax.corpus {command}" in result.stdout


@needs_shared
def test_aochildes_to_shards_end_to_end(tmp_path):
    corpus, tok, shards = tmp_path / "constrained", tmp_path / "tok", tmp_path / "shards"
    sources = [arg for n in ("Bliss.csv", "Nelson.csv") for arg in ("--source", f"aochildes:{AOCHILDES / n}")]
    result = cli("filter", *sources, "--unit", "sentence", "--vocab_path", str(VOCAB_CSV), "--out", str(corpus),
                 "--workers", "2", "--no_progress")
    assert result.returncode == 0, result.stderr
    report = json.loads((corpus / "report.json").read_text())
    assert "TOTAL" in result.stdout and str(report["total"]["kept"]) in result.stdout and "MB/s" in result.stdout
    assert report["total"]["kept"] > 0 and report["total"]["sequences"] > 0

    result = cli("train-tokenizer", "--corpus", f"corpus:{corpus}", "--out", str(tok), "--sizes", "300,500",
                 "--model_types", "bpe", "--sample", "1000", "--no_progress")
    assert result.returncode == 0, result.stderr
    assert (tok / "bpe-300.model").is_file() and (tok / "bpe-500.model").is_file()

    result = cli("select-tokenizer", "--tokenizers", str(tok), "--corpus", f"corpus:{corpus}", "--downstream",
                 f"tsv:{SST2_DEV}#column=sentence,limit=100", "--out", str(tmp_path / "sel"), "--sample", "300",
                 "--no_progress")
    assert result.returncode == 0, result.stderr
    recommended = json.loads((tmp_path / "sel" / "report.json").read_text())["recommended"]["bpe"]
    assert f"recommended: {{'bpe': {recommended}}}" in result.stdout

    result = cli("shards", "--corpus", f"corpus:{corpus}", "--tokenizer", str(tok / f"bpe-{recommended}.model"),
                 "--out", str(shards), "--valid", "10", "--test", "10", "--mode", "packed", "--no_progress")
    assert result.returncode == 0, result.stderr
    train = open_split(shards, "train", verify=True)
    assert train.tokens.shape[1] == 128 and train.segments is not None
    assert int(np.asarray(train.tokens)[:, 0].max()) == 0  # every row starts with <s>
    assert f"{train.num_sequences} rows" in result.stdout

    result = cli("overlap", "--shards", str(shards), "--tokenizer", str(tok / f"bpe-{recommended}.model"),
                 "--task", f"tsv:{SST2_DEV}#column=sentence,limit=50,name=sst2", "--json", str(tmp_path / "o.json"))
    assert result.returncode == 0, result.stderr
    overlap = json.loads((tmp_path / "o.json").read_text())["tasks"]["sst2"]
    assert 0 < overlap["occurrence_share"] <= 1 and f"{overlap['type_share']:.4f}" in result.stdout

    other = 500 if recommended == 300 else 300
    result = cli("overlap", "--shards", str(shards), "--tokenizer", str(tok / f"bpe-{other}.model"),
                 "--task", f"tsv:{SST2_DEV}#column=sentence,limit=50")
    assert_one_error_line(result, "tokenizer mismatch")

    result = cli("control", "--constrained", str(corpus), "--out", str(tmp_path / "control"), "--no_progress")
    assert result.returncode == 0, result.stderr
    control = json.loads((tmp_path / "control" / "report.json").read_text())
    assert control["total"]["units"] == report["total"]["kept"] - report["total"]["duplicates"]


def test_bad_inputs_give_one_error_line_and_write_nothing(tmp_path):
    vocab = tmp_path / "words.txt"
    vocab.write_text("dog\ncat\n")
    out = tmp_path / "out"
    base = ["--vocab_path", str(vocab), "--out", str(out), "--no_progress", "--workers", "1"]

    assert_one_error_line(cli("filter", "--source", f"text:{tmp_path / 'missing.txt'}", *base),
                          "corpus not found", "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    assert_one_error_line(cli("filter", "--source", f"text:{tmp_path / 'empty.txt'}", *base), "corpus is empty")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"dog cat\ncat \xc3\x28 dog\n")
    assert_one_error_line(cli("filter", "--source", f"text:{bad}", *base, "--on_decode_error", "fail"),
                          f"{bad}:2: undecodable bytes")
    wrong = tmp_path / "vocab.csv"
    wrong.write_text("id,token\n0,dog\n")
    assert_one_error_line(cli("filter", "--source", f"text:{bad}", "--vocab_path", str(wrong), "--out", str(out)),
                          "expected a 'word' column")
    assert_one_error_line(cli("vocab", "--offline", "--cache_dir", str(tmp_path / "cache")),
                          "unavailable offline", "--vocab_path")

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["dog cat bird fish"] * 30), model_writer=model,
                                   vocab_size=20, model_type="bpe", minloglevel=2)
    plain = tmp_path / "plain.model"
    plain.write_bytes(model.getvalue())
    (tmp_path / "texts.txt").write_text("dog cat\ncat dog\nbird\n")
    assert_one_error_line(cli("shards", "--corpus", f"text:{tmp_path / 'texts.txt'}", "--tokenizer", str(plain),
                              "--out", str(out), "--valid", "0", "--test", "0"),
                          "lacks special tokens: <pad>, <mask>")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # undecodable lines are skipped and counted by default
    result = cli("filter", "--source", f"text:{bad}", *base, "--unit", "sentence")
    assert result.returncode == 0 and f"skipped 1 undecodable line(s) (first at {bad}:2)" in result.stdout
