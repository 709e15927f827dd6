"""A run's identity: what determines its numbers. Recorded in its ``config.json`` (and sealed into
every checkpoint), and held against what the run is asked to be whenever it is resumed, reused
(``finished earlier``, a sweep's finished units, fold runs, random-init twins) or read:

- its effective config, flattened; the fields that only say WHERE something is
  (:data:`LOCATION_FIELDS`: shard folder, task data, checkpoint to start from) are not part of it;
- the bytes of its inputs, ``inputs.<name>`` (sha256): the token shards by their manifest's
  checksums (:func:`shards_digest`), a fine-tuning run's task examples as loaded, after
  filtering and sampling (:func:`examples_digest`), the checkpoint it starts from by its sealed
  files (:func:`checkpoint_digest`); the tokenizer is recorded by its sha256 as before;
- the source of the user modules its model is built from (``model_code``:
  :mod:`minilm_jax.model.code_identity`), compared module by module by sha256 (not by where the
  file is);
- the library version (``library.version``), held by one rule (:func:`version_change`): an
  output (a run's record, a sweep's unit, a run read by fine-tuning, evals or export) written by
  another version is not a change of the model's code; it is said once, in one line naming both
  versions, and the work goes on, recording ``library_version_changes`` in what it writes
  (``MINILM_HOLD_LIBRARY_VERSION=1``: refused in one line instead).

So a run root moved or copied (another disk, a cluster, a bucket) resumes and reads, while an
edited labels file, a rebuilt shard set or a changed checkpoint is one ``error:`` line naming what
changed. Records written before a key existed (:data:`RECORDED_LATER`) are not held to it; the key
is recorded from then on."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any, Iterable, Mapping

from minilm_jax.data.shards import split_fingerprints
from minilm_jax.errors import UserError
from minilm_jax.model.code_identity import ACCEPT_ENV, accepted, code_changes
from minilm_jax.storage import relative_location

LOCATION_FIELDS = ("data.shards", "data.dir", "data.tokenizer", "init.checkpoint")
INPUTS = "inputs."
LIBRARY_VERSION = "library.version"
MODEL_CODE = "model_code"
CODE_CHANGES = "model_code_changes"  # accepted changes of code (a record, not identity)
VERSION_CHANGES = "library_version_changes"  # outputs of another version gone on from (a record)
HOLD_VERSION_ENV = "MINILM_HOLD_LIBRARY_VERSION"  # =1: an output of another version is refused
NOT_IDENTITY = (*LOCATION_FIELDS, CODE_CHANGES, VERSION_CHANGES)
# Keys added after runs were recorded: a record without them is not held to them.
RECORDED_LATER = (INPUTS, LIBRARY_VERSION)
# What each input's bytes came from, for the error line.
INPUT_SOURCES = {"inputs.shards": "data.shards", "inputs.task_data": "data.dir",
                 "inputs.init": "init.checkpoint"}


# Fields added after runs were recorded, at a value that changes nothing: a record without them
# has that value (and a run at that value records none, so its config.json stays as it was).
QUIET_DEFAULTS: dict[str, Any] = {"init.partial": False}


def without_quiet_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` without the :data:`QUIET_DEFAULTS` fields at their default."""
    return {k: v for k, v in flat.items() if k not in QUIET_DEFAULTS or v != QUIET_DEFAULTS[k]}


def library_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("minilm-jax")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "unknown"


def version_held() -> bool:
    """Whether :data:`HOLD_VERSION_ENV` holds every output to the library version that wrote it."""
    return os.environ.get(HOLD_VERSION_ENV, "") not in ("", "0")


_NOTED: set[tuple[str, str]] = set()  # library version changes already said by this process


def version_change(recorded: Any, where: str, current: str | None = None) -> list[str]:
    """The library version rule, the same for a run resumed or run again, a sweep's unit reused
    and a run read: ``where`` written by minilm-jax ``recorded``, another version than
    ``current`` (this one), is not a change of the model's code. Returns ``["minilm-jax A ->
    B"]`` for the caller to record (:data:`VERSION_CHANGES`), said once per process and pair of
    versions in one ``note:`` line; ``[]`` for the same version or none recorded. With
    :data:`HOLD_VERSION_ENV` set: one ``error:`` line instead (:class:`UserError`)."""
    current = library_version() if current is None else str(current)
    if recorded is None or str(recorded) == current:
        return []
    if version_held():
        raise UserError(f"{where} was written by minilm-jax {recorded}, this is minilm-jax "
                        f"{current}, and {HOLD_VERSION_ENV}=1 holds every output to the library "
                        f"version that wrote it: install minilm-jax {recorded}, use a new "
                        f"workdir, or unset {HOLD_VERSION_ENV} to go on (recorded)")
    if (str(recorded), current) not in _NOTED:
        _NOTED.add((str(recorded), current))
        print(f"note: {where} was written by minilm-jax {recorded}, this is minilm-jax {current}: "
              "a library version change, not a change of the model's code; going on (recorded "
              f"as {VERSION_CHANGES})", flush=True)
    return [f"minilm-jax {recorded} -> {current}"]


