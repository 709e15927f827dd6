"""Where corpora and models come from, pinned on tiny local stand-ins (never the network): the
documents, raw byte counts and undecodable-line locations of text sources, JSONL/CSV/TSV/WikiText
reading rules, ``limit=0``, source fingerprints and their re-check, hub Parquet columns, split
matching and pinned revisions, ``hf-file:`` placement, the ``fetch`` summary, stage manifests'
checksums and word counts, and the encoder registry's library/user split and refusals."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest

from minilm_jax.corpus import hub
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.manifest import (JsonlWriter, corpus_sequences_file, read_stage_manifest,
                                        write_stage_manifest)
from minilm_jax.corpus.sources import (ReadStats, SourceSpec, check_fingerprint, fingerprint,
                                       iter_documents)

REPO_ID = "lab/tiny"


def _docs(spec: str, **kw) -> tuple[list[str], ReadStats]:
    stats = ReadStats()
    return list(iter_documents(spec, stats=stats, **kw)), stats


# ------------------------------------------------------------------------------ local sources
def test_text_source_reads_every_line_and_counts_raw_bytes(tmp_path):
    """BOM dropped, blank lines skipped, the unterminated last line kept, bytes = file size."""
    data = (b"\xef\xbb\xbfcaf\xc3\xa9 one\n\n   \nbad \xff\n  two  \nworse \xfe\nlast")
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    docs, stats = _docs(f"text:{path}")
    assert docs == ["café one", "two", "last"]
    assert stats.documents == 3 and stats.bytes == len(data)  # every raw byte, skipped ones too
    assert stats.undecodable_skipped == 2 and stats.first_undecodable == f"{path}:4"


def test_textfiles_strip_the_bom_skip_hidden_files_and_locate_bad_bytes(tmp_path):
    """One document per visible file; an undecodable file is located at its 1-based line."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\xef\xbb\xbffirst\nfile\n")
    (folder / ".hidden.swp").write_text("editor junk\n")
    (folder / "b.txt").write_bytes(b"ok\nstill ok\nbad \xff\n")
    docs, stats = _docs(f"textfiles:{folder}")
    assert docs == ["first\nfile"]
    assert stats.first_undecodable == f"{folder / 'b.txt'}:3"
    assert stats.bytes == len(b"\xef\xbb\xbffirst\nfile\n") + len(b"ok\nstill ok\nbad \xff\n")


