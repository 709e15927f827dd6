"""The engine's and the sweep's decisions at unit level, each checked against a schedule, history
or verdict worked out by hand: when a run evaluates, logs, saves and stops; which configs are
refused; which epoch fine-tuning keeps and when early stopping ends it; when a population member
stops alone; when a claim is stale; which failed unit is tried again and where a job's folder is."""

from __future__ import annotations

import os
import socket
import types
from pathlib import Path

import ml_collections
import numpy as np
import pytest

import minilm_jax.sweep.claims as claims
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.finetune.run_folder import RunFolder, early_stop
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.pretraining import log_eval_steps, snapshot_steps
from minilm_jax.storage import run_path
from minilm_jax.sweep.layout import SweepLayout
from minilm_jax.sweep.worker_loop import SweepRunner
from minilm_jax.train.dispatch import TrainingDiverged
from minilm_jax.train.evaluation import evaluation_due
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.run_loop import run_loop
from test_run_loop import CountingSpec, NullWriter, RecordingCheckpoints


def _due_steps(total, per_dispatch, every, extra):
    return [s for s in range(per_dispatch, total + 1, per_dispatch)
            if evaluation_due(s - per_dispatch, s, every, extra)]


def test_evaluation_lands_on_multiples_and_on_each_extra_step():
    """A pre-training run evaluates at every multiple of ``every`` and at each extra step (a
    snapshot or a log-spaced step), in the dispatch that reaches it."""
    assert _due_steps(10, 1, 5, [3, 7]) == [3, 5, 7, 10]
    assert _due_steps(10, 2, 5, [3, 7]) == [4, 6, 8, 10]  # 2->4 holds 3, 4->6 holds 5, ...
    assert _due_steps(10, 1, 100, [1, 10]) == [1, 10]


def _pretrain_config(num_steps, per_decade=0, fractions=(), per_dispatch=1):
    c = ml_collections.ConfigDict()
    c.train = {"num_steps": num_steps, "steps_per_dispatch": per_dispatch}
    c.eval = {"per_decade": per_decade}
    c.checkpoint = {"keep_fractions": tuple(fractions)}
    return c


def test_log_spaced_steps_stop_below_the_last_step():
    """Log-spaced evaluations are round(10^(k/n)) from 10 up to, not including, the last step
    (the last step is evaluated anyway)."""
    assert log_eval_steps(_pretrain_config(100, per_decade=2)) == (10, 32)
    assert log_eval_steps(_pretrain_config(1000, per_decade=1)) == (10, 100)


def test_snapshot_steps_allow_the_whole_run_and_a_last_step_off_the_dispatch_grid():
    """A snapshot at fraction 1.0 is the last step, which need not be a multiple of
    ``train.steps_per_dispatch``; other snapshot steps must be."""
    assert snapshot_steps(_pretrain_config(10, fractions=(0.5, 1.0), per_dispatch=5)) == (5, 10)
    assert snapshot_steps(_pretrain_config(10, fractions=(1.0,), per_dispatch=4)) == (10,)
    with pytest.raises(ConfigError, match="not multiples"):
        snapshot_steps(_pretrain_config(10, fractions=(0.5,), per_dispatch=4))


class _Spec(CountingSpec):
    """Ten one-step dispatches; the state counts steps; evaluations at ``evals``, asking to stop
    at ``stop_at``; the steps of its log lines are recorded."""

    def __init__(self, workdir, evals=(), stop_at=None):
        super().__init__(workdir, signal_during_eval=False)
        self.evals, self.stop_at, self.logged = evals, stop_at, []

    def log_line(self, step, host, window):
        self.logged.append(step)
        return {}

    def evaluation_due(self, prev, step):
        return step in self.evals

    def evaluate_at(self, step, state):
        return state, step == self.stop_at


def _loop(spec, log_every=100):
    ckpts = RecordingCheckpoints()
    result = run_loop(spec, 0, 0, ckpts, NullWriter(), steps_per_dispatch=1, log_every=log_every,
                      prefetch_depth=1, progress=False, desc="audit")
    return result, ckpts.saved


def test_an_early_stop_saves_its_step_and_ends_the_run_there(tmp_path):
    """An evaluation that asks to stop ends the run at that step, saved, status early_stopped."""
    result, saved = _loop(_Spec(tmp_path, evals=(2, 4, 6), stop_at=4))
    assert (result.status, result.step, result.state) == ("early_stopped", 4, 4)
    assert saved == [(4, 4)]


