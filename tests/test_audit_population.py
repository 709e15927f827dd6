"""Mutation audit (2026-11-29) of the pre-training population code: how members are expanded from
``config.population`` (names, folders, every field a list sets), which fields may differ and how
members group, the per-member strategies of ``over_members``, what a population's folders must
still hold to resume or to count as finished, and the trainer's per-member bookkeeping (which
member diverged at which step, the per-member training rows, the evaluation of live members only).
45 mutants planted, 25 survived the owning tests run per mutant (one equivalent); every
non-equivalent survivor fails here.
Everything runs in process on tiny arrays and hand-written folders, without training."""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.settings.mlm_cap import effective_max_predictions
from minilm_jax.train import batches as batch_lib
from minilm_jax.train import population_trainer
from minilm_jax.train.dispatch import TrainingDiverged
from minilm_jax.train.members import members_strategy, over_members
from minilm_jax.train.population import (expand, group_key, groups, is_population, members_of,
                                         population_identity, seeded_members,
                                         shared_differences, with_fields)
from minilm_jax.train.population_folders import (finished_earlier, refuse_lost_members,
                                                 trained_steps, truncate_members)
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.records import read_population_summary, read_pretrain_summary
from minilm_jax.train.run_log import MetricsWriter

from conftest import RecordingWriter
from test_population import base_config


def _config(**overrides: Any) -> ml_collections.ConfigDict:
    return base_config("unused-shards", **overrides)


def _records(path: Path, rows: list[tuple[int, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s, "split": k, "loss": 1.0}) + "\n"
                            for s, k in rows))


def _summary(workdir: Path, status: str, step: int, best: int | None = None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "summary.json").write_text(json.dumps(
        {"status": status, "step": step, "point": "p", "model": {}, "params": {},
         "flops_per_sequence": {}, "shards": {},
         "best": None if best is None else {"step": best}}))


# ------------------------------------------------------------------------------- expansion
def test_expand_crosses_every_list_seeds_fastest_into_named_member_folders(tmp_path: Path) -> None:
    c = _config()
    assert not is_population(c)
    c.population.seeds = (0, 1)
    assert is_population(c)  # one non-empty list is enough
    c.population.weight_decay = (0.0, 0.01)
    c.population.dropout = (0.0, 0.2)
    members = expand(c, tmp_path)
    # independent count: the product with the last list slowest, seeds fastest
    combos = [(s, wd, do) for do, wd, s in itertools.product((0.0, 0.2), (0.0, 0.01), (0, 1))]
    assert [m.name for m in members] == [f"s{s}-wd{wd:g}-do{do:g}" for s, wd, do in combos]
    assert members[0].name == "s0-wd0-do0"
    for m, (s, wd, do) in zip(members, combos):
        cfg = m.config
        assert (cfg.seed, cfg.optim.weight_decay) == (s, wd)
        assert (cfg.model.hidden_dropout, cfg.model.attention_dropout) == (do, do)
        assert m.workdir == tmp_path / "members" / m.name
        assert all(len(cfg.population[k]) == 0 for k in ("seeds", "weight_decay", "dropout"))


def test_only_population_fields_may_differ_and_members_group_by_shape(tmp_path: Path) -> None:
    base = _config()
    with pytest.raises(UserError, match="train.batch_size cannot differ"):
        with_fields(base, {"seed": 1, "train.batch_size": 8})
    assert [int(c.seed) for c in seeded_members(base, 3)] == [0, 1, 2]
    lin = with_fields(base, {"optim.schedule": "linear", "model.hidden_dropout": 0.0})
    assert shared_differences([base, lin]) == []  # grouping fields are population fields
    other = base_config("unused-shards", **{"train.batch_size": 8})
    assert shared_differences([base, base, other]) == ["train.batch_size"]
    listed = _config()
    listed.population.seeds = (0, 1)
    (m,) = members_of([("a", tmp_path / "a", listed)])
    assert len(m.config.population.seeds) == 0  # a member's config is its separate run's
    # mask probability sizes the packed rows: another group; first-seen order
    rate = with_fields(base, {"mlm.mask_prob": 0.3, "seed": 2})
    assert group_key(rate) != group_key(base)
    configs = [base, rate, with_fields(base, {"seed": 5}), lin]
    named = [types.SimpleNamespace(config=c) for c in configs]
    assert groups(named) == [(0, 2), (1,), (3,)]


