"""Text sources: local files (plain text, JSONL, CSV/TSV, AO-CHILDES, WikiText), stage outputs,
Hugging Face datasets and TFDS.

A source is written ``KIND:LOCATION[#key=value,...]``, for example::

    text:/data/books.txt                      one document per line (blank lines skipped)
    textfiles:/data/articles                  one document per file (a folder or a glob)
    jsonl:/data/c4.jsonl#field=text           one JSON object per line
    csv:/data/x.csv#column=sentence           CSV with a header row; tsv:... for tab-separated
    tsv:/glue/CoLA/dev.tsv#header=false,column=3        no header row: a 0-based column index
    aochildes:/data/aochildes/original_transcripts      AO-CHILDES CSVs, the ``gloss`` column
    aochildes:/data/...#group_by=transcript_id          consecutive rows joined into one document
    wikitext:/data/wiki.valid.tokens          WikiText file, one document per article
    corpus:/runs/constrained                  the output of ``filter`` / ``control`` (checked)
    hf:text-machine-lab/constrained_language#split=train,field=TEXT   a Hugging Face dataset
                                              (Parquet, downloaded and cached: corpus/hub.py)
    tfds:wikipedia/20230601.en#split=train    a TFDS dataset (array_record; needs [tfds])

Every source takes ``name=LABEL`` (used in reports) and ``limit=N`` (first N documents). A bare path
is accepted too: a stage folder (with ``manifest.json``) -> ``corpus``, ``.jsonl`` -> ``jsonl``, a
folder -> ``textfiles``, anything else -> ``text``. Documents are streamed (generators); files are read
in sorted order, so the same source always yields the same documents in the same order.
"""

from __future__ import annotations

import csv
import dataclasses
import glob as globlib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError

KINDS = ("text", "textfiles", "jsonl", "csv", "tsv", "aochildes", "wikitext", "corpus", "tfds", "hf")
DECODE_POLICIES = ("skip", "fail")
NEWLINE = b"\n"
_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")
csv.field_size_limit(1 << 30)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed source description (see the module docstring)."""

    kind: str
    location: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> SourceSpec:
        """Parse ``KIND:LOCATION[#k=v,...]`` or a bare path."""
        body, _, opts = spec.partition("#")
        options: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in opts.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise CorpusError(f"bad source option {item!r} in {spec!r}: expected key=value")
            options[key.strip()] = value.strip()
        kind, colon, location = body.partition(":")
        if not colon or kind not in KINDS:
            kind, location = _infer_kind(body), body
        if not location:
            raise CorpusError(f"source {spec!r} has no location")
        return cls(kind, location, tuple(sorted(options.items())))

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    @property
    def name(self) -> str:
        """Label used in reports: the ``name`` option, else the location's base name."""
        explicit = self.option("name")
        if explicit:
            return explicit
        if self.kind in ("tfds", "hf"):
            return self.location
        path = Path(self.location.rstrip("/"))
        if path.is_dir() or not path.parent.name:
            return path.name or self.location
        return f"{path.parent.name}/{path.name}"

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.kind}:{self.location}" + (f"#{opts}" if opts else "")


def _infer_kind(location: str) -> str:
    path = Path(location)
    if path.is_dir():
        return "corpus" if (path / "manifest.json").is_file() else "textfiles"
    if location.endswith(".jsonl"):
        return "jsonl"
    if location.endswith(".tokens"):
        return "wikitext"
    return "text"


@dataclasses.dataclass
class ReadStats:
    """What a source read: documents, raw bytes, and lines skipped for undecodable bytes."""

    documents: int = 0
    bytes: int = 0
    undecodable_skipped: int = 0
    first_undecodable: str | None = None

    def undecodable(self, loc: str, policy: str, detail: str, unit: str) -> None:
        """Undecodable bytes at ``loc``: stop (policy ``fail``) or count the skipped line or file."""
        if policy == "fail":
            raise CorpusError(f"{loc}: undecodable bytes (not UTF-8){detail}; "
                              f"use --on_decode_error skip to skip such {unit}") from None
        self.undecodable_skipped += 1
        self.first_undecodable = self.first_undecodable or loc

    def skipped_note(self) -> str | None:
        """The line a stage prints about skipped undecodable input, or None when there was none."""
        if not self.undecodable_skipped:
            return None
        return (f"skipped {self.undecodable_skipped} undecodable line(s) "
                f"(first at {self.first_undecodable})")

    def undecodable_counts(self) -> dict[str, Any]:
        """The counts a stage's manifest records."""
        return {"undecodable_skipped": self.undecodable_skipped,
                "first_undecodable": self.first_undecodable}

    def merge(self, other: ReadStats) -> None:
        self.documents += other.documents
        self.bytes += other.bytes
        self.undecodable_skipped += other.undecodable_skipped
        self.first_undecodable = self.first_undecodable or other.first_undecodable


