"""hf: corpus sources against a local directory laid out like a Hugging Face dataset repository
(offline), and the download call they make when no mirror is given."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shared_path
from minilm_jax.corpus import hub
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.sources import iter_documents

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

REPO_ID = "text-machine-lab/constrained_language"


@pytest.fixture
def mirror(tmp_path) -> tuple[Path, list[str]]:
    """The hub layout of a dataset with two train shards and a validation file (column TEXT),
    holding real WikiText-2 lines."""
    lines = [line.strip() for line in shared_path("wikitext2", "tokenized", "wiki.valid.tokens")
             .read_text(encoding="utf-8").splitlines() if len(line.split()) > 8][:600]
    data = tmp_path / "hub" / REPO_ID / "data"
    data.mkdir(parents=True)
    for name, rows in (("train-00000-of-00002", lines[:250]), ("train-00001-of-00002", lines[250:500]),
                       ("validation-00000-of-00001", lines[500:])):
        pq.write_table(pa.table({"TEXT": rows, "id": list(range(len(rows)))}),
                       data / f"{name}.parquet")
    (tmp_path / "hub" / REPO_ID / "README.md").write_text("dataset card\n")
    return tmp_path / "hub", lines


def test_a_hub_dataset_split_streams_in_file_order(mirror):
    root, lines = mirror
    texts = list(iter_documents(f"hf:{REPO_ID}#split=train,field=TEXT,mirror={root}"))
    assert texts == lines[:500]
    valid = list(iter_documents(f"hf:{REPO_ID}#split=validation,field=TEXT,mirror={root}"))
    assert valid == lines[500:]
    with pytest.raises(CorpusError, match="no column 'text' \\(columns: TEXT, id\\)"):
        list(iter_documents(f"hf:{REPO_ID}#split=train,mirror={root}"))
    with pytest.raises(CorpusError, match="no Parquet files for split 'test'"):
        list(iter_documents(f"hf:{REPO_ID}#split=test,field=TEXT,mirror={root}"))


def hub_stand_in(monkeypatch, root: Path, listing: list[str] | None) -> list[tuple]:
    """The network's stand-in: the repository's file list (``listing``; None: offline, the list
    cannot be read) and its snapshot (``root``/REPO); returns the calls made."""
    import huggingface_hub

    calls = []

    def list_repo_files(repo_id, **kwargs):
        calls.append(("list", repo_id, kwargs))
        if listing is None:
            raise ConnectionError("offline")
        return listing

    def snapshot_download(repo_id, **kwargs):
        calls.append(("download", repo_id, kwargs))
        return str(root / repo_id)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    return calls


TRAIN = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]


def test_without_a_mirror_only_the_splits_files_are_downloaded_from_the_hub(mirror, monkeypatch):
    root, lines = mirror
    calls = hub_stand_in(monkeypatch, root, [*TRAIN, "data/validation-00000-of-00001.parquet",
                                             "README.md"])
    files = hub.dataset_files(REPO_ID, "train", revision="abc123")
    assert files == [root / REPO_ID / name for name in TRAIN]
    [(first, repo_id, listed), (second, _, kwargs)] = calls
    assert (first, second) == ("list", "download") and repo_id == REPO_ID
    assert listed == {"repo_type": "dataset", "revision": "abc123"}
    assert kwargs == {"repo_type": "dataset", "revision": "abc123", "allow_patterns": TRAIN}


def test_offline_the_cached_snapshot_is_matched(mirror, monkeypatch):
    root, lines = mirror
    calls = hub_stand_in(monkeypatch, root, None)
    assert hub.dataset_files(REPO_ID, "train") == [root / REPO_ID / name for name in TRAIN]
    assert [c[0] for c in calls] == ["list", "download"]
    assert calls[1][2]["allow_patterns"] == hub.split_patterns("train")


def test_a_split_of_several_configurations_is_refused_before_any_download(tmp_path, monkeypatch):
    """``en/train-*`` and ``fr/train-*``: ``split=train`` names no configuration (its files would
    be every language's); ``split=en/train`` reads English only, in a mirror and from the hub."""
    repo = tmp_path / "hub" / REPO_ID
    for config, rows in (("en", ["one", "two"]), ("fr", ["un", "deux"])):
        (repo / config).mkdir(parents=True)
        pq.write_table(pa.table({"text": rows}), repo / config / "train-00000-of-00001.parquet")
    message = (r"split 'train' matches the files of several configurations \(en, fr\); "
               r"name one as split=en/train")
    with pytest.raises(CorpusError, match=message):
        hub.dataset_files(REPO_ID, "train", mirror=str(tmp_path / "hub"))
    assert list(iter_documents(f"hf:{REPO_ID}#split=en/train,mirror={tmp_path / 'hub'}")) == [
        "one", "two"]
    listing = ["en/train-00000-of-00001.parquet", "fr/train-00000-of-00001.parquet"]
    calls = hub_stand_in(monkeypatch, tmp_path / "hub", listing)
    with pytest.raises(CorpusError, match=message):
        hub.dataset_files(REPO_ID, "train")
    assert [c[0] for c in calls] == ["list"]  # nothing downloaded
    assert hub.dataset_files(REPO_ID, "en/train") == [repo / listing[0]]
    assert calls[-1][2]["allow_patterns"] == listing[:1]


def test_fetch_then_build_shards_from_the_hub_source(mirror, tmp_path):
    root, lines = mirror
    env = {**os.environ, hub.MIRROR_ENV: str(root), "JAX_PLATFORMS": "cpu"}
    source = f"hf:{REPO_ID}#split=train,field=TEXT"

    def corpus(*args):
        return subprocess.run([sys.executable, "-m", "minilm_jax.corpus", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    fetched = corpus("fetch", source)
    assert fetched.returncode == 0, fetched.stderr
    assert "2 Parquet file(s)" in fetched.stdout
    tok = corpus("train-tokenizer", "--corpus", source, "--out", str(tmp_path / "tok"),
                 "--sizes", "300", "--no_progress")
    assert tok.returncode == 0, tok.stderr[-2000:]
    shards = corpus("shards", "--corpus", source, "--tokenizer", str(tmp_path / "tok" / "bpe-300.model"),
                    "--out", str(tmp_path / "shards"), "--seq_len", "64", "--valid", "0.1",
                    "--no_progress")
    assert shards.returncode == 0, shards.stderr[-2000:]
    import json
    counts = json.loads((tmp_path / "shards" / "manifest.json").read_text())["source"]["counts"]
    assert sum(c["texts"] for c in counts.values()) == 500  # every train text of both files
    missing = corpus("fetch", "hf-file:google-bert/bert-base-uncased/vocab.txt")
    assert missing.returncode == 2 and missing.stderr.startswith("error: hub mirror has no")


def test_study_b_full_scale_data_path_against_a_hub_stand_in(tmp_path):
    """launch/study_b.sh STUDY_B_FULL=1's data steps: English Wikipedia (wikimedia/wikipedia,
    folder 20231101.en) and bert-base-uncased's vocab.txt from a mirror laid out like the hub ->
    nested article subsets of the first 128 tokens with the BERT vocabulary ([PAD]=0)."""
    paragraphs = [line.strip() for line in shared_path("wikitext2", "tokenized", "wiki.valid.tokens")
                  .read_text(encoding="utf-8").splitlines() if len(line.split()) > 20][:120]
    wiki = tmp_path / "hub" / "wikimedia" / "wikipedia" / "20231101.en"
    wiki.mkdir(parents=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(120)], "title": ["t"] * 120,
                             "text": paragraphs}), wiki / "train-00000-of-00001.parquet")
    words = sorted({w for p in paragraphs for w in p.lower().split() if w.isalpha()})
    bert = tmp_path / "hub" / "google-bert" / "bert-base-uncased"
    bert.mkdir(parents=True)
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
             + list("abcdefghijklmnopqrstuvwxyz0123456789.,;:'\"()-@=") + words
             + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"])
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    env = {**os.environ, hub.MIRROR_ENV: str(tmp_path / "hub"), "JAX_PLATFORMS": "cpu"}
    source = "hf:wikimedia/wikipedia#split=20231101.en,field=text"

    def corpus(*args):
        return subprocess.run([sys.executable, "-m", "minilm_jax.corpus", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    fetched = corpus("fetch", source, "hf-file:google-bert/bert-base-uncased/vocab.txt",
                     "--out", str(tmp_path / "bert"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "bert" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:1] == ["[PAD]"]
    built = corpus("subsets", "--corpus", source, "--tokenizer", str(tmp_path / "bert" / "vocab.txt"),
                   "--out", str(tmp_path / "subsets"), "--sizes", "40,100", "--valid", "10",
                   "--seq_len", "128", "--no_progress")
    assert built.returncode == 0, built.stderr[-2000:]
    import json

    import numpy as np
    manifest = json.loads((tmp_path / "subsets" / "n100" / "manifest.json").read_text())
    assert manifest["pad_id"] == 0 and manifest["splits"]["train"]["num_sequences"] == 100
    rows = np.load(tmp_path / "subsets" / "n100" / "train.npy")
    assert rows.shape == (100, 128) and (rows[:, 0] == 101).all()  # [CLS] opens every article
    small = np.load(tmp_path / "subsets" / "n40" / "train.npy")
    assert (small == rows[:40]).all()  # nested: the smaller subset is the larger one's head
