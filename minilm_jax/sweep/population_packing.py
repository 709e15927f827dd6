"""Which runs of a sweep are pre-trained together as one population (``pack=auto``): runs whose
configs differ only in population fields (:data:`minilm_jax.train.population.POPULATION_FIELDS`:
seed, peak LR, warm-up, decay, mask probability, schedule, dropout), e.g. the pre-training seeds
of one design point. Each member is still pre-trained in its own run folder
(``runs/<name>/pretrain``); the population's own folder (its stacked checkpoints) is
:meth:`SweepLayout.population_dir <minilm_jax.sweep.layout.SweepLayout.population_dir>`."""

from __future__ import annotations

import json
from typing import Sequence

from minilm_jax.errors import UserError
from minilm_jax.settings.command_line import flatten
from minilm_jax.train.population import POPULATION_FIELDS, solo_config

from .spec import Run

PACK_MODES = ("auto", "off")


def pack_key(run: Run) -> str:
    """What packed runs share: every field but the population fields."""
    flat = {k: v for k, v in flatten(solo_config(run.config)).items()
            if k not in POPULATION_FIELDS}
    return json.dumps(flat, sort_keys=True, default=str)


def packs(runs: Sequence[Run], mode: str) -> dict[str, list[Run]]:
    """Each run's pack (itself alone with ``mode="off"`` or when nothing packs with it), in
    declaration order."""
    if mode not in PACK_MODES:
        raise UserError(f"sweep pack={mode!r} must be one of {', '.join(PACK_MODES)}")
    if mode == "off":
        return {r.name: [r] for r in runs}
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(pack_key(run), []).append(run)
    return {r.name: group for group in by_key.values() for r in group}