def test_population_identity_keeps_each_members_own_identity(tmp_path: Path) -> None:
    members = [types.SimpleNamespace(name=n, workdir=tmp_path / "members" / n) for n in "ab"]
    ident = population_identity(members, [{"seed": 0}, {"seed": 1}], tmp_path)
    assert [(e["name"], e["identity"]["seed"]) for e in ident["population.members"]] == [
        ("a", 0), ("b", 1)]


# ------------------------------------------------------------------------------ strategies
@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_over_members_maps_the_leading_axis_and_shares_the_last(strategy: str) -> None:
    assert members_strategy("auto") == "map"  # the suite runs on CPU
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    y = np.array([10.0, 20.0], np.float32)
    shared = np.array([1.0, 2.0, 3.0], np.float32)
    fn = over_members(lambda a, b, c: a * c + b, strategy, shared=1)
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x), jnp.asarray(y), jnp.asarray(shared))),
                               x * shared + y[:, None])


# -------------------------------------------------------------------------------- folders
def test_truncation_counts_every_members_dropped_records(tmp_path: Path) -> None:
    writers = {}
    for name, rows in (("a", [(1, "train"), (5, "train"), (6, "train")]),
                       ("b", [(2, "train"), (7, "train")])):
        _records(tmp_path / name / "metrics.jsonl", rows)
        writers[name] = MetricsWriter(tmp_path / name, tensorboard=False)
    assert truncate_members(writers, 4) == 2 + 1
    for w in writers.values():
        w.close()


def test_trained_steps_and_lost_history_are_refused_from_the_first_step(tmp_path: Path) -> None:
    pop = tmp_path / "pop"
    (pop / "checkpoints" / "2").mkdir(parents=True)
    (pop / "checkpoints" / "3").mkdir()
    assert trained_steps(pop) == 3
    _summary(pop, "completed", 7)
    assert trained_steps(pop) == 7
    (pop / "summary.json").unlink()
    ok, bad = (types.SimpleNamespace(name=n, workdir=tmp_path / n) for n in ("ok", "bad"))
    for m in (ok, bad):
        _records(m.workdir / "metrics.jsonl", [(1, "validation")])
        (m.workdir / "config.json").write_text("{}")
    refuse_lost_members(pop, [ok, bad])  # nothing lost
    (bad.workdir / "metrics.jsonl").unlink()
    with pytest.raises(UserError, match=r"trained to step 3 .*member bad "):
        refuse_lost_members(pop, [ok, bad])
    # a member the summary records as diverged may lack its history; a healthy one may not
    (pop / "summary.json").write_text(json.dumps({"status": "completed", "step": 3, "members": [
        {"name": "bad", "status": "diverged"}, {"name": "ok", "status": "completed"}]}))
    refuse_lost_members(pop, [ok, bad])
    _summary(ok.workdir, "completed", 3, best=2)  # its best step has no validation record
    with pytest.raises(UserError, match="member ok .*no record of its best step 2"):
        refuse_lost_members(pop, [ok, bad])


def test_finished_earlier_needs_the_last_step_and_every_members_best(tmp_path: Path) -> None:
    pop = tmp_path / "pop"
    ok, gone = (types.SimpleNamespace(name=n, workdir=tmp_path / n) for n in ("ok", "gone"))
    _summary(ok.workdir, "completed", 8)
    _summary(gone.workdir, "diverged", 3)
    for m in (ok, gone):
        _records(m.workdir / "metrics.jsonl", [(2, "validation")])
    _summary(pop, "completed", 8)
    (pop / "summary.json").write_text(json.dumps({"status": "completed", "step": 8, "members": [
        {"name": "ok"}, {"name": "gone"}]}))
    assert finished_earlier(pop, [ok, gone], 8, keep_best=False, start=8)["step"] == 8
    assert finished_earlier(pop, [ok, gone], 9, keep_best=False, start=8) is None
    (ok.workdir / "best" / "2").mkdir(parents=True)
    (ok.workdir / "best" / "notes.txt").write_text("")  # a stray file beside the checkpoint
    assert finished_earlier(pop, [ok], 8, keep_best=True, start=8)["step"] == 8
    assert finished_earlier(pop, [ok, gone], 8, keep_best=True, start=8) is None  # gone: no best