def test_jsonl_refuses_a_missing_field_and_skips_non_string_values(tmp_path):
    """A number or null is no document; a line without the field is an error, not a skip."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n{"text": 5}\n{"text": null}\n\n{"text": " two "}\n')
    assert _docs(f"jsonl:{path}")[0] == ["one", "two"]
    path.write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl:2: no field 'text'"):
        list(iter_documents(f"jsonl:{path}"))


def test_csv_skips_short_rows_and_groups_only_consecutive_rows(tmp_path):
    """A row too short for the column is dropped; group_by joins runs of equal keys only."""
    path = tmp_path / "a.csv"
    path.write_text("key,body\nA,x\n2\nA,y\nB,z\nA,w\n")
    assert _docs(f"csv:{path}#column=body")[0] == ["x", "y", "z", "w"]
    # the short row is dropped; groups A(x, y) B(z) A(w) by hand, in file order
    assert _docs(f"csv:{path}#column=body,group_by=key")[0] == ["x y", "z", "w"]


def test_headerless_tsv_takes_a_zero_based_column_and_a_folder_only_its_tsv_files(tmp_path):
    """column=2 is the third field; a folder of a tsv: source reads its *.tsv files only."""
    folder = tmp_path / "glue"
    folder.mkdir()
    (folder / "a.tsv").write_text("s1\t0\tfirst sentence\ns2\t1\tsecond one\n")
    (folder / "notes.txt").write_text("x\ty\tnot a row\n")
    assert _docs(f"tsv:{folder}#header=false,column=2")[0] == ["first sentence", "second one"]


def test_wikitext_splits_on_titles_only_and_keeps_the_last_article(tmp_path):
    """`` = = Sub = = `` stays inside its article; the article that ends the file is kept."""
    path = tmp_path / "wiki.tokens"
    path.write_text(" = Alpha = \n\n a line \n = = Sub = = \n more \n = Beta = \n\n last line \n")
    assert _docs(f"wikitext:{path}")[0] == ["= Alpha =\na line\n= = Sub = =\nmore",
                                             "= Beta =\nlast line"]


def test_limit_zero_reads_no_document(tmp_path):
    """limit=N is the first N documents, N=0 included."""
    path = tmp_path / "a.txt"
    path.write_text("a\nb\n")
    docs, stats = _docs(f"text:{path}#limit=0")
    assert docs == [] and stats.documents == 0
    assert _docs(f"text:{path}#limit=1")[0] == ["a"]


def test_option_order_does_not_change_a_source(tmp_path):
    """Options are stored sorted: the same source has one spec string (recorded in manifests)."""
    one = SourceSpec.parse(f"text:{tmp_path}/a.txt#name=x,limit=2")
    two = SourceSpec.parse(f"text:{tmp_path}/a.txt#limit=2,name=x")
    assert one == two and str(one) == str(two) == f"text:{tmp_path}/a.txt#limit=2,name=x"


def test_fingerprint_hashes_every_byte_and_a_changed_file_is_refused(tmp_path):
    """sha256 over the whole file (beyond the 1 MiB read block) against hashlib."""
    path = tmp_path / "big.txt"
    data = b"word " * 300_000  # 1.5 MB: two read blocks
    path.write_bytes(data)
    entry = fingerprint(SourceSpec.parse(f"text:{path}"))
    assert entry["files"] == [{"path": str(path), "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}]
    check_fingerprint(entry)  # unchanged: accepted
    path.write_bytes(data[:-1] + b"X")  # same path and size, last byte changed
    with pytest.raises(CorpusError, match="changed since it was recorded"):
        check_fingerprint(entry)


# ------------------------------------------------------------------------------ hub sources
def _parquet(path, columns: dict) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_hub_reads_the_named_column_without_nulls_or_blanks(tmp_path):
    """TEXT is the second column; None and blank values are skipped; bytes of the kept texts."""
    texts = ["  alpha beta ", None, "   ", "gamma", "δέλτα"]
    _parquet(tmp_path / REPO_ID / "data" / "train-00000-of-00001.parquet",
             {"id": ["i0", "i1", "i2", "i3", "i4"], "TEXT": texts})
    docs, stats = _docs(f"hf:{REPO_ID}#split=train,field=TEXT,mirror={tmp_path}")
    assert docs == ["alpha beta", "gamma", "δέλτα"]
    assert stats.bytes == sum(len(t.strip().encode()) for t in texts if t is not None)


def test_hub_split_matching_takes_only_the_split_asked_for(tmp_path):
    """``train`` is not ``train_extra``; a split named only in a file name gets that file alone."""
    data = tmp_path / REPO_ID / "data"
    _parquet(data / "train-00000-of-00001.parquet", {"text": ["t"]})
    _parquet(data / "train_extra-00000-of-00001.parquet", {"text": ["e"]})
    _parquet(tmp_path / REPO_ID / "other" / "holdout.parquet", {"text": ["h"]})
    names = [p.name for p in hub.dataset_files(REPO_ID, "train", mirror=str(tmp_path))]
    assert names == ["train-00000-of-00001.parquet"]
    names = [p.name for p in hub.dataset_files(REPO_ID, "holdout", mirror=str(tmp_path))]
    assert names == ["holdout.parquet"]


def test_a_sources_pinned_revision_reaches_the_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _parquet(tmp_path / REPO_ID / "data" / "train-00000-of-00001.parquet", {"text": ["t"]})
    calls = []

    def snapshot_download(repo_id, **kwargs):  # the network's stand-in
        calls.append(kwargs["revision"])
        return str(tmp_path / repo_id)

    def list_repo_files(repo_id, **kwargs):
        calls.append(kwargs["revision"])
        return ["data/train-00000-of-00001.parquet"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    assert _docs(f"hf:{REPO_ID}#split=train,revision=v1.2")[0] == ["t"]
    assert calls == ["v1.2", "v1.2"]  # the file list and the download


def test_hf_file_keeps_its_subfolder_and_the_sources_mirror_wins(tmp_path, monkeypatch):
    own, env = tmp_path / "own", tmp_path / "env"
    for root, text in ((own, "own\n"), (env, "env\n")):
        (root / "o" / "m" / "sub").mkdir(parents=True)
        (root / "o" / "m" / "sub" / "vocab.txt").write_text(text)
    monkeypatch.setenv(hub.MIRROR_ENV, str(env))
    out = hub.fetch_file(f"o/m/sub/vocab.txt#mirror={own}", str(tmp_path / "out"))
    assert out == tmp_path / "out" / "sub" / "vocab.txt" and out.read_text() == "own\n"
    assert hub.fetch_file("o/m/sub/vocab.txt").read_text() == "env\n"


def test_hf_file_passes_its_revision_to_the_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):  # the network's stand-in
        calls.append((repo_id, filename, kwargs["revision"]))
        return str(tmp_path / "x")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    hub.fetch_file("o/m/sub/vocab.txt#revision=abc")
    assert calls == [("o/m", "sub/vocab.txt", "abc")]


def test_fetch_reports_the_size_of_every_file_and_refuses_other_kinds(tmp_path, monkeypatch,
                                                                         capsys):
    from minilm_jax.corpus.__main__ import cmd_fetch

    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    files[0].write_bytes(b"x" * 300_000)
    files[1].write_bytes(b"y" * 200_000)
    asked = []
    monkeypatch.setattr(hub, "files_of", lambda loc, opts: asked.append(loc) or files)
    cmd_fetch(argparse.Namespace(sources=[f"hf:{REPO_ID}#split=train"], out=None))
    assert capsys.readouterr().out.split("\t")[1] == f"2 Parquet file(s), 0.5 MB, in {tmp_path}\n"
    with pytest.raises(CorpusError, match="fetch takes hf:"):
        cmd_fetch(argparse.Namespace(sources=[f"text:{files[0]}"], out=None))
    assert asked == [REPO_ID]


# ------------------------------------------------------------------------------ manifests
def _stage(tmp_path, stage: str = "filter"):
    out = tmp_path / "stage"
    out.mkdir(exist_ok=True)
    (out / "sequences.jsonl").write_text('{"text": "a b"}\n')
    (out / "report.json").write_text("{}\n")
    return out, write_stage_manifest(out, stage, inputs={}, parameters={}, counts={})


def test_a_manifest_records_each_outputs_sha256_and_a_rewrite_stays_valid(tmp_path):
    out, manifest = _stage(tmp_path)
    assert manifest["outputs"] == {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in (("report.json", b"{}\n"), ("sequences.jsonl", b'{"text": "a b"}\n'))}
    write_stage_manifest(out, "filter", inputs={}, parameters={}, counts={"n": 1})
    assert read_stage_manifest(out, ("filter",))["counts"] == {"n": 1}


def test_a_corpus_source_refuses_a_modified_or_missing_output(tmp_path):
    out, _ = _stage(tmp_path)
    assert list(iter_documents(f"corpus:{out}")) == ["a b"]
    (out / "sequences.jsonl").write_text('{"text": "a c"}\n')  # modified after it was written
    with pytest.raises(CorpusError, match="does not match the checksum"):
        corpus_sequences_file(out)
    out, _ = _stage(tmp_path)
    (out / "report.json").unlink()
    with pytest.raises(CorpusError, match="report.json is missing"):
        corpus_sequences_file(out)


def test_a_stage_of_another_kind_is_refused(tmp_path):
    out, _ = _stage(tmp_path, "subsets")
    with pytest.raises(CorpusError, match="output of stage 'subsets', expected filter or control"):
        corpus_sequences_file(out)


def test_jsonl_writer_counts_whitespace_separated_words(tmp_path):
    with JsonlWriter(tmp_path / "s.jsonl") as writer:
        writer.write("a  b\nc", n=1)
        writer.write(" d ")
    assert (writer.lines, writer.words) == (2, 4)  # a, b, c and d by hand
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert rows == [{"text": "a  b\nc", "n": 1}, {"text": " d "}]


# ------------------------------------------------------------------------------ encoder registry
class _Refusing:
    """A user's variant: its check_fields refuses share_every=3; its constructor builds anyway."""

    config_fields = {"share_every": 1, "gate": 0.5}

    def __init__(self, cfg, *, rngs):
        self.cfg = cfg

    @classmethod
    def check_fields(cls, cfg):
        if cfg.extra_value("share_every") == 3:
            raise ValueError("share_every=3 does not divide num_layers=1")


