"""Mutation audit of sweep expansion and run control (2026-11-29): ``minilm_jax/sweep/spec.py``
(bases x one-factor-at-a-time values x seeds, run names, override order, placeholders, snapshot
fractions, fine-tuning tasks and seeds) and ``minilm_jax/train/dispatch.py`` (dispatch plans,
stop requests and signal handlers). 35 mutants planted, 13 survived the existing tests (1
equivalent); each test here pins what a surviving mutant changed, against hand-counted values.
Nothing is trained: every test expands tiny configs or calls the helpers in-process."""

from __future__ import annotations

import signal
from pathlib import Path

import ml_collections
import pytest

from minilm_jax.configs import sweep as sweep_recipes
from minilm_jax.sweep.spec import (Membership, Run, expand, fill_placeholders,
                                   finetune_run_config, knob_overrides)
from minilm_jax.train.dispatch import dispatch_plan, stop_signals

POINT = "E16-H16-I32-L1-A2"
WIDE = "E16-H32-I64-L2-A2"


def _sweep(**fields: object) -> ml_collections.ConfigDict:
    """The demo sweep reduced to ``fields`` (no ofat, groups or seeds unless given)."""
    s = sweep_recipes.demo()
    s.num_steps, s.eval_every, s.vocab_size = 8, 4, 500
    s.bases, s.ofat, s.groups, s.pretrain_seeds = (f"b={POINT}",), (), (), ()
    s.pretrain_overrides = ()
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def _by_name(runs: list[Run]) -> dict[str, Run]:
    return {r.name: r for r in runs}


# ------------------------------------------------------------------------- overrides and knobs


def test_later_overrides_win_and_overrides_follow_the_shortcut_knobs():
    """``pretrain_overrides`` apply in order after the knobs (num_steps=8, eval_every=4)."""
    s = _sweep(pretrain_overrides=("train.num_steps=12", "train.num_steps=16",
                                   "checkpoint.every_steps=8"))
    [run] = expand(s)
    assert run.config.train.num_steps == 16
    assert run.config.eval.every_steps == 4
    assert run.config.checkpoint.every_steps == 8
    [plain] = expand(_sweep())
    assert (plain.config.train.num_steps, plain.config.checkpoint.every_steps) == (8, 4)
    assert plain.config.model.vocab_size == 500


def test_knob_overrides_name_each_field_and_keep_fractions_exactly():
    s = _sweep(shards="/d/s", batch_size=6, finetune_checkpoints=(0.25, 0.5, 1.0))
    assert knob_overrides(s) == [
        "data.shards=/d/s", "train.num_steps=8", "train.batch_size=6", "eval.every_steps=4",
        "checkpoint.every_steps=4", "model.vocab_size=500",
        "checkpoint.keep_fractions=(0.25, 0.5, 1.0)"]
    [run] = expand(s)
    assert tuple(run.config.checkpoint.keep_fractions) == (0.25, 0.5, 1.0)


def test_every_placeholder_is_filled_without_a_doubled_slash():
    s = _sweep(data_root="/r/", finetune_data_dir="/g")
    text = "{data_root}/a,{data_root}/b,{finetune_data_dir}/c,{data_root}"
    assert fill_placeholders(text, s) == "/r/a,/r/b,/g/c,/r"


# ------------------------------------------------------------------------- bases, ofat, seeds


def test_a_one_factor_value_varies_its_own_base_only():
    s = _sweep(bases=(f"a={POINT}", f"w={WIDE}"), ofat=("w:model.num_layers=1,3",))
    runs = _by_name(expand(s))
    assert list(runs) == ["a", "w", "w__num_layers=1", "w__num_layers=3"]
    for name, layers in (("w__num_layers=1", 1), ("w__num_layers=3", 3)):
        config = runs[name].config
        assert (config.model.hidden_dim, config.model.num_layers) == (32, layers)
        assert runs[name].memberships == [Membership("ofat:model.num_layers", "w",
                                                     "model.num_layers", layers)]
    assert runs["a"].config.model.hidden_dim == 16