# -------------------------------------------------------------------------- the trainer
def _trainer(size: int) -> PopulationTrainer:
    """A trainer with only what its per-member bookkeeping reads (no program, no data)."""
    t = object.__new__(PopulationTrainer)
    t.size, t.diverged = size, {}
    t.members = [types.SimpleNamespace(name=f"m{i}") for i in range(size)]
    t.member_writers = [RecordingWriter() for _ in range(size)]
    t.writer = RecordingWriter()
    return t


def test_check_losses_records_each_live_members_first_non_finite_step() -> None:
    t = _trainer(3)
    t.diverged = {2: 5}  # stopped before (restored so): its rows are not live
    losses = np.array([[1.0, 1.0, np.nan], [1.0, np.inf, np.nan], [1.0, np.nan, 1.0]])
    live = np.array([[True, True, False], [True, True, False], [True, False, False]])
    t.check_losses(10, {"loss": losses, "live": live})  # steps 11..13: m1 at its first, 12
    assert t.diverged == {2: 5, 1: 12}
    t.check_losses(13, {"loss": np.ones((1, 3)), "live": np.ones((1, 3), bool)})  # 2 of 3: go on
    with pytest.raises(TrainingDiverged, match="m0 at step 14, m1 at step 12, m2 at step 5"):
        t.check_losses(13, {"loss": np.full((1, 3), np.nan), "live": np.ones((1, 3), bool)})


def test_log_line_writes_each_live_members_own_row_and_counts_the_live(tmp_path: Path) -> None:
    t = _trainer(3)
    t.diverged = {1: 3}
    t.config = ml_collections.ConfigDict({"train": {"batch_size": 4}})
    t.model_cfg = types.SimpleNamespace(max_len=8)
    t.flops_paper, t.member_flops, t._peak = 100.0, [10.0, 20.0, 30.0], 1e9
    t._window_tokens, t._window_steps = np.array([64.0, 64.0, 32.0]), 2
    t._window_masked = np.array([[3.0, 20.0], [0.0, 0.0], [6.0, 20.0]])
    host = {k: np.array([[0.0, 0.0, 0.0], [v, v + 1.0, v + 2.0]])
            for k, v in (("loss", 1.0), ("lr", 0.1), ("grad_norm", 5.0))}
    window = types.SimpleNamespace(elapsed=lambda: 2.0, compiled=True, host_wait=0.0)
    shown = t.log_line(6, host, window)
    assert shown["live"] == "2/3" and shown["loss"] == f"{np.mean([1.0, 3.0]):.3f}"
    assert t.member_writers[1].rows == []  # the diverged member writes nothing
    (step, split, a), = t.member_writers[0].rows
    (_, _, c), = t.member_writers[2].rows
    assert (step, split) == (6, "train")
    assert (a["lr"], c["lr"], a["grad_norm"], c["grad_norm"]) == (0.1, 2.1, 5.0, 7.0)
    assert (a["flops_complete"], c["flops_complete"]) == (6 * 4 * 10.0, 6 * 4 * 30.0)
    assert (a["mask_rate"], c["mask_rate"]) == (3 / 20, 6 / 20)
    assert c["tokens_per_sec"] == 32.0 / 2.0 and c["mfu"] == (2 * 4 / 2.0) * 30.0 / 1e9
    (_, _, pop), = t.writer.rows
    assert (pop["members"], pop["live"]) == (3, 2)
    assert pop["mfu"] == (2 * 4 / 2.0) * 60.0 / 1e9