def resolve_files(spec: SourceSpec) -> list[Path]:
    """The files a local source reads, sorted; a clear error if there are none."""
    if spec.kind == "tfds":
        return []
    if spec.kind == "hf":
        from minilm_jax.corpus.hub import files_of
        return files_of(spec.location, dict(spec.options))
    if spec.kind == "corpus":
        from minilm_jax.corpus.manifest import corpus_sequences_file

        return [corpus_sequences_file(spec.location)]
    loc = spec.location
    if any(ch in loc for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(loc)) if Path(p).is_file())
        if not files:
            raise CorpusError(f"corpus not found: no file matches {loc}")
        return files
    path = Path(loc).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_file():
        return [path]
    pattern = "*.csv" if spec.kind in ("aochildes", "csv") else "*.tsv" if spec.kind == "tsv" else "*"
    files = sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"corpus is empty: no {pattern} files in {path}")
    return files


def _decoded_lines(path: Path, policy: str, stats: ReadStats, where: list[int]) -> Iterator[str]:
    """Decode a file line by line (newlines kept), applying the undecodable-bytes policy."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            where[0] = lineno
            stats.bytes += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                stats.undecodable(f"{path}:{lineno}", policy, f" at column {err.start + 1}", "lines")
                continue
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield line


def _iter_text(files: list[Path], policy: str, stats: ReadStats) -> Iterator[str]:
    for path in files:
        for line in _decoded_lines(path, policy, stats, [0]):
            text = line.strip()
            if text:
                yield text


def _iter_textfiles(files: list[Path], policy: str, stats: ReadStats) -> Iterator[str]:
    for path in files:
        data = path.read_bytes()
        stats.bytes += len(data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            stats.undecodable(f"{path}:{data[:err.start].count(NEWLINE) + 1}", policy, "", "files")
            continue
        if text.strip():
            yield text.strip()


def _iter_jsonl(files: list[Path], field: str, policy: str, stats: ReadStats) -> Iterator[str]:
    for path in files:
        where = [0]
        for line in _decoded_lines(path, policy, stats, where):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{where[0]}: malformed JSON ({err.msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                raise CorpusError(f"{path}:{where[0]}: no field '{field}' (set it with #field=NAME)")
            text = obj[field]
            if isinstance(text, str) and text.strip():
                yield text.strip()


def _column_index(path: Path, header: list[str] | None, column: str, what: str = "column") -> int:
    """Where ``column`` (a header name, or a 0-based index) sits in ``path``'s rows."""
    if header is not None and column in header:
        return header.index(column)
    if column.isdigit():
        return int(column)
    if header is None:
        raise CorpusError(f"{path}: header=false needs {what}=<0-based index>, not '{column}'")
    raise CorpusError(f"{path}: no {what} '{column}' (columns: {', '.join(header)}); a headerless "
                      f"file takes #header=false,{what}=<0-based index>")


def _iter_csv(files: list[Path], column: str, delimiter: str, group_by: str | None,
              policy: str, stats: ReadStats, has_header: bool = True) -> Iterator[str]:
    # TSV as GLUE writes it: fields are never quoted, and a '"' inside a sentence is text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    for path in files:
        where = [0]
        reader = csv.reader(_decoded_lines(path, policy, stats, where), delimiter=delimiter,
                            quoting=quoting)
        header = next(reader, None) if has_header else None
        if has_header and header is None:
            continue
        col = _column_index(path, header, column)
        key_col = _column_index(path, header, group_by, "group_by") if group_by is not None else None
        rows = ((row[key_col] if key_col is not None and len(row) > key_col else None,
                 row[col].strip()) for row in reader if len(row) > col)
        if key_col is None:
            yield from (text for _, text in rows if text)
            continue
        for _, group in itertools.groupby(rows, key=lambda kv: kv[0]):
            text = " ".join(t for _, t in group if t)
            if text:
                yield text


def _iter_wikitext(files: list[Path], policy: str, stats: ReadStats) -> Iterator[str]:
    """WikiText articles: a line `` = Title = `` starts an article; lines are joined with newlines."""
    for path in files:
        article: list[str] = []
        for line in _decoded_lines(path, policy, stats, [0]):
            if _WIKITEXT_TITLE.match(line.rstrip("\n")) and article:
                yield "\n".join(article)
                article = []
            if line.strip():
                article.append(line.strip())
        if article:
            yield "\n".join(article)