def test_log_lines_fall_on_multiples_of_log_every_and_the_last_step(tmp_path):
    """Log lines are written at each multiple of ``log_every`` and at the last step."""
    spec = _Spec(tmp_path)
    _loop(spec, log_every=4)
    assert spec.logged == [4, 8, 10]


def test_interval_bounds_include_brackets_and_exclude_parentheses():
    """A range's ``[`` and ``]`` admit the bound, ``(`` and ``)`` refuse it."""
    from minilm_jax.settings.allowed import Allowed as _Allowed

    def Allowed(text):  # noqa: N802
        return _Allowed(text, "a field")

    assert [Allowed("(0, 1)").admits(v, {}) for v in (0.0, 0.5, 1.0)] == [False, True, False]
    assert [Allowed("[0, 1]").admits(v, {}) for v in (0.0, 1.0, 1.01)] == [True, True, False]
    assert [Allowed("[0, 1)").admits(v, {}) for v in (0.0, 1.0)] == [True, False]
    assert [Allowed("> 0").admits(v, {}) for v in (0.0, 1e-9)] == [False, True]


def test_an_evaluation_cadence_equal_to_the_epochs_is_accepted_a_longer_one_refused():
    """``eval.every_epochs`` may equal ``train.epochs`` (one evaluation, at the end), not exceed
    it."""
    from minilm_jax.configs import finetune as finetune_recipe
    from minilm_jax.settings.finetuning import validate_finetune_config

    config = finetune_recipe.get_config("sst2")
    config.train.epochs, config.eval.every_epochs = 3, 3
    validate_finetune_config(config)
    config.eval.every_epochs = 4
    with pytest.raises(ConfigError, match="every_epochs"):
        validate_finetune_config(config)


def _history(*epochs):
    return [{"step": 10 * (e + 1), "epoch": e + 1, "members": [{"score": s} for s in scores]}
            for e, scores in enumerate(epochs)]


def test_early_stopping_counts_evaluations_without_improvement_of_any_member():
    """With patience p, a run stops once no member beat its earlier best (a tie is no
    improvement) in the last p evaluations, and not before p + 1 evaluations."""
    assert early_stop(_history([60], [50], [55]), 2)  # best at evaluation 1, then 2 without
    assert not early_stop(_history([60], [50]), 2)
    assert early_stop(_history([50], [60], [60], [59]), 2)  # a tie does not improve
    assert not early_stop(_history([50], [60], [61]), 2)
    assert not early_stop(_history([60, 50], [50, 55], [50, 56]), 2)  # member 2 improves
    assert not early_stop(_history([60], [50], [40]), 0)  # 0: off


def _folder(tmp_path, history=()):
    return RunFolder(name="", config=None, workdir=run_path(str(tmp_path)), pretrained=None,
                     first=0, size=2, history=list(history))


def test_the_selected_epoch_is_the_first_best_of_each_member(tmp_path):
    """The summary reports each member at its first best validation epoch."""
    folder = _folder(tmp_path, _history([50, 60], [60, 60], [55, 40]))
    assert folder.scores(None)["validation"]["epochs"] == [2, 1]


def test_a_member_that_only_ties_its_best_keeps_its_earlier_parameters(tmp_path):
    """At an evaluation, only members that beat their best score so far copy their parameters
    into the selection; a tie keeps the earlier epoch's."""
    chosen, scores = [], iter([[50.0, 60.0], [60.0, 60.0], [61.0, 59.0]])
    ft = Finetuner.__new__(Finetuner)
    ft.config = ml_collections.ConfigDict({"train": {"early_stopping_patience": 0}})
    ft.folders, ft.folds, ft.is_population = [_folder(tmp_path)], 0, False
    ft.steps_per_epoch, ft.task = 10, types.SimpleNamespace(spec=types.SimpleNamespace(name="t"))
    ft.writers = {"": types.SimpleNamespace(write=lambda *a: None)}
    ft.program = types.SimpleNamespace(select=lambda state, improved: chosen.append(
        improved.tolist()))
    ft._member_metrics = lambda splits: (None, [{"score": s} for s in next(scores)])
    for step in (10, 20, 30):
        ft._evaluate(step)
    assert chosen == [[True, True], [True, False], [True, False]]


