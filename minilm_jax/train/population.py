"""Pre-training populations: N members trained in one compiled program, each member a run.

A member is a full pre-training config that differs from the others only in *population fields*:
its seed (initialisation, data order, masks) and values that leave every array shape alone
(:data:`TRACED_FIELDS`, passed to the program as per-member arrays, and :data:`GROUPING_FIELDS`,
which change the compiled function: members that agree on them form one group, vmapped or mapped
together; groups run one after another inside the same program).

On the command line a population is ``config.population``: lists (``population.seeds``,
``population.peak_lr``, ...) whose cross product gives the members (seeds vary fastest), each
trained in ``<workdir>/members/<name>/``, a run folder like any other. Sweeps build members
directly (:func:`members_of`), one per packed run, with their own workdirs.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any, Sequence

import ml_collections

import minilm_jax.run_identity as run_identity
from minilm_jax.errors import UserError
from minilm_jax.settings.allowed import raise_problems, range_problems
from minilm_jax.settings.command_line import apply_recipe, check_override, flatten
from minilm_jax.settings.pretraining import PRETRAIN_RULES
from minilm_jax.storage import RunPath, run_path

# Fields a member may set for itself, as config fields, with the short name used in member names.
TRACED_FIELDS = {"seed": "s", "optim.peak_lr": "lr", "optim.warmup_steps": "wu",
                 "optim.weight_decay": "wd", "optim.end_lr_fraction": "end",
                 "mlm.mask_prob": "mp"}
GROUPING_FIELDS = {"optim.schedule": "", "model.hidden_dropout": "do",
                   "model.attention_dropout": "ado"}
POPULATION_FIELDS = {**TRACED_FIELDS, **GROUPING_FIELDS}

# config.population's list fields -> the config fields they set (dropout sets both rates).
LIST_FIELDS = {"seeds": ("seed",), "peak_lr": ("optim.peak_lr",),
               "warmup_steps": ("optim.warmup_steps",), "weight_decay": ("optim.weight_decay",),
               "end_lr_fraction": ("optim.end_lr_fraction",), "mask_prob": ("mlm.mask_prob",),
               "schedule": ("optim.schedule",),
               "dropout": ("model.hidden_dropout", "model.attention_dropout")}


@dataclasses.dataclass(frozen=True)
class Member:
    """One member: its name, its run folder and its full config (population lists emptied, so
    the config is that of the separate run it equals)."""

    name: str
    workdir: RunPath
    config: ml_collections.ConfigDict


def is_population(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` declares a population (any non-empty list in ``config.population``)."""
    section = config.get("population")
    return section is not None and any(len(section.get(k, ())) for k in LIST_FIELDS)


def solo_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with its population lists emptied (a member's, or a separate run's, config)."""
    out = copy.deepcopy(config)
    if out.get("population") is not None:
        for key in LIST_FIELDS:
            out.population[key] = ()
    return out


def _value(base: ml_collections.ConfigDict, field: str, value: Any) -> Any:
    """``value`` as the type of ``field`` (a list given as text, or numbers given for a float)."""
    return check_override(base, field, str(value))


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(config: ml_collections.ConfigDict, workdir: str | RunPath) -> list[Member]:
    """The members of ``config.population``: the cross product of its non-empty lists (seeds
    vary fastest), in ``<workdir>/members/<name>``; a one-line error for a bad list."""
    raise_problems([p for p in range_problems(config, PRETRAIN_RULES)
                    if p.startswith("population.")])
    base = solo_config(config)
    section = config.population
    given = [(key, list(section[key])) for key in LIST_FIELDS if len(section[key])]
    for key, values in given:
        if len(set(map(str, values))) != len(values):
            raise UserError(f"population.{key}={tuple(values)!r} repeats a value (each member "
                            "must differ)")
    rows = itertools.product(*[values for _, values in reversed(given)])
    root = run_path(str(workdir)) / "members"
    members = []
    for combo in rows:
        setting: dict[str, Any] = {}
        parts = []
        for (key, _), value in zip(reversed(given), combo):
            for field in LIST_FIELDS[key]:
                setting[field] = _value(base, field, value)
            short = POPULATION_FIELDS[LIST_FIELDS[key][0]]
            parts.append(f"{short}{_show(setting[LIST_FIELDS[key][0]])}")
        name = "-".join(reversed(parts))
        members.append(Member(name, root / name, with_fields(base, setting)))
    return members


def with_fields(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with population ``fields`` set (only population fields may differ)."""
    bad = sorted(set(fields) - set(POPULATION_FIELDS))
    if bad:
        raise UserError(f"{', '.join(bad)} cannot differ between members of a population (only "
                        f"{', '.join(POPULATION_FIELDS)} can)")
    out = copy.deepcopy(config)
    apply_recipe(out, fields, "population member")
    return out


def seeded_members(config: ml_collections.ConfigDict, members: int
                   ) -> list[ml_collections.ConfigDict]:
    """``members`` copies of ``config`` with seeds 0..N-1 (a population of one recipe: what
    ``bench --members`` and ``aot --members`` compile)."""
    configs = []
    for seed in range(members):
        member = config.copy_and_resolve_references()
        member.seed = seed
        configs.append(member)
    return configs


def shared_differences(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
    """Fields other than population fields on which ``configs`` differ (empty: they can be one
    population)."""
    flats = [flatten(solo_config(c)) for c in configs]
    keys = set().union(*flats) - set(POPULATION_FIELDS)
    return sorted(k for k in keys if len({repr(f.get(k)) for f in flats}) > 1)


def members_of(named: Sequence[tuple[str, str | RunPath, ml_collections.ConfigDict]]
               ) -> list[Member]:
    """Members from ``(name, workdir, config)`` triples (a sweep's packed runs), after checking
    that they differ in population fields only."""
    configs = [solo_config(c) for _, _, c in named]
    diffs = shared_differences(configs)
    if diffs:
        raise UserError(f"runs {', '.join(n for n, _, _ in named)} differ in {', '.join(diffs[:4])}"
                        ": only population fields may differ inside a population")
    return [Member(name, run_path(str(w)), c) for (name, w, _), c in zip(named, configs)]


def group_key(config: ml_collections.ConfigDict) -> tuple[Any, ...]:
    """What members of one group share: the values of :data:`GROUPING_FIELDS`, and the mask
    probability, which sizes the packed prediction rows (a static shape; traced within the group):
    a member then packs as many rows as its separate run, and equals it bit for bit."""
    flat = flatten(config)
    return (*(flat[f] for f in GROUPING_FIELDS), float(flat["mlm.mask_prob"]))


def groups(members: Sequence[Member]) -> list[tuple[int, ...]]:
    """Member indices by group (members agreeing on every grouping field), in first-seen order."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(members):
        out.setdefault(group_key(m.config), []).append(i)
    return [tuple(v) for v in out.values()]


def population_identity(members: Sequence[Member], identities: Sequence[dict[str, Any]],
                        population_dir: Any) -> dict[str, Any]:
    """What a population is (its ``config.json``, sealed into its checkpoints): the members'
    names, folders (relative to ``population_dir``) and identities, in order
    (:func:`minilm_jax.run_identity.member_entry`)."""
    return {"population.members": [run_identity.member_entry(m.name, m.workdir, population_dir,
                                                             ident)
                                   for m, ident in zip(members, identities)]}