def read_versions(flat: Mapping[str, Any], where: str) -> list[str]:
    """What a reader (fine-tuning, evals, export, ``load_run``) records of the library versions of
    the run it reads (``flat``: its ``config.json``): the changes that run recorded, then this
    reading's own (:func:`version_change`)."""
    return list(dict.fromkeys([*(flat.get(VERSION_CHANGES) or []),
                               *version_change(flat.get(LIBRARY_VERSION), where)]))


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def shards_digest(manifest: Mapping[str, Any]) -> str:
    """The token shards' identity: every split's sha256 (its segments file's too where recorded),
    the tokenizer's, sequence length and pad id from their manifest (where the folder is, or when
    it was written, is not part of it)."""
    splits = split_fingerprints(manifest)
    return _digest({"splits": splits, "tokenizer": manifest["tokenizer"].get("sha256"),
                    "seq_len": manifest.get("seq_len"), "pad_id": manifest.get("pad_id")})


def examples_digest(data: Any) -> dict[str, Any]:
    """A fine-tuning run's task examples as loaded (``tasks.loaders.TaskData``): rows per split and
    one sha256 over the label names and every example's texts, label and id, split by split."""
    digest = hashlib.sha256(json.dumps(list(data.spec.label_names)).encode())
    splits = [("train", data.train), ("validation", data.validation), *sorted(data.evals.items())]
    for name, examples in splits:  # each field by its repr: no separator inside one
        digest.update(f"\x00split {name} {len(examples)}\x00".encode())
        digest.update("".join(f"{ex.text_a!r}\x1f{ex.text_b!r}\x1f{ex.label!r}\x1f{ex.uid}\x1e"
                              for ex in examples).encode("utf-8", "surrogatepass"))
    return {"rows": {name: len(examples) for name, examples in splits},
            "sha256": digest.hexdigest()}


def checkpoint_digest(files: Mapping[str, str], step: int) -> str:
    """A checkpoint's identity: the sha256 of each of its files (its seal) and its step."""
    return _digest({"files": dict(sorted(files.items())), "step": int(step)})


# A population's own record: its members, each with its name, folder and identity.
POPULATION_KEYS = ("population.members", "population.runs")


def comparable(identity: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """``identity`` as a population's record holds a member's: without ``ignore``, locations,
    inputs, code and version (each member's own record holds and checks those)."""
    skip = set(ignore) | set(NOT_IDENTITY) | {MODEL_CODE}
    return {k: v for k, v in identity.items()
            if k not in skip and not _recorded_later(k)}


def member_entry(name: str, workdir: Any, population_dir: Any, identity: Mapping[str, Any],
                 ignore: Iterable[str] = ()) -> dict[str, Any]:
    """A member of a population's record: its name, its folder relative to the population's
    (so the root moves as a whole) and its :func:`comparable` identity."""
    try:
        where = relative_location(workdir, population_dir)
    except ValueError:  # not below a common folder of an object store: as given
        where = str(workdir)
    return {"name": name, "workdir": where, "identity": comparable(identity, ignore)}


def member_location(population_dir: Any, recorded: str) -> str:
    """A member's folder from what a population's record holds (:func:`member_entry`: relative
    to the population's folder; absolute in records written before)."""
    if not recorded or recorded.startswith("/") or "://" in recorded:
        return recorded
    base = str(population_dir).rstrip("/")
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, recorded))}"
    return os.path.normpath(os.path.join(base, recorded))


def recorded_value(flat: Mapping[str, Any], key: str) -> Any:
    """``flat[key]`` as identity compares and shows it: a module's code by its sha256; a
    population's members by name and :func:`comparable` identity (not where their folders are)."""
    value = flat.get(key)
    if key == MODEL_CODE and isinstance(value, dict):
        return {name: (entry or {}).get("sha256", "")[:12] for name, entry in value.items()}
    if key in POPULATION_KEYS and isinstance(value, list):
        return [{"name": e.get("name"), "identity": comparable(e.get("identity") or {})}
                for e in value]
    return value