def test_evaluation_writes_and_saves_live_members_only() -> None:
    t = _trainer(2)
    t.diverged = {0: 3}
    t._best_loss = [float("inf"), 2.0]
    t.eval_split, t.reference = object(), None
    saves: list[tuple[int, str, int]] = []
    t.member_ckpts = [types.SimpleNamespace(
        save_best=lambda step, st, m, i=i: saves.append((i, "best", step)),
        save_snapshot=lambda step, st, i=i: saves.append((i, "snapshot", step))) for i in range(2)]
    t.evaluate = lambda split, state: [{"loss": 1.0, "perplexity": np.e},
                                       {"loss": 1.5, "perplexity": np.exp(1.5)}]
    state = {k: {"w": np.zeros((2, 1))} for k in ("params", "rest", "opt_state")}
    state["step"] = np.array([3, 4])
    t.evaluate_at(4, state)
    assert t.member_writers[0].rows == [] and [r[:2] for r in t.member_writers[1].rows] == [
        (4, "validation")]
    assert saves == [(1, "best", 4), (1, "snapshot", 4)] and t._best_loss == [float("inf"), 1.5]


# --------------------------------------------- a real trainer (built, never compiled or trained)
def _two_members(shards: Path, root: Path) -> PopulationTrainer:
    """Members a (seed 0, mask 15%) and b (seed 1, mask 30%), the cap derived per member."""
    base = base_config(shards, **{"checkpoint.keep_fractions": (), "mlm.max_predictions": 0})
    members = members_of([("a", root / "a", base),
                          ("b", root / "b", with_fields(base, {"seed": 1, "mlm.mask_prob": 0.3}))])
    return PopulationTrainer(members, root / "pop", "map")


def test_each_member_reads_its_own_order_and_counts_its_own_flops(word_shards: Path,
                                                                  tmp_path: Path) -> None:
    t = _two_members(word_shards, tmp_path)
    batch = t.host_batch(0, 1)["tokens"]  # [N, K, M, b, T]
    for i, seed in enumerate((0, 1)):
        own = batch_lib.train_batch(t.train_split, batch_lib.BatchIndexer(
            seed, t.train_split.num_sequences, 16), 0, t.model_cfg.pad_id)
        np.testing.assert_array_equal(batch[i], own["tokens"])
    assert not np.array_equal(batch[0], batch[1])
    # a derived cap follows each member's own mask probability: of 64 tokens, 20 and 31
    caps = [effective_max_predictions(m.config.mlm, 64) for m in t.members]
    assert caps == [20, 31]
    assert t.member_flops == [accounting.train_flops_per_sequence(t.model_cfg, num_predictions=n)
                              for n in caps]
    t.lock.release()


def test_resumed_members_that_diverged_are_summarised_at_their_own_steps(
        word_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed at step 5 with a stopped at step 3 (it diverged at 4); b diverges at 7 during the
    run: each member's summary and the population's hold each one's own step."""
    t = _two_members(word_shards, tmp_path)

    class Quiet:
        def __getattr__(self, name: str):
            return lambda *args, **kwargs: None

    state = {"step": np.array([3, 5]), "live": np.array([False, True])}
    monkeypatch.setattr(population_trainer, "open_run",
                        lambda *args, **kwargs: (Quiet(), Quiet(), 5, state))

    def loop(spec: PopulationTrainer, *args: Any, **kwargs: Any) -> None:
        assert spec.diverged == {0: 4}
        spec.diverged[1] = 7
        raise TrainingDiverged("every member")

    monkeypatch.setattr(population_trainer, "run_loop", loop)
    with pytest.raises(TrainingDiverged):
        t.train()
    t.lock.release()
    a, b = read_pretrain_summary(tmp_path / "a"), read_pretrain_summary(tmp_path / "b")
    assert (a.status, a.step, a.diverged_at, b.step, b.diverged_at) == ("diverged", 3, 4, 6, 7)
    assert (a.mask_rate["asked"], b.mask_rate["asked"]) == (0.15, 0.3)
    pop = read_population_summary(tmp_path / "pop")
    assert pop.step == 5 and [(m["name"], m["step"], m["diverged_at"]) for m in pop.members] == [
        ("a", 3, 4), ("b", 6, 7)]