def test_a_diverged_member_stops_alone_at_the_step_its_loss_turned_non_finite(capsys):
    """A member whose loss is non-finite is recorded diverged at that step (first + k + 1) and
    the others go on; the run stops only when every member has diverged."""
    pop = PopulationTrainer.__new__(PopulationTrainer)
    pop.size, pop.diverged = 3, {}
    pop.members = [types.SimpleNamespace(name=n) for n in "abc"]
    nan = float("nan")
    live = np.ones((2, 3), bool)
    pop.check_losses(4, {"loss": np.asarray([[1.0, 1.0, 1.0], [1.0, nan, 1.0]]), "live": live})
    assert pop.diverged == {1: 6}
    pop.check_losses(6, {"loss": np.asarray([[nan, nan, 1.0], [nan, nan, 1.0]]), "live": live})
    assert pop.diverged == {1: 6, 0: 7}
    with pytest.raises(TrainingDiverged):
        pop.check_losses(8, {"loss": np.full((2, 3), nan), "live": live})
    assert pop.diverged == {1: 6, 0: 7, 2: 9}


def _board(tmp_path):
    return claims.ClaimBoard(tmp_path / "claims", tmp_path, stale_after=300.0, heartbeat=20.0)


def _held(age, stamp="s1", owner=None):
    data = __import__("json").dumps(owner or {}).encode()
    return types.SimpleNamespace(age=age, stamp=stamp, data=data, version="v")


def test_a_claim_of_a_live_process_on_this_host_is_stale_only_after_the_stale_time(tmp_path):
    """This host's claim of a live process is held until its last write is older than
    ``stale_after`` (not merely a few heartbeats old)."""
    board = _board(tmp_path)
    owner = {"host": socket.gethostname(), "pid": os.getppid()}
    path = board.folder / "a.json"
    assert [board._stale(path, owner, _held(age)) for age in (100.0, 300.0, 301.0)] == [
        False, False, True]


