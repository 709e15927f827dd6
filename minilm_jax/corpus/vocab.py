"""Reduced vocabularies: the AO-CHILDES word list (obtained at run time), word-list files, top-N words.

The AO-CHILDES vocabulary (21,037 words, Deshpande et al. 2023) may not be committed to the project.
:func:`obtain_aochildes_vocab` finds it, in order: a user-given path, ``$MINILM_JAX_VOCAB``, the cache
(``$MINILM_JAX_CACHE`` or ``~/.cache/minilm_jax``), or a download from the authors' repository at a
pinned commit, verified against a sha256 and written to a temporary name before being renamed into
the cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from minilm_jax.corpus.errors import CorpusError

AOCHILDES_URL = (
    "https://raw.githubusercontent.com/text-machine-lab/mini_bert/"
    "c801bc04ac4f061bf22513267dec86251ab508ba/data/vocabulary/AOChildes_word_frequency.csv"
)
AOCHILDES_SHA256 = "b9eff95215e25f517a66d7d42d7803e809d5a2c8f601155abb5ecff1171ed06d"
AOCHILDES_FILENAME = "AOChildes_word_frequency.csv"
CACHE_ENV = "MINILM_JAX_CACHE"
VOCAB_ENV = "MINILM_JAX_VOCAB"

HOW_TO_PROVIDE = (
    f"pass --vocab_path PATH (a copy of {AOCHILDES_FILENAME}), set {VOCAB_ENV}=PATH, or put the file "
    f"in the cache folder (${CACHE_ENV}, default ~/.cache/minilm_jax)"
)


def default_cache_dir() -> Path:
    """``$MINILM_JAX_CACHE`` if set, else ``~/.cache/minilm_jax``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minilm_jax"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_verified(url: str, dest: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, checking its sha256 before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 16):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha256:
            raise CorpusError(
                f"download from {url} has sha256 {digest.hexdigest()}, expected {sha256}; "
                f"not cached. {HOW_TO_PROVIDE}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CorpusError(f"could not download the AO-CHILDES vocabulary from {url} ({err}); "
                          f"{HOW_TO_PROVIDE}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def obtain_aochildes_vocab(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    url: str = AOCHILDES_URL,
    sha256: str = AOCHILDES_SHA256,
) -> Path:
    """Return a local path to the AO-CHILDES vocabulary CSV (see the module docstring for the order)."""
    if path is None and os.environ.get(VOCAB_ENV):
        path = os.environ[VOCAB_ENV]
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise CorpusError(f"vocabulary file not found: {given}")
        return given
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / AOCHILDES_FILENAME
    if cached.is_file() and _sha256_file(cached) == sha256:
        return cached
    if not allow_download:
        why = "the cached copy has the wrong checksum" if cached.is_file() else "it is not cached"
        raise CorpusError(f"AO-CHILDES vocabulary unavailable offline ({why} in {cache}); {HOW_TO_PROVIDE}")
    return download_verified(url, cached, sha256)


def _read_text_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"vocabulary file not found: {path}") from None
    except IsADirectoryError:
        raise CorpusError(f"vocabulary path is a directory, not a file: {path}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: undecodable bytes in vocabulary file (not UTF-8)") from None
    return text.splitlines()


def load_word_list(path: str | os.PathLike) -> frozenset[str]:
    """Words of a vocabulary file, lowercased.

    Accepted formats: a CSV whose header has a ``word`` column (the AO-CHILDES file: ``,word,frequency``),
    or a plain list with one word per line (blank lines and lines starting with ``#`` ignored).
    A CSV (``.csv`` name, or a comma in the first line) without a ``word`` column is an error.
    """
    path = Path(path).expanduser()
    lines = _read_text_lines(path)
    if not any(line.strip() for line in lines):
        raise CorpusError(f"vocabulary file is empty: {path}")
    first = lines[0]
    if path.suffix.lower() in (".csv", ".tsv") or "," in first or "\t" in first:
        delimiter = "\t" if (path.suffix.lower() == ".tsv" or "\t" in first) else ","
        rows = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
        header = [col.strip().lower() for col in next(rows)]
        if "word" not in header:
            raise CorpusError(
                f"vocabulary file {path}: header has columns {header}, expected a 'word' column "
                f"(AO-CHILDES format ',word,frequency') or one word per line")
        col = header.index("word")
        words = {row[col].strip().lower() for row in rows if len(row) > col and row[col].strip()}
    else:
        words = {line.strip().lower() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    if not words:
        raise CorpusError(f"vocabulary file has no words: {path}")
    return frozenset(words)


def write_word_list(path: str | os.PathLike, counts: Iterable[tuple[str, int]]) -> Path:
    """Write ``(word, frequency)`` pairs in the AO-CHILDES CSV format (``,word,frequency``), atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["", "word", "frequency"])
    for index, (word, freq) in enumerate(counts):
        writer.writerow([index, word, freq])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(buf.getvalue())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
