"""Text sources: spec parsing, local formats on real files, undecodable bytes, TFDS adapter."""

from __future__ import annotations

import csv
import itertools
import os
import re
import sys
import types
from pathlib import Path

import pytest

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.sources import ReadStats, SourceSpec, fingerprint, iter_documents

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
AOCHILDES = SHARED / "aochildes" / "original_transcripts"
WIKI_VALID = SHARED / "wikitext2" / "tokenized" / "wiki.valid.tokens"
needs_shared = pytest.mark.skipif(not AOCHILDES.is_dir() or not WIKI_VALID.is_file(), reason="shared data absent")


def test_spec_parsing_and_inference(tmp_path):
    spec = SourceSpec.parse("csv:/data/x.csv#column=sentence,name=cola")
    assert (spec.kind, spec.location, spec.option("column"), spec.name) == ("csv", "/data/x.csv", "sentence", "cola")
    tfds = SourceSpec.parse("tfds:huggingface:text-machine-lab/constrained_language#split=train,field=TEXT")
    assert tfds.kind == "tfds" and tfds.location == "huggingface:text-machine-lab/constrained_language"
    assert SourceSpec.parse(str(tmp_path / "a.jsonl")).kind == "jsonl"
    assert SourceSpec.parse(str(tmp_path)).kind == "textfiles"
    assert SourceSpec.parse(str(tmp_path / "b.txt")).kind == "text"
    spec = SourceSpec.parse("jsonl:/a/b.jsonl#field=t")
    assert SourceSpec.parse(str(spec)) == spec
    with pytest.raises(CorpusError, match="expected key=value"):
        SourceSpec.parse("text:/a.txt#oops")


def test_text_jsonl_csv_and_textfiles(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\n  second doc  \n")
    assert list(iter_documents(f"text:{tmp_path / 'a.txt'}")) == ["first doc", "second doc"]
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two", "x": 1}\n')
    assert list(iter_documents(f"jsonl:{tmp_path / 'a.jsonl'}")) == ["one", "two"]
    (tmp_path / "a.csv").write_text('id,body\n1,"hello, world"\n2,"multi\nline"\n')
    assert list(iter_documents(f"csv:{tmp_path / 'a.csv'}#column=body")) == ["hello, world", "multi\nline"]
    (tmp_path / "a.tsv").write_text("s\tlabel\nfoo bar\t1\n")
    assert list(iter_documents(f"tsv:{tmp_path / 'a.tsv'}#column=s")) == ["foo bar"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "2.txt").write_text("second file\n")
    (docs / "1.txt").write_text("first\nfile\n")
    assert list(iter_documents(f"textfiles:{docs}")) == ["first\nfile", "second file"]
    assert list(iter_documents(f"text:{tmp_path / 'a.txt'}#limit=1")) == ["first doc"]


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found"):
        list(iter_documents(f"text:{tmp_path / 'absent.txt'}"))
    (tmp_path / "a.csv").write_text("id,body\n1,x\n")
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: id, body\)"):
        list(iter_documents(f"csv:{tmp_path / 'a.csv'}#column=text"))
    with pytest.raises(CorpusError, match="needs #column=NAME"):
        list(iter_documents(f"csv:{tmp_path / 'a.csv'}"))
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"b.jsonl:2: malformed JSON"):
        list(iter_documents(f"jsonl:{tmp_path / 'b.jsonl'}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="corpus is empty"):
        list(iter_documents(f"textfiles:{empty}"))


def test_undecodable_lines_skipped_with_count_or_fatal(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good one\nbad \xff\xfe line\ngood two\n")
    stats = ReadStats()
    assert list(iter_documents(f"text:{path}", stats=stats)) == ["good one", "good two"]
    assert stats.undecodable_skipped == 1 and stats.first_undecodable == f"{path}:2"
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: undecodable bytes (not UTF-8) at column 5")):
        list(iter_documents(f"text:{path}", on_decode_error="fail"))


@needs_shared
def test_aochildes_gloss_column_and_grouping():
    path = AOCHILDES / "Garvey.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    glosses = [r["gloss"].strip() for r in rows if r["gloss"].strip()]
    assert list(iter_documents(f"aochildes:{path}")) == glosses
    grouped = list(iter_documents(f"aochildes:{path}#group_by=transcript_id"))
    expected = [" ".join(g["gloss"].strip() for g in group if g["gloss"].strip())
                for _, group in itertools.groupby(rows, key=lambda r: r["transcript_id"])]
    assert grouped == [e for e in expected if e]
    assert len(grouped) < len(glosses)


@needs_shared
def test_aochildes_folder_reads_csvs_in_sorted_order():
    spec = SourceSpec.parse(f"aochildes:{AOCHILDES}")
    entry = fingerprint(spec)
    names = [Path(f["path"]).name for f in entry["files"]]
    assert names == sorted(names) and "0_README.txt" not in names and len(names) == 21
    assert spec.name == "original_transcripts"


@needs_shared
def test_wikitext_articles():
    titles = [line for line in WIKI_VALID.read_text(encoding="utf-8").splitlines()
              if line.startswith(" = ") and not line.startswith(" = = ")]
    articles = list(iter_documents(f"wikitext:{WIKI_VALID}"))
    assert len(articles) == len(titles)
    assert [a.splitlines()[0] for a in articles] == [t.strip() for t in titles]
    assert articles[0].startswith("= Homarus gammarus =\nHomarus gammarus , known as the European lobster")


def test_tfds_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(CorpusError, match="tensorflow-datasets is not installed"):
        list(iter_documents("tfds:huggingface:text-machine-lab/constrained_language#field=TEXT"))


def test_tfds_data_source_adapter(monkeypatch):
    calls = {}

    def data_source(name, split, **kwargs):
        calls.update(name=name, split=split, **kwargs)
        return [{"TEXT": b"caf\xc3\xa9 one", "id": 1}, {"TEXT": b"  "}, {"TEXT": "two"}]

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source))
    spec = "tfds:huggingface:text-machine-lab/constrained_language#split=validation,field=TEXT,data_dir=/d"
    assert list(iter_documents(spec)) == ["café one", "two"]
    assert calls == {"name": "huggingface:text-machine-lab/constrained_language", "split": "validation",
                     "data_dir": "/d"}
    with pytest.raises(CorpusError, match="no feature 'text'"):
        list(iter_documents("tfds:x"))


def test_headerless_glue_tsv_by_column_index(shared_data, tmp_path):
    cola = shared_data("glue", "CoLA", "dev.tsv")  # no header row: source, label, -, sentence
    docs = list(iter_documents(f"tsv:{cola}#header=false,column=3"))
    assert len(docs) == 1043 and docs[0] == "The sailors rode the breeze clear of the rocks."
    with pytest.raises(CorpusError, match=r"header=false needs column=<0-based index>"):
        list(iter_documents(f"tsv:{cola}#header=false,column=sentence"))
    with pytest.raises(CorpusError, match=r"takes #header=false,column=<0-based index>"):
        list(iter_documents(f"tsv:{cola}#column=sentence"))
    with pytest.raises(CorpusError, match="header must be true or false"):
        list(iter_documents(f"tsv:{cola}#header=no,column=3"))
    # GLUE TSV never quotes: a '"' opening a sentence is text, not a field spanning lines.
    (tmp_path / "q.tsv").write_text('sentence\tlabel\n" quoted start\t1\nnext line\t0\n')
    assert list(iter_documents(f"tsv:{tmp_path / 'q.tsv'}#column=sentence")) == [
        '" quoted start', "next line"]
