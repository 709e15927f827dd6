"""Sweep declarations -> runs, and the run configs built from them: each pre-training run's
(:func:`expand`) and each fine-tuning run's (:func:`finetune_run_config`).

A sweep config (``configs/sweep.py:<name>``) declares:

- ``bases``: ``("name=POINT", ...)`` one-factor-at-a-time bases (each is a run, group ``base``);
- ``ofat``: ``("base:field=v1,v2,...", ...)`` one run per value, varying one field of that base;
- ``groups``: ``("iso_flop:g1=POINT,POINT", ...)`` explicit named groups (iso-FLOP / iso-parameter);
- ``grid``: ``("POINT", ...)`` points crossed with every combination of ``grid_fields``
  (``("field=v1,v2", ...)``, e.g. ``train.num_steps`` for data size or ``seed``);
- ``pretrain_overrides`` / ``finetune_overrides``: ``("field=value", ...)`` applied to every run;
- ``pretrain_seeds``: ``(0, 1, 2)`` pre-trains every declared run once per seed (``<name>__seed=<s>``,
  the same design place; the report's unit of replication).

``{data_root}`` and ``{finetune_data_dir}`` in any override or value stand for those sweep fields
(given on the command line), so a declaration can name data a launcher prepared, e.g.
``l1:data.shards={data_root}/subsets/n750``.

A run that appears in several groups (same resulting config) is trained once and reported under
each group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import ml_collections

from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError
from minilm_jax.configs import finetune as finetune_recipe
from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.settings.command_line import (VARIANT_PREFIX, apply_override, apply_variant_fields,
                                              flatten)
from minilm_jax.settings.pretraining import validate_pretrain_config


@dataclasses.dataclass(frozen=True)
class Membership:
    """One place of a run in the sweep's design."""

    group: str  # base | ofat:<field> | iso_flop:<name> | iso_param:<name> | grid
    base: str = ""
    factor: str = ""
    factor_value: Any = None


@dataclasses.dataclass
class Run:
    """One pre-training run of the sweep (and its fine-tuning)."""

    name: str
    point: str  # E-H-I-L-A-V of the resulting model
    config: ml_collections.ConfigDict
    memberships: list[Membership]
    design: str = ""  # the declared run it replicates (with pretrain_seeds); "": itself

    @property
    def pretrain_seed(self) -> int:
        return int(self.config.seed)

    def fingerprint(self) -> str:
        flat = {k: v for k, v in flatten(self.config).items()}
        return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_assignment(entry: str, what: str) -> tuple[str, str]:
    if "=" not in entry:
        raise UserError(f"sweep {what} entry {entry!r} is not of the form name=values")
    key, values = entry.split("=", 1)
    return key.strip(), values.strip()


def _run_config(point: str, overrides: list[str]) -> ml_collections.ConfigDict:
    config = pretrain_recipe.get_config(point)
    # a variant's own fields after everything else (model.arch among it): they are that class's
    variant = [a for a in overrides if a.split("=", 1)[0].strip().startswith(VARIANT_PREFIX)]
    for assignment in [a for a in overrides if a not in variant] + variant:
        apply_override(config, assignment)
    apply_variant_fields(config)  # the variant's fields at their defaults are recorded too
    return config


def _name(*parts: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.=+-]", "_", p) for p in parts if p)


PLACEHOLDERS = ("data_root", "finetune_data_dir")


def fill_placeholders(text: str, sweep: ml_collections.ConfigDict) -> str:
    """``text`` with ``{data_root}`` / ``{finetune_data_dir}`` replaced by the sweep's fields."""
    for key in PLACEHOLDERS:
        token = "{" + key + "}"
        if token in text:
            value = str(sweep.get(key) or "")
            if not value:
                raise UserError(f"the sweep uses {token} ({text!r}) but --config.{key} is empty")
            text = text.replace(token, value.rstrip("/"))
    return text


def knob_overrides(sweep: ml_collections.ConfigDict) -> list[str]:
    """Overrides from the sweep's shortcut fields (``shards``, ``num_steps``, ``batch_size``,
    ``eval_every``, ``vocab_size``); zero or empty leaves the recipe's value."""
    for knob in ("num_steps", "batch_size", "eval_every", "vocab_size"):
        if sweep[knob] < 0:
            raise UserError(f"sweep {knob}={sweep[knob]} must be positive (0: the recipe's value)")
    out = [f"data.shards={sweep.shards}"] if sweep.shards else []
    if sweep.num_steps > 0:
        out.append(f"train.num_steps={sweep.num_steps}")
    if sweep.batch_size > 0:
        out.append(f"train.batch_size={sweep.batch_size}")
    if sweep.eval_every > 0:
        out += [f"eval.every_steps={sweep.eval_every}", f"checkpoint.every_steps={sweep.eval_every}"]
    if sweep.vocab_size > 0:
        out.append(f"model.vocab_size={sweep.vocab_size}")
    if sweep.get("finetune_checkpoints"):
        out.append(f"checkpoint.keep_fractions={tuple(float(f) for f in sweep.finetune_checkpoints)}")
    return out