def test_a_registered_user_variant_has_its_fields_checked(monkeypatch):
    from flax import nnx

    from minilm_jax.model import registry
    from minilm_jax.model.config import ConfigError, ModelConfig

    monkeypatch.setitem(registry.ENCODERS, "audit_refusing", _Refusing)
    assert not registry.is_library_encoder("audit_refusing")
    ok = ModelConfig(arch="audit_refusing", extra=(("gate", 0.5), ("share_every", 1)))
    assert isinstance(registry.build_encoder(ok, nnx.Rngs(0)), _Refusing)
    bad = ModelConfig(arch="audit_refusing", extra=(("gate", 0.5), ("share_every", 3)))
    expected = ("model.arch=audit_refusing (model.extra.gate=0.5, model.extra.share_every=3): "
                "share_every=3 does not divide num_layers=1")
    with pytest.raises(ConfigError) as err:
        registry.check_variant_fields(bad)
    assert str(err.value) == expected
    with pytest.raises(ConfigError) as err:
        registry.build_encoder(bad, nnx.Rngs(0))
    assert str(err.value) == expected


def test_only_the_librarys_own_package_counts_as_library():
    from minilm_jax.model import registry

    assert registry.is_library_encoder("roberta")
    assert registry.is_library_encoder("minilm_jax.model.encoder:TransformerEncoder")
    assert not registry.is_library_encoder("minilm_jax_lab.encoders:Gated")
    assert not registry.is_library_encoder("minilm_jaxx:Gated")


def test_an_import_path_to_something_not_callable_is_refused():
    from minilm_jax.model import registry
    from minilm_jax.model.config import ConfigError

    with pytest.raises(ConfigError, match="model.arch='math:pi': math has no encoder 'pi'"):
        registry.encoder_factory("math:pi")
