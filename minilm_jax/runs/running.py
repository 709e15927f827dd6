"""Reading a pre-training run that may still be training.

Every reader of a run (evals, ``interop export``, fine-tuning's ``init.checkpoint``, latency, via
:class:`~minilm_jax.runs.pretrained.PretrainedRun`) goes through this module:

- :data:`RUN_START` (``run_start.json``), written before the first training step: the tokenizer the
  shards were made with (path, sha256, vocab_size), the shards and the model; the tokenizer is
  looked up there first, then in ``summary.json`` (runs of earlier versions), then in the manifest
  of the shards ``config.json`` names (when its sha256 is the one the run saw);
- :func:`read_checkpoint`: a checkpoint (``best``, ``latest``, ``step:N``) read from the newest
  sealed step; when that step is replaced while it is read (``best/`` publishes its successor,
  then deletes it; ``checkpoints/`` keeps only the last K), it is read again from the step that now
  serves, a bounded number of times. A step that is still there and still the one to read but
  fails (corrupt, another model) is an error at once, never read;
- :func:`refuse_population`: a population's own folder holds stacked members, not a run: one line
  naming its members.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, TypeVar

import jax

from minilm_jax.run_identity import member_location
from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath, atomic_write_json, run_path

RUN_START = "run_start.json"
READ_ATTEMPTS = 5  # replacements tolerated while one checkpoint is read
T = TypeVar("T")


def write_run_start(workdir: str | RunPath, manifest: dict[str, Any], model: dict[str, Any],
                    shards: str) -> None:
    """Record what readers need before the first step (process 0): the shards' tokenizer identity
    (``manifest["tokenizer"]``), the shard folder and the model config."""
    if jax.process_index() != 0:
        return
    atomic_write_json(run_path(str(workdir)) / RUN_START,
                      {"format": 1, "tokenizer": dict(manifest["tokenizer"]), "shards": str(shards),
                       "model": model, "written_at": time.time()})


def read_run_start(workdir: str | RunPath) -> dict[str, Any] | None:
    """The run's :data:`RUN_START` record, or None (a run of an earlier version, or unreadable)."""
    try:
        record = json.loads((run_path(str(workdir)) / RUN_START).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recorded_tokenizer(workdir: str | RunPath, flat: dict[str, Any],
                       summary_shards: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tokenizer identity (``path``, ``sha256``, ``vocab_size``; some may be missing) of the
    run in ``workdir`` whose ``config.json`` is ``flat``: :data:`RUN_START` first, then the
    summary's ``shards`` (``summary_shards``), then the manifest of the shards it names."""
    record = read_run_start(workdir) or {}
    if isinstance(record.get("tokenizer"), dict) and record["tokenizer"].get("sha256"):
        return dict(record["tokenizer"])
    if summary_shards:
        return dict(summary_shards)
    seen = str(flat.get("data.tokenizer_sha256_seen", ""))
    shards = flat.get("data.shards")
    if shards:
        from minilm_jax.data.shards import ShardError, read_manifest

        try:
            tokenizer = dict(read_manifest(str(shards))["tokenizer"])
        except (ShardError, OSError, KeyError, TypeError):
            tokenizer = {}
        if tokenizer.get("sha256") and tokenizer["sha256"] == seen:
            return tokenizer
    return {"sha256": seen} if seen else {}


def population_members(workdir: str | RunPath, flat: dict[str, Any]) -> list[str] | None:
    """The member workdirs of a pre-training population's own folder ``workdir`` (``flat``: its
    ``config.json``), or None when it is not one: its config lists them, else (a config holding no
    model) its ``summary.json`` or its ``members/`` folder does."""
    listed = flat.get("population.members")
    if isinstance(listed, list):  # each member's folder, recorded relative to the population's
        return [member_location(workdir, str(m.get("workdir") or "")) or str(m.get("name", "?"))
                for m in listed if isinstance(m, dict)]
    if any(key.startswith("model.") for key in flat):
        return None  # a run of its own
    workdir = run_path(str(workdir))
    try:
        members = json.loads((workdir / "summary.json").read_text()).get("members")
    except (OSError, ValueError, AttributeError):
        members = None
    if isinstance(members, list) and members:
        return [str(m.get("workdir", m.get("name", "?"))) for m in members if isinstance(m, dict)]
    found = sorted(str(p.parent) for p in (workdir / "members").glob("*/config.json"))
    return found or None


def refuse_population(workdir: str | RunPath, flat: dict[str, Any] | None = None,
                      action: str = "use") -> None:
    """One ``UserError`` line when ``workdir`` (its ``config.json``: ``flat``, read when None) is
    the folder of a pre-training population (its members are the runs to read)."""
    if flat is None:
        try:
            flat = json.loads((run_path(str(workdir)) / "config.json").read_text())
        except (OSError, ValueError):
            return
    folders = population_members(workdir, flat) if isinstance(flat, dict) else None
    if folders is None:
        return
    raise UserError(f"{workdir} is a population of {len(folders)} members: {action} a member: "
                    f"{', '.join(folders)}")


def read_checkpoint(workdir: str | RunPath, which: str, read: Callable[[int, RunPath], T],
                    chosen: tuple[int, RunPath] | None = None) -> tuple[int, RunPath, T]:
    """``(step, directory, read(step, directory))`` of checkpoint ``which`` of ``workdir``
    (``chosen``: the step already found for it), read again from the step that serves now when
    the one being read is replaced (see the module docstring); an error line after
    :data:`READ_ATTEMPTS` replacements."""
    from minilm_jax.train.checkpoint import CheckpointError, find_checkpoint

    workdir = run_path(str(workdir))
    step, path = chosen or find_checkpoint(workdir, which)
    for _ in range(READ_ATTEMPTS):
        try:
            return step, path, read(step, path)
        except (CheckpointError, OSError) as err:
            serving = _serving_now(workdir, which, step, path)
            if serving is None:
                raise
            print(f"note: {path.parent} was replaced while it was read "
                  f"({type(err).__name__}); reading {serving[1].parent}", flush=True)
            step, path = serving
    raise CheckpointError(f"the {which} checkpoint of {workdir} was replaced {READ_ATTEMPTS} "
                          f"times while it was read (last: step {step}); the run saves faster "
                          "than it can be read: try again, or read a snapshot (step:N)")


def _serving_now(workdir: RunPath, which: str, step: int,
                 path: RunPath) -> tuple[int, RunPath] | None:
    """The checkpoint that serves ``which`` now, when the step read (``path``) was replaced or
    removed; None when it is still there and still the one to read (its failure is its own)."""
    from minilm_jax.train.checkpoint import find_checkpoint

    now = find_checkpoint(workdir, which)  # one line of its own when nothing serves any more
    if now[0] != step or str(now[1]) != str(path) or not path.is_dir():
        return now
    return None