def _iter_tfds(spec: SourceSpec, stats: ReadStats) -> Iterator[str]:
    """Read a TFDS dataset through ``tfds.data_source`` (array_record; TensorFlow not needed)."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 (lazy: optional dependency)
    except ImportError as err:
        raise CorpusError(
            f"source {spec}: tensorflow-datasets is not installed ({err}); "
            "install it with `pip install tensorflow-datasets importlib_resources`") from None
    field = spec.option("field", "text")
    kwargs: dict[str, Any] = {"split": spec.option("split", "train")}
    if spec.option("data_dir"):
        kwargs["data_dir"] = spec.option("data_dir")
    if spec.option("download", "true").lower() in ("0", "false", "no"):
        kwargs["download"] = False
    try:
        source = tfds.data_source(spec.location, **kwargs)
    except Exception as err:  # tfds raises many types (DatasetNotFoundError, ...)
        raise CorpusError(f"source {spec}: tfds could not open the dataset ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    for record in source:
        if field not in record:
            raise CorpusError(f"source {spec}: no feature '{field}' (features: {', '.join(record)})")
        value = record[field]
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        stats.bytes += len(text.encode("utf-8"))
        if text.strip():
            yield text.strip()


def iter_documents(spec: SourceSpec | str, *, on_decode_error: str = "skip",
                   stats: ReadStats | None = None) -> Iterator[str]:
    """Stream the documents of one source; ``stats`` (if given) is updated as documents are read."""
    spec = SourceSpec.parse(spec) if isinstance(spec, str) else spec
    if on_decode_error not in DECODE_POLICIES:
        raise CorpusError(f"on_decode_error must be one of {DECODE_POLICIES}, got {on_decode_error!r}")
    stats = stats if stats is not None else ReadStats()
    limit = spec.option("limit")
    docs = _iter_kind(spec, on_decode_error, stats)
    if limit is not None:
        docs = itertools.islice(docs, int(limit))
    for doc in docs:
        stats.documents += 1
        yield doc


def _iter_kind(spec: SourceSpec, policy: str, stats: ReadStats) -> Iterator[str]:
    if spec.kind == "tfds":
        return _iter_tfds(spec, stats)
    files = resolve_files(spec)
    if spec.kind == "hf":
        from minilm_jax.corpus.hub import iter_parquet_texts
        return iter_parquet_texts(files, spec.option("field", "text"), stats)
    if spec.kind == "text":
        return _iter_text(files, policy, stats)
    if spec.kind == "textfiles":
        return _iter_textfiles(files, policy, stats)
    if spec.kind == "jsonl":
        return _iter_jsonl(files, spec.option("field", "text"), policy, stats)
    if spec.kind == "corpus":
        return _iter_jsonl(files, "text", "fail", stats)
    if spec.kind in ("csv", "tsv"):
        column = spec.option("column")
        if not column:
            raise CorpusError(f"source {spec}: a CSV/TSV source needs #column=NAME (or a 0-based "
                              "index; #header=false for a file without a header row)")
        header = spec.option("header", "true").lower()
        if header not in ("true", "false"):
            raise CorpusError(f"source {spec}: header must be true or false, not {header!r}")
        return _iter_csv(files, column, "\t" if spec.kind == "tsv" else ",", spec.option("group_by"),
                         policy, stats, has_header=header == "true")
    if spec.kind == "aochildes":
        return _iter_csv(files, spec.option("column", "gloss"), ",", spec.option("group_by"), policy, stats)
    if spec.kind == "wikitext":
        return _iter_wikitext(files, policy, stats)
    raise CorpusError(f"unknown source kind {spec.kind!r} (known: {', '.join(KINDS)})")


def check_unique_names(specs: Iterable[SourceSpec]) -> None:
    """Refuse two sources with the same report name."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CorpusError(f"two sources are named {spec.name!r}; label them with #name=LABEL")
        seen.add(spec.name)


def iter_many(specs: Iterable[SourceSpec], *, on_decode_error: str = "skip",
              stats: dict[str, ReadStats] | None = None) -> Iterator[tuple[str, str]]:
    """``(source name, document)`` pairs from several sources, in order."""
    for spec in specs:
        st = ReadStats()
        if stats is not None:
            stats[spec.name] = st
        for doc in iter_documents(spec, on_decode_error=on_decode_error, stats=st):
            yield spec.name, doc


def fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """Identity of a source for manifests: its files with sizes and sha256 (TFDS: name and split)."""
    entry: dict[str, Any] = {"spec": str(spec), "name": spec.name, "kind": spec.kind}
    if spec.kind == "tfds":
        entry["split"] = spec.option("split", "train")
        return entry
    files = []
    for path in resolve_files(spec):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        files.append({"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    entry["files"] = files
    return entry


def check_fingerprint(recorded: dict[str, Any]) -> None:
    """Refuse a source whose files changed since ``recorded`` was taken."""
    spec = SourceSpec.parse(recorded["spec"])
    if spec.kind == "tfds":
        return
    now = {f["path"]: f["sha256"] for f in fingerprint(spec)["files"]}
    before = {f["path"]: f["sha256"] for f in recorded.get("files", [])}
    if now != before:
        changed = sorted(set(now.items()) ^ set(before.items()))
        raise CorpusError(f"source {spec} changed since it was recorded (e.g. {changed[0][0]}); "
                          "rebuild the earlier stage")