def _recorded_later(key: str) -> bool:
    return any(key.startswith(prefix) for prefix in RECORDED_LATER)


def differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                ignore: Iterable[str] = (), defaults: Mapping[str, Any] | None = None
                ) -> list[str]:
    """The identity keys in which ``current`` differs from the ``saved`` record, outside
    ``ignore`` and :data:`LOCATION_FIELDS`; ``defaults``: the value a record without a key has
    (fields added at a value that changes nothing). A key recorded later
    (:data:`RECORDED_LATER`) that ``saved`` lacks is not a difference."""
    defaults = defaults or {}
    skip = set(ignore) | set(NOT_IDENTITY)
    keys = (set(saved) | set(current)) - skip
    out = []
    for key in sorted(keys):
        if key not in saved and _recorded_later(key):
            continue
        if key == MODEL_CODE:  # the recorded modules, each by its sha256 (a record without any
            # predates code identity; a module recorded since is reached through one recorded)
            if code_changes(saved.get(key), current.get(key) or {}):
                out.append(key)
            continue
        before = recorded_value(saved, key) if key in saved else defaults.get(key)
        after = recorded_value(current, key) if key in current else defaults.get(key)
        if before != after:
            out.append(key)
    return out


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    if isinstance(value, dict) and "sha256" in value:
        rows = value.get("rows") or {}
        counts = ", ".join(f"{k} {v}" for k, v in rows.items() if v)
        return f"{value['sha256'][:12]} ({counts})" if counts else value["sha256"][:12]
    return repr(value)


def describe(saved: Mapping[str, Any], current: Mapping[str, Any], keys: list[str],
             limit: int = 6) -> str:
    """``key: old -> new`` for each of ``keys`` (inputs named by the field that locates them)."""
    parts = []
    for key in keys[:limit]:
        before, after = recorded_value(saved, key), recorded_value(current, key)
        if key.startswith(INPUTS):
            source = INPUT_SOURCES.get(key, key)
            where = current.get(source) or saved.get(source) or ""
            parts.append(f"the bytes of {source}{'=' + str(where) if where else ''} changed "
                         f"({key}: {_short(before)} -> {_short(after)})")
        else:
            parts.append(f"{key}: {before!r} -> {after!r}")
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


_WARNED: set[str] = set()  # accepted changes already printed by this process


def hold(saved: Mapping[str, Any], current: dict[str, Any], ignore: Iterable[str] = (),
         defaults: Mapping[str, Any] | None = None, where: str = "the run") -> list[str]:
    """Hold ``current`` to the ``saved`` record: a change of the model's code is refused in one
    line naming the files, unless accepted (``MINILM_ACCEPT_CODE_CHANGE=1``: then it is printed
    once and recorded in ``current[CODE_CHANGES]``); a record of another library version goes on
    by :func:`version_change` (said once, recorded in ``current[VERSION_CHANGES]``); the other
    differing keys are returned for the caller to refuse in its own words."""
    keys = differences(saved, current, ignore, defaults)
    version = LIBRARY_VERSION in keys
    keys = [k for k in keys if k != LIBRARY_VERSION]
    if MODEL_CODE in keys:
        _hold_code(saved, current, where)
    elif saved.get(CODE_CHANGES):
        current[CODE_CHANGES] = list(saved[CODE_CHANGES])
    before = list(saved.get(VERSION_CHANGES) or [])
    now = version_change(saved.get(LIBRARY_VERSION), where, current.get(LIBRARY_VERSION)
                         ) if version else []
    if before or now:
        current[VERSION_CHANGES] = before + [c for c in now if c not in before]
    return [k for k in keys if k != MODEL_CODE]


def _hold_code(saved: Mapping[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse ``current``'s changed model code, or (accepted) say it once and record it."""
    changes = code_changes(saved.get(MODEL_CODE), current.get(MODEL_CODE) or {})
    arch = current.get("model.arch") or current.get("model_built", {}).get("arch", "?")
    text = "; ".join(changes)
    if not accepted():
        raise UserError(f"the code of model.arch={arch} changed since {where} was recorded: "
                        f"{text}; restore it, use a new workdir, or set {ACCEPT_ENV}=1 to go on "
                        "with the new code (recorded)")
    if text not in _WARNED:
        _WARNED.add(text)
        print(f"warning: {ACCEPT_ENV}=1: {where} goes on with changed code: {text}", flush=True)
    before = list(saved.get(CODE_CHANGES) or [])
    current[CODE_CHANGES] = before + [c for c in changes if c not in before]
