"""Reduced vocabularies: loading word lists, obtaining the AO-CHILDES file (cache, local download), top-N."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.vocab import (
    AOCHILDES_FILENAME,
    AOCHILDES_SHA256,
    load_word_list,
    obtain_aochildes_vocab,
    write_word_list,
)
from minilm_jax.corpus.words import top_words

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VOCAB_CSV = SHARED / "vocab" / AOCHILDES_FILENAME
needs_vocab = pytest.mark.skipif(not VOCAB_CSV.is_file(), reason="shared data (AO-CHILDES vocabulary) absent")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MINILM_JAX_VOCAB", raising=False)
    monkeypatch.delenv("MINILM_JAX_CACHE", raising=False)


@needs_vocab
def test_aochildes_csv_has_21037_lowercased_words():
    words = load_word_list(VOCAB_CSV)
    assert len(words) == 21037
    assert {"whats", "that", "wanna", "number", "true", "false"} <= words  # TRUE/FALSE are lowercased
    assert all(w == w.lower() for w in words)


def test_plain_word_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# comment\nDog\n\ncat\n  bird \n")
    assert load_word_list(path) == frozenset({"dog", "cat", "bird"})


def test_csv_with_wrong_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "vocab.csv"
    path.write_text("index,token,count\n0,dog,3\n")
    expected = r"header has columns \['index', 'token', 'count'\], expected a 'word' column"
    with pytest.raises(CorpusError, match=expected):
        load_word_list(path)


def test_empty_and_undecodable_word_lists(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="vocabulary file is empty"):
        load_word_list(empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"dog\ncat\n\xff\xfe\n")
    with pytest.raises(CorpusError, match=r"bad.txt:3: undecodable bytes"):
        load_word_list(bad)
    with pytest.raises(CorpusError, match="vocabulary file not found"):
        load_word_list(tmp_path / "missing.csv")


def test_write_word_list_round_trip_and_top_words(tmp_path):
    counts = top_words(["The dog saw the cat.", "the DOG ran", "a cat-nap in 1999"], 3)
    assert counts == [("the", 3), ("cat", 2), ("dog", 2)]
    path = write_word_list(tmp_path / "top.csv", counts)
    assert path.read_text().splitlines()[0] == ",word,frequency"
    assert load_word_list(path) == frozenset({"the", "cat", "dog"})


def test_user_path_and_env_var_win(tmp_path, monkeypatch):
    path = tmp_path / "mine.txt"
    path.write_text("dog\n")
    assert obtain_aochildes_vocab(path, cache_dir=tmp_path / "c", allow_download=False) == path
    monkeypatch.setenv("MINILM_JAX_VOCAB", str(path))
    assert obtain_aochildes_vocab(cache_dir=tmp_path / "c", allow_download=False) == path
    with pytest.raises(CorpusError, match="vocabulary file not found"):
        obtain_aochildes_vocab(tmp_path / "nope.csv")


def test_offline_without_cache_says_how_to_provide_it(tmp_path):
    with pytest.raises(CorpusError) as err:
        obtain_aochildes_vocab(cache_dir=tmp_path / "cache", allow_download=False)
    message = str(err.value)
    assert "--vocab_path" in message and "MINILM_JAX_VOCAB" in message and "MINILM_JAX_CACHE" in message
    assert not (tmp_path / "cache").exists()


def test_failed_download_is_one_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="could not download the AO-CHILDES vocabulary.*--vocab_path"):
        obtain_aochildes_vocab(cache_dir=tmp_path, url=(tmp_path / "absent.csv").as_uri())
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_download_with_wrong_checksum_is_not_cached(tmp_path):
    src = tmp_path / "served.csv"
    src.write_text(",word,frequency\n0,dog,1\n")
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match="expected " + "0" * 64):
        obtain_aochildes_vocab(cache_dir=cache, url=src.as_uri(), sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_download_from_file_url_goes_through_cache(tmp_path):
    src = tmp_path / "served.csv"
    src.write_text(",word,frequency\n0,dog,1\n1,cat,2\n")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    got = obtain_aochildes_vocab(cache_dir=cache, url=src.as_uri(), sha256=sha)
    assert got == cache / AOCHILDES_FILENAME and got.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [AOCHILDES_FILENAME]
    src.unlink()  # now served from the cache, even offline
    assert obtain_aochildes_vocab(cache_dir=cache, sha256=sha, allow_download=False) == got


@needs_vocab
def test_download_from_local_http_server_verifies_real_checksum(tmp_path, monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(VOCAB_CSV.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{AOCHILDES_FILENAME}"
        monkeypatch.setenv("MINILM_JAX_CACHE", str(tmp_path / "envcache"))
        got = obtain_aochildes_vocab(url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert got == tmp_path / "envcache" / AOCHILDES_FILENAME
    assert hashlib.sha256(got.read_bytes()).hexdigest() == AOCHILDES_SHA256
    assert len(load_word_list(got)) == 21037
