"""What a sweep's units recorded against what they would be now: a sweep run again is refused
before anything runs when a unit's workdir was trained with another config (outside run control),
another architecture, or other inputs (the bytes of its shards, task examples or starting
checkpoint: :mod:`minilm_jax.run_identity`). A finished unit is skipped, not rebuilt, so this is
where its reuse is judged, the library version included: units written by another version go on
by the rule runs and readers follow (:func:`run_identity.version_change`: one line for the sweep,
each finished unit's record updated as its own command would update it)."""

from __future__ import annotations

import json
from typing import Any, Callable

import ml_collections

import minilm_jax.run_identity as run_identity
from minilm_jax.data.shards import read_manifest
from minilm_jax.settings.finetuning import resumable_fields
from minilm_jax.finetune.task_batches import task_data_digest
from minilm_jax.run_identity import LIBRARY_VERSION, QUIET_DEFAULTS, VERSION_CHANGES
from minilm_jax.settings.command_line import flatten
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.settings.pretraining import RESUMABLE_FIELDS
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.storage import RunPath, atomic_write_json, relative_location

from .layout import SweepLayout, finetune_jobs
from .spec import Run

# Pre-training fields that a sweep may change without changing a run's results (run control);
# everything else, the number of steps and the evaluation points included, makes it another run.
PRETRAIN_RUN_CONTROL = tuple(f for f in RESUMABLE_FIELDS if f not in (
    "train.num_steps", "eval.every_steps", "eval.per_decade", "eval.test_at_end",
    "checkpoint.keep_fractions"))


def recorded(workdir: RunPath) -> dict[str, Any] | None:
    """``workdir``'s recorded ``config.json``, None when nothing is recorded."""
    path = workdir / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def changed_fields(saved: dict[str, Any], config: ml_collections.ConfigDict,
                   run_control: tuple[str, ...]) -> list[str]:
    """Fields (``field: old -> new``) in which a unit's ``saved`` record differs from
    ``config``, outside ``run_control``."""
    current = flatten(config)
    keys = [k for k in run_identity.differences(saved, current, run_control, QUIET_DEFAULTS)
            if k in current]  # the config's fields (what runs record beside them: the runs')
    return [run_identity.describe(saved, current, [k]) for k in keys]


def input_changes(saved: dict[str, Any], config: ml_collections.ConfigDict,
                  current: dict[str, Callable[[], Any]]) -> list[str]:
    """The inputs (``inputs.<name>``) a unit's ``saved`` record holds whose bytes differ now
    (:mod:`minilm_jax.run_identity`; each current value computed only when recorded)."""
    now = {key: make() for key, make in current.items() if key in saved}
    keys = run_identity.differences({k: saved[k] for k in now}, now)
    return [run_identity.describe(saved, {**flatten(config), **now}, [k]) for k in keys]


# The architecture's shapes: what a fine-tuning run's recorded ``model_built`` takes from its
# checkpoint, so they must be the sweep run's own.
BUILT_SHAPE_FIELDS = ("arch", "vocab_size", "emb_dim", "hidden_dim", "ffn_dim", "num_layers",
                      "num_heads")


def built_changed(saved: dict[str, Any], run_config: ml_collections.ConfigDict) -> list[str]:
    """Shape fields (``model_built.field: recorded -> expected``) in which a fine-tuning unit's
    recorded ``model_built`` differs from the model of the run it fine-tunes (a finished job is
    skipped, not rebuilt, so an edited record would otherwise be reused)."""
    built = saved.get("model_built") or {}
    expected = model_from_config(run_config).to_dict()
    return [f"model_built.{k}: {built[k]!r} -> {expected[k]!r}" for k in BUILT_SHAPE_FIELDS
            if k in built and built[k] != expected[k]]


def changed_units(runs: list[Run], sweep: ml_collections.ConfigDict, layout: SweepLayout
                  ) -> list[str]:
    """``folder (what changed)`` for every unit of ``runs`` whose workdir holds a run of another
    config, architecture or inputs (a shared random-init twin named once)."""
    changed = []
    digests: dict[str, Any] = {}  # inputs read by several units: hashed once
    records: list[tuple[RunPath, dict[str, Any]]] = []  # every unit's record, for its version

    def once(key: str, make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: digests[key] if key in digests else digests.setdefault(key, make())

    for run in runs:
        pre_dir = layout.pretrain_dir(run.name)
        shards = str(run.config.data.shards)
        saved = recorded(pre_dir)
        records += [(pre_dir, saved)] if saved is not None else []
        fields = [] if saved is None else (
            changed_fields(saved, run.config, PRETRAIN_RUN_CONTROL)
            + input_changes(saved, run.config, {"inputs.shards": once(
                shards, lambda: run_identity.shards_digest(read_manifest(shards)))}))
        if fields:
            changed.append(f"{relative_location(pre_dir, layout.root)} ({'; '.join(fields[:4])})")
        for job in finetune_jobs(sweep, run, layout):
            saved = recorded(job.workdir)
            if saved is None:
                continue
            records.append((job.workdir, saved))
            data_key = repr((job.config.task, sorted(job.config.data.to_dict().items())))
            inputs = {"inputs.task_data": once(data_key, lambda c=job.config: task_data_digest(c))}
            if job.init == "pretrained":
                inputs["inputs.init"] = lambda c=job.config: PretrainedRun.open(
                    c.init.checkpoint, c.init.which).digest()
            fields = (changed_fields(saved, job.config, resumable_fields(job.init))
                      + built_changed(saved, run.config)
                      + input_changes(saved, job.config, inputs))
            if fields:
                changed.append(f"{relative_location(job.workdir, layout.root)} "
                               f"({'; '.join(fields[:4])})")
    if not changed:
        version_changes(records, layout)
    return list(dict.fromkeys(changed))


def version_changes(records: list[tuple[RunPath, dict[str, Any]]], layout: SweepLayout) -> None:
    """Units recorded by another library version than this one: said once per version in one
    line naming the sweep (:func:`run_identity.version_change`; refused in one line where the
    user holds versions), and each finished unit's record updated as its command would update
    it (``library.version`` now, the change appended to ``library_version_changes``); a unit not
    finished records it when it resumes."""
    now = run_identity.library_version()
    by_version: dict[str, list[tuple[RunPath, dict[str, Any]]]] = {}
    for workdir, saved in records:
        if saved.get(LIBRARY_VERSION) is not None and str(saved[LIBRARY_VERSION]) != now:
            by_version.setdefault(str(saved[LIBRARY_VERSION]), []).append((workdir, saved))
    for old, units in by_version.items():
        first = relative_location(units[0][0], layout.root)
        more = f" and {len(units) - 1} more" if len(units) > 1 else ""
        change = run_identity.version_change(
            old, f"the sweep in {layout.root} ({len(units)} unit(s): {first}{more})", now)
        for workdir, saved in units:
            if (workdir / "summary.json").exists():
                before = list(saved.get(VERSION_CHANGES) or [])
                atomic_write_json(workdir / "config.json", {
                    **saved, LIBRARY_VERSION: now,
                    VERSION_CHANGES: before + [c for c in change if c not in before]})