def test_a_path_value_is_named_by_its_last_part_even_with_a_trailing_slash():
    s = _sweep(ofat=("b:data.shards=/x/n100/",))
    names = [r.name for r in expand(s)]
    assert names == ["b", "b__shards=n100"]


def test_a_run_reached_twice_is_trained_once_with_each_membership_once():
    """The ofat value equal to the base, and a group naming the base point twice."""
    s = _sweep(ofat=("b:model.num_layers=1,2",), groups=(f"iso_flop:g={POINT},{POINT}",))
    runs = expand(s)
    assert [r.name for r in runs] == ["b", "b__num_layers=2"]
    assert runs[0].memberships == [
        Membership("base", "b"), Membership("ofat:model.num_layers", "b", "model.num_layers", 1),
        Membership("iso_flop:g")]


def test_without_seeds_a_run_is_its_own_design_and_with_seeds_every_one_is_kept_in_order():
    [run] = expand(_sweep())
    assert (run.name, run.design) == ("b", "")
    runs = expand(_sweep(pretrain_seeds=(2, 0, 5), ofat=("b:model.num_layers=2",)))
    assert [(r.name, r.design, r.pretrain_seed) for r in runs] == [
        ("b__seed=2", "b", 2), ("b__seed=0", "b", 0), ("b__seed=5", "b", 5),
        ("b__num_layers=2__seed=2", "b__num_layers=2", 2),
        ("b__num_layers=2__seed=0", "b__num_layers=2", 0),
        ("b__num_layers=2__seed=5", "b__num_layers=2", 5)]


def test_a_grid_crosses_every_field_in_names_and_configs():
    s = _sweep(bases=(), grid=(POINT,),
               grid_fields=("model.num_layers=1,2", "train.num_steps=8,12"))
    runs = expand(s)
    expected = [(layers, steps) for layers in (1, 2) for steps in (8, 12)]
    assert [r.name for r in runs] == [f"{POINT}__num_layers={a}__num_steps={b}"
                                      for a, b in expected]
    assert [(r.config.model.num_layers, r.config.train.num_steps) for r in runs] == expected


# ------------------------------------------------------------------------- fine-tuning configs


def test_a_fine_tuning_config_takes_the_sweeps_init_seeds_and_its_tasks_overrides_only():
    s = _sweep(finetune_init="random", finetune_seeds=(4, 5, 6), finetune_data_dir="/g/",
               finetune_overrides=("train.epochs=3", "bbc_headlines:train.epochs=7",
                                   "data.dir={finetune_data_dir}/bbc"))
    config = finetune_run_config(s, "bbc", Path("/ck"))
    assert (config.init.mode, config.init.checkpoint) == ("random", "/ck")
    assert tuple(config.train.seeds) == (4, 5, 6)
    assert config.train.epochs == 3
    assert config.data.dir == "/g/bbc"
    other = finetune_run_config(s, "bbc_headlines", Path("/ck"))
    assert other.train.epochs == 7


# ------------------------------------------------------------------------- dispatch and signals


@pytest.mark.parametrize("start,total,k,boundaries,expected", [
    (0, 10, 4, (), [(0, 4), (4, 4), (8, 2)]),
    (3, 10, 4, (), [(3, 4), (7, 3)]),
    (0, 10, 4, (8, 3), [(0, 3), (3, 4), (7, 1), (8, 2)]),
    (0, 20, 16, (17, 9, 2), [(0, 2), (2, 7), (9, 8), (17, 3)]),
])
def test_a_dispatch_plan_ends_at_the_last_step_and_stops_at_each_boundary(
        start: int, total: int, k: int, boundaries: tuple[int, ...],
        expected: list[tuple[int, int]]):
    plan = dispatch_plan(start, total, k, boundaries)
    assert plan == expected
    assert sum(n for _, n in plan) == total - start


def test_stop_signals_restore_both_handlers_and_a_later_block_starts_fresh():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_signals() as first:
        assert signal.getsignal(signal.SIGINT) not in before[1:]
        signal.raise_signal(signal.SIGTERM)
        assert first.signal == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with stop_signals() as second:
        assert second is not first and second.signal is None
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
