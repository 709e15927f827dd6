"""Hugging Face hub sources: ``hf:OWNER/NAME#split=train,field=TEXT[,revision=REV]``.

A dataset repository's Parquet files for one split are downloaded with ``huggingface_hub``
(``snapshot_download``: cached under ``$HF_HOME``, resumed after an interruption, reused offline),
then streamed one record batch at a time with ``pyarrow``. ``revision`` pins a branch, tag or commit
(the resolved commit is recorded in stage manifests through the files' sha256).

``mirror=DIR`` (or ``$MINILM_HF_MIRROR``) reads a local directory laid out like the hub instead:
``DIR/OWNER/NAME/<files as in the repository>``, for machines without network and for tests.

Split files are found the ways the hub lays them out: ``data/<split>-*.parquet``,
``<split>/*.parquet``, ``<config>/<split>/*.parquet`` and ``*<split>*.parquet``; a repository of
several configurations names one in the split (``split=en/train``): a split matching several
configurations' files is refused before anything is downloaded.

Single files (a tokenizer vocabulary) come from :func:`fetch_file`
(``hf-file:google-bert/bert-base-uncased/vocab.txt``).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.storage import atomic_write_bytes

MIRROR_ENV = "MINILM_HF_MIRROR"
INSTALL = "install the hub extra: pip install -e '.[hf]' (huggingface_hub, pyarrow)"


def split_patterns(split: str) -> list[str]:
    """Where a split's Parquet files live in a hub dataset repository."""
    return [f"data/{split}-*.parquet", f"data/{split}/*.parquet", f"{split}/*.parquet",
            f"*/{split}/*.parquet", f"*/{split}-*.parquet", f"{split}-*.parquet"]


def _matching(names: list[str], split: str, where: str) -> list[str]:
    """The Parquet files among ``names`` (paths relative to a repository's root) that hold
    ``split``: the first layout of :func:`split_patterns` that matches, else the files whose name
    holds it. A split whose files sit in several configurations' folders (``en/train-*.parquet``
    and ``fr/train-*.parquet``) is refused: the configuration is part of the split's name
    (``split=en/train``), never every configuration's files at once."""
    files = sorted(n for n in names if n.endswith(".parquet"))
    for pattern in split_patterns(split):
        found = [n for n in files if fnmatch.fnmatch(n, pattern)]
        if found:
            configs = sorted({n.split("/")[0] for n in found}) if pattern.startswith("*/") else []
            break
    else:
        found = [n for n in files if split in n.rsplit("/", 1)[-1]]
        configs = sorted({n.rsplit("/", 1)[0] if "/" in n else "." for n in found})
    if len(configs) > 1:
        raise CorpusError(f"{where}: split '{split}' matches the files of several configurations "
                          f"({', '.join(configs)}); name one as split={configs[0]}/{split}")
    if not found:
        raise CorpusError(f"{where}: no Parquet files for split '{split}' "
                          f"(looked for {', '.join(split_patterns(split))})")
    return found


def _split_files_in(root: Path, repo_id: str, split: str) -> list[Path]:
    """``split``'s Parquet files in a local copy of ``repo_id`` (a mirror or the cached
    snapshot)."""
    names = [p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if p.is_file()]
    return [root / n for n in _matching(names, split, f"hf:{repo_id} ({root})")]


def dataset_files(repo_id: str, split: str, revision: str | None = None,
                  mirror: str | None = None) -> list[Path]:
    """Local paths of ``repo_id``'s Parquet files for ``split`` (downloaded when needed: the
    repository's file list is read first, and only the split's files are downloaded; offline, the
    cached snapshot's)."""
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        root = Path(mirror).expanduser() / repo_id
        if not root.is_dir():
            raise CorpusError(f"hub mirror has no {repo_id}: {root} is not a directory")
        return _split_files_in(root, repo_id, split)
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError:
        raise CorpusError(f"hf:{repo_id}: huggingface_hub is not installed; {INSTALL}") from None
    try:
        listed = list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except Exception:  # offline: what the cache holds (snapshot_download reads it offline)
        listed = None
    wanted = _matching(listed, split, f"hf:{repo_id}") if listed is not None else None
    try:
        root = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                      allow_patterns=wanted or split_patterns(split)))
    except Exception as err:  # offline and not cached, unknown repository, gated, ...
        raise CorpusError(f"hf:{repo_id}: download failed ({type(err).__name__}: "
                          f"{(str(err).splitlines() or [''])[0][:200]})") from None
    return [root / n for n in wanted] if wanted else _split_files_in(root, repo_id, split)


def files_of(location: str, options: dict[str, str]) -> list[Path]:
    """The Parquet files of an ``hf:`` source (its location and options)."""
    return dataset_files(location, options.get("split", "train"), options.get("revision"),
                         options.get("mirror"))


def iter_parquet_texts(files: list[Path], field: str, stats: Any) -> Iterator[str]:
    """Non-empty values of column ``field``, file by file, one record batch at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"reading Parquet needs pyarrow; {INSTALL}") from None
    for path in files:
        handle = pq.ParquetFile(path)
        if field not in handle.schema_arrow.names:
            raise CorpusError(f"{path}: no column '{field}' (columns: "
                              f"{', '.join(handle.schema_arrow.names)}); set #field=NAME")
        for batch in handle.iter_batches(columns=[field], batch_size=8192):
            for value in batch.column(0).to_pylist():
                if value is None:
                    continue
                text = str(value).strip()
                stats.bytes += len(text.encode("utf-8"))
                if text:
                    yield text


def fetch_file(spec: str, out_dir: str | None = None) -> Path:
    """``OWNER/NAME/PATH`` of a model repository (``revision=`` after ``#``) -> a local file."""
    body, _, opts = spec.partition("#")
    options = dict(item.split("=", 1) for item in opts.split(",") if "=" in item)
    parts = body.split("/")
    if len(parts) < 3:
        raise CorpusError(f"hf-file:{spec}: expected OWNER/NAME/PATH (e.g. "
                          "google-bert/bert-base-uncased/vocab.txt)")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    mirror = options.get("mirror") or os.environ.get(MIRROR_ENV)
    if mirror:
        path = Path(mirror).expanduser() / repo_id / filename
        if not path.is_file():
            raise CorpusError(f"hub mirror has no {repo_id}/{filename}: {path}")
        if out_dir is None:
            return path
        target = Path(out_dir) / filename  # where a download would put it
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, path.read_bytes())
        return target
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CorpusError(f"hf-file:{spec}: huggingface_hub is not installed; {INSTALL}") from None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=options.get("revision"),
                                    local_dir=out_dir))
    except Exception as err:
        raise CorpusError(f"hf-file:{spec}: download failed ({type(err).__name__}: "
                          f"{(str(err).splitlines() or [''])[0][:200]})") from None