def expand(sweep: ml_collections.ConfigDict) -> list[Run]:
    """Every run of the sweep, deduplicated by resulting config, in declaration order."""
    common = [fill_placeholders(o, sweep) for o in knob_overrides(sweep) + list(sweep.pretrain_overrides)]
    runs: dict[str, Run] = {}  # fingerprint -> run

    seeds = [int(s) for s in sweep.get("pretrain_seeds", ())]
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UserError(f"sweep pretrain_seeds={tuple(seeds)}: each must be a distinct integer "
                        ">= 0")

    def add(name: str, point: str, extra: list[str], membership: Membership) -> None:
        for seed in seeds or [None]:
            with_seed = extra + ([f"seed={seed}"] if seed is not None else [])
            label = _name(name, f"seed={seed}") if seed is not None else name
            try:
                config = _run_config(point, common + with_seed)
                model = validate_pretrain_config(config)  # every field's range, the snapshots
            except ConfigError as err:
                raise UserError(f"sweep run {label}: {err}") from err
            config.point = model.point
            run = Run(label, model.point, config, [membership], design=name if seeds else "")
            key = run.fingerprint()
            if key in runs:
                if membership not in runs[key].memberships:
                    runs[key].memberships.append(membership)
            else:
                runs[key] = run

    base_names = [_split_assignment(e, "bases")[0] for e in sweep.bases]
    repeated = sorted({n for n in base_names if base_names.count(n) > 1})
    if repeated:
        raise UserError(f"sweep bases: the name(s) {repeated} are declared more than once")
    bases = dict(_split_assignment(e, "bases") for e in sweep.bases)
    for base, point in bases.items():
        add(base, point, [], Membership("base", base))
    for entry in sweep.ofat:
        head, values = _split_assignment(entry, "ofat")
        if ":" not in head:
            raise UserError(f"sweep ofat entry {entry!r} must be base:field=v1,v2,...")
        base, field = head.split(":", 1)
        if base not in bases:
            raise UserError(f"sweep ofat entry {entry!r}: unknown base {base!r} (bases: {list(bases)})")
        for value in [v.strip() for v in values.split(",") if v.strip()]:
            label = value.rstrip("/").rsplit("/", 1)[-1]  # a path is named by its last part
            add(_name(base, f"{field.split('.')[-1]}={label}"), bases[base],
                [f"{field}={fill_placeholders(value, sweep)}"],
                Membership(f"ofat:{field}", base, field, _number(label)))
    for entry in sweep.groups:
        group, points = _split_assignment(entry, "groups")
        if not group.startswith(("iso_flop:", "iso_param:")):
            raise UserError(f"sweep group {group!r} must be named iso_flop:<name> or iso_param:<name>")
        for point in [p.strip() for p in points.split(",") if p.strip()]:
            add(point, point, [], Membership(group))
    grid_fields = [_split_assignment(e, "grid_fields") for e in sweep.grid_fields]
    combos = list(itertools.product(*[[v.strip() for v in vals.split(",")] for _, vals in grid_fields]))
    for point in sweep.grid:
        for combo in combos:
            extra = [f"{f}={v}" for (f, _), v in zip(grid_fields, combo)]
            add(_name(point, *[f"{f.split('.')[-1]}={v}" for (f, _), v in zip(grid_fields, combo)]),
                point, extra, Membership("grid"))
    names = [r.name for r in runs.values()]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(f"sweep declares different runs with the same name: {sorted(dupes)}")
    if not runs:
        raise UserError("the sweep declares no runs (bases, ofat, groups and grid are all empty)")
    return list(runs.values())


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def finetune_run_config(sweep: ml_collections.ConfigDict, task: str, checkpoint: Path
                        ) -> ml_collections.ConfigDict:
    """The fine-tuning config of ``task`` for a run's checkpoint, with the sweep's
    ``finetune_data_dir``, ``finetune_seeds`` and overrides (``field=value`` for every task,
    ``task:field=value`` for one)."""
    config = finetune_recipe.get_config(task)
    config.init.checkpoint = str(checkpoint)
    config.init.mode = sweep.finetune_init
    if sweep.get("finetune_data_dir"):
        config.data.dir = str(sweep.finetune_data_dir)
    if sweep.finetune_seeds:
        config.train.seeds = tuple(int(s) for s in sweep.finetune_seeds)
    for entry in sweep.finetune_overrides:
        head = entry.split("=", 1)[0]
        if ":" in head:
            only, _, rest = entry.partition(":")
            if only.strip() != task:
                continue
            entry = rest
        apply_override(config, fill_placeholders(entry, sweep))
    return config