def test_another_hosts_claim_goes_stale_by_this_workers_own_clock(tmp_path, monkeypatch):
    """Another host's claim is stale once this worker has seen it unchanged for ``stale_after``,
    or for three heartbeats when its recorded age is also over ``stale_after``."""
    now = [1000.0]
    monkeypatch.setattr(claims, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    board, owner = _board(tmp_path), {"host": "elsewhere", "pid": 1}
    young, old = board.folder / "young.json", board.folder / "old.json"
    seen = []
    for t in (1000.0, 1020.0, 1059.0, 1060.0, 1299.0, 1300.0):
        now[0] = t
        seen.append((board._stale(young, owner, _held(10.0)), board._stale(old, owner,
                                                                          _held(400.0))))
    assert seen == [(False, False), (False, False), (False, False), (False, True),
                    (False, True), (True, True)]
    now[0] = 1310.0  # a heartbeat (a new stamp) starts the watch again
    assert not board._stale(young, owner, _held(0.0, stamp="s2"))


def test_a_fresh_claim_of_another_host_is_held_though_silent_for_a_few_heartbeats(tmp_path):
    """A look at another host's claim keeps it held while its last write is younger than
    ``stale_after``, even past three heartbeats; older, it is not held."""
    board = _board(tmp_path)
    owner = {"host": "elsewhere", "pid": 1}
    path = board.folder / "a.json"
    assert board._live(path, _held(100.0, owner=owner)) == owner
    assert board._live(path, _held(301.0, owner=owner)) is None


def test_claim_times_from_the_environment_need_three_heartbeats_before_stale(tmp_path,
                                                                           monkeypatch):
    """A stale time under three heartbeats, set by the environment, is refused."""
    monkeypatch.setenv(claims.HEARTBEAT_VARIABLE, "20")
    monkeypatch.setenv(claims.STALE_VARIABLE, "60")
    assert claims.ClaimBoard(tmp_path / "claims", tmp_path).stale_after == 60.0
    monkeypatch.setenv(claims.STALE_VARIABLE, "50")
    with pytest.raises(claims.UserError, match="three"):
        claims.ClaimBoard(tmp_path / "claims", tmp_path)


class _Status:
    def __init__(self, entries=None):
        self.entries, self.recorded = entries or {}, []

    def entry(self, run, stage):
        return self.entries.get(run, {}).get(stage, {})

    def read(self):
        return self.entries

    def record(self, run, stage, state, **extra):
        self.recorded.append((run, stage, state))


def _runner(status):
    runner = SweepRunner.__new__(SweepRunner)
    runner.status, runner._finished = status, set()
    return runner


def test_only_a_failure_since_this_launch_keeps_a_unit_from_being_tried_again():
    """A unit that failed before this worker's launch is tried again; one that failed since (a
    sibling worker's failure) is not."""
    runner = _runner(_Status({"r": {"pretrain": {"state": "failed", "time": 100.0},
                                    "finetune:t:random": {"state": "done", "time": 300.0}}}))
    assert not runner._failed_since("r", "pretrain", started=200.0)
    assert runner._failed_since("r", "pretrain", started=100.0)
    assert not runner._failed_since("r", "finetune:t:random", started=200.0)


def test_settling_records_done_only_for_stages_whose_workdir_finished(tmp_path):
    """``settle`` marks a stage done only when its workdir holds a finished run."""
    status = _Status({"r": {"pretrain": {"state": "failed"}, "evals:z": {"state": "failed"}}})
    runner = _runner(status)
    finished = tmp_path / "p"
    runner.stages = lambda run: [("pretrain", finished, None, []),
                                 ("evals:z", tmp_path / "z", None, [])]
    runner._done = lambda workdir: workdir == finished
    runner.settle([types.SimpleNamespace(name="r")])
    assert status.recorded == [("r", "pretrain", "done")]


def test_a_populations_diverged_member_is_recorded_failed_the_finished_ones_done():
    """After a population stage, its other members are recorded: finished ones done, a diverged
    one failed; the stage's own run is returned."""
    status = _Status()
    members = [{"name": "a", "status": "completed"}, {"name": "b", "status": "diverged",
                                                      "diverged_at": 7},
               {"name": "c", "status": "early_stopped"}]
    mine = _runner(status)._settle_members("a", "pretrain", {"members": members})
    assert mine["name"] == "a"
    assert status.recorded == [("b", "pretrain", "failed"), ("c", "pretrain", "done")]


def test_fine_tuning_folders_split_by_init_only_when_both_inits_run(tmp_path):
    """A job's folder is the task folder with one init, one folder per init with both, and one
    per snapshot for pre-trained jobs from snapshots."""
    layout = SweepLayout(tmp_path)
    task = tmp_path / "runs" / "r" / "finetune" / "t"
    assert str(layout.finetune_dir("r", "t", "random", None, False)) == str(task)
    assert str(layout.finetune_dir("r", "t", "random", None, True)) == str(task / "random")
    assert str(layout.finetune_dir("r", "t", "pretrained", 0.5, True)) == str(
        task / "pretrained@0.5")


def _demo_sweep(tmp_path, **fields):
    """The demo sweep at one tiny point and one seed, ``fields`` changed (nothing is trained)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
    import sweep as sweep_configs

    s = sweep_configs.demo()
    s.shards, s.num_steps, s.vocab_size = str(tmp_path / "shards"), 10, 500
    s.bases, s.ofat, s.groups, s.pretrain_seeds = ("b=E16-H16-I32-L1-A2",), (), (), (0,)
    s.finetune_tasks, s.finetune_init = ("sst2",), "pretrained"
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def test_a_snapshot_fraction_off_the_step_grid_fine_tunes_the_step_pre_training_saved(tmp_path):
    """A fine-tuning job from snapshot fraction f reads step round(f x steps), the step that
    pre-training keeps: 0.35 of 10 steps is step 4 (round half to even), not 3."""
    from minilm_jax.sweep import expand
    from minilm_jax.sweep.layout import finetune_jobs

    s = _demo_sweep(tmp_path, finetune_checkpoints=(0.35, 1.0))
    [run] = expand(s)
    assert snapshot_steps(run.config) == (4, 10)
    assert [j.config.init.which for j in finetune_jobs(s, run, tmp_path)] == ["step:4", "step:10"]


def test_one_stage_of_a_run_whose_pre_training_is_unfinished_runs_nothing_and_waits_for_nothing(
        tmp_path, monkeypatch):
    """``--stage=finetune:...`` on a run whose pre-training has not finished skips the run at
    once: it neither pre-trains it nor waits for a pre-training no worker is running."""
    runner = SweepRunner(_demo_sweep(tmp_path), tmp_path / "root")

    def never(*args, **kwargs):
        raise AssertionError("the worker waited or ran a stage")

    monkeypatch.setattr(runner, "_attempt", never)
    monkeypatch.setattr(runner.claims, "wait_for_change", never)
    selected, interrupted = runner._run_stages("", "finetune:sst2:pretrained")
    assert [r.name for r in selected] == [r.name for r in runner.runs] and interrupted is None
