"""Pre-training populations on real text: members equal separate runs, each member is a run, exact
resume after SIGKILL, a diverging member stops alone, members sharded over 8 fake devices."""

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from minilm_jax.errors import UserError
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.train.checkpoint import find_checkpoint, load_model_state
from minilm_jax.train.dispatch import TrainingDiverged
from minilm_jax.train.pretrainer import Pretrainer
from minilm_jax.train.population import expand, members_of, with_fields
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.records import is_done, read_pretrain_summary
from minilm_jax.train.run_log import read_metrics

from conftest import (adam_drift_bound, exact_xla_flags, never_built, run_in_command,
                      slow_pretrain_script, trajectory_tolerance)
from test_pretrain import (REPO, STEP_TERMS, cli_args, cli_env, small_config, train_losses,
                           wait_for)

# Four members: different seeds, peak learning rates, warm-up and mask probability; the last also
# another schedule and no dropout (so it is compiled as a second group inside the same program).
# The first two keep the recipe's values but the seed: their separate runs are the programs the
# packed sweep's runs compile (test_a_packed_sweep_...: read from the compilation cache).
SETTINGS = [{"seed": 0, "optim.peak_lr": 5e-4},
            {"seed": 1},
            {"seed": 2, "optim.peak_lr": 2e-3, "optim.warmup_steps": 2, "mlm.mask_prob": 0.1},
            {"seed": 3, "optim.peak_lr": 1e-3, "optim.schedule": "linear",
             "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}]


def base_config(shards, **overrides):
    return small_config(shards, **{"train.num_steps": 8, "eval.every_steps": 4,
                                   "checkpoint.every_steps": 4,
                                   "checkpoint.keep_fractions": (0.5,), **overrides})


def population(shards, root: Path, **overrides):
    base = base_config(shards, **overrides)
    return members_of([(f"m{i}", root / f"m{i}", with_fields(base, s))
                       for i, s in enumerate(SETTINGS)])


def validation_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(workdir) / "metrics.jsonl")
            if r["split"] == "validation"}


def named_params_of(workdir, which="latest") -> dict:
    config_model = model_from_config(base_config("x"))
    state = load_model_state(find_checkpoint(Path(workdir), which)[1], config_model)
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def params_of(workdir, which="latest"):
    config_model = model_from_config(base_config("x"))
    return jax.tree.leaves(load_model_state(find_checkpoint(Path(workdir), which)[1], config_model))


def train_population_and_solos(shards: Path, root: Path) -> None:
    """The population (lax.map, 1 device) and the four separate runs it should equal, under
    ``root``; its summary in root/population_summary.json."""
    members = population(shards, root / "members")
    summary = PopulationTrainer(members, root / "pop", "map").run()
    for m in members:
        Pretrainer(m.config, root / "solo" / m.name).run()
    (root / "population_summary.json").write_text(json.dumps(summary))


def run_exact(function, *paths: Path) -> None:
    """Runs ``function(*paths)`` in a command with the exact code generation
    (conftest.exact_xla_flags), where a population equals its separate runs bit for bit (not at
    the suite's fast-compile opt level 0), and population_env's 8 fake devices: the device count
    changes XLA's CPU code too, so both sides of a bit-for-bit comparison use the same."""
    run_in_command(function, *paths, xla_flags=exact_xla_flags(8))


@pytest.fixture(scope="module")
def trained(word_shards, tmp_path_factory):
    """One population (lax.map, 1 device) and the four separate runs it should equal (run_exact)."""
    root = tmp_path_factory.mktemp("population")
    run_exact(train_population_and_solos, word_shards, root)
    summary = json.loads((root / "population_summary.json").read_text())
    return root, population(word_shards, root / "members"), summary


def test_members_equal_separate_runs_exactly(trained):
    root, members, summary = trained
    assert summary["status"] == "completed" and len(summary["members"]) == 4
    for m in members:
        solo = root / "solo" / m.name
        assert train_losses(m.workdir) == train_losses(solo)
        assert validation_losses(m.workdir) == validation_losses(solo)
        assert (read_pretrain_summary(m.workdir).final_params_sha256
                == read_pretrain_summary(solo).final_params_sha256)
    # the members really differ (seeds, learning rates, schedules)
    assert len({train_losses(m.workdir)[8] for m in members}) == 4


def test_each_member_is_a_run_read_like_a_separate_one(trained):
    root, members, _ = trained
    for m in members:
        solo = root / "solo" / m.name
        assert is_done(m.workdir)
        assert json.loads((m.workdir / "config.json").read_text()) == json.loads(
            (solo / "config.json").read_text())
        mine, theirs = read_pretrain_summary(m.workdir), read_pretrain_summary(solo)
        assert mine.best == theirs.best and mine.best["test_loss"] > 0
        for which in ("best", "latest", "step:4"):
            assert find_checkpoint(m.workdir, which)[0] == find_checkpoint(solo, which)[0]
            for a, b in zip(params_of(m.workdir, which), params_of(solo, which)):
                np.testing.assert_array_equal(a, b)


def test_members_on_eight_devices_equal_unsharded_members(trained, word_shards, tmp_path):
    # m2 and m3 of ``trained``: their own learning rates, warm-up and mask probability, in two
    # groups (m3: another schedule, no dropout), one member per shard of the members axis; no
    # snapshots, best checkpoints or step-4 checkpoint (each save of 8-device arrays compiles its
    # slicing programs): the comparison reads the final state only.
    root, trained_members, _ = trained
    members = trained_members[2:]
    base = base_config(word_shards, **{"mesh.members": 2, "mesh.data": 2, "mesh.fsdp": 2,
                                       "checkpoint.every_steps": 8, "checkpoint.keep_fractions": (),
                                       "checkpoint.keep_best": False})
    sharded = members_of([(m.name, tmp_path / "members" / m.name, with_fields(base, s))
                          for m, s in zip(members, SETTINGS[2:])])
    trainer = PopulationTrainer(sharded, tmp_path / "pop", "vmap")
    assert len(trainer.program.groups) == 2
    assert dict(trainer.mesh.shape) == {"members": 2, "data": 2, "fsdp": 2}
    assert all(leaf.sharding.spec[0] == "members"
               for leaf in jax.tree.leaves(trainer.state["params"]))
    trainer.run()
    for m, s in zip(members, sharded):
        a, b = train_losses(m.workdir), train_losses(s.workdir)
        assert a.keys() == b.keys()
        # 8 steps of sums in other orders (sharded over members, data, fsdp; tests/conftest.py)
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=0,
                                   atol=trajectory_tolerance(max(a.values()), STEP_TERMS, 8))
        # parameters: every coordinate within Adam's bound (the key bias's gradient is rounding
        # noise), the whole model but the key bias within the 8 steps' trajectory bound
        x, y = named_params_of(m.workdir), named_params_of(s.workdir)
        optim = m.config.optim
        bound = adam_drift_bound(8 * optim.peak_lr, optim.b1, optim.b2)
        assert max(float(np.max(np.abs(x[k] - y[k]))) for k in y) <= bound
        real = [k for k in y if "['attention']['key']['bias']" not in k]
        diff = np.sqrt(sum(np.sum((x[k] - y[k]) ** 2.0) for k in real))
        norm = np.sqrt(sum(np.sum(y[k] ** 2.0) for k in real))
        assert diff <= trajectory_tolerance(norm, STEP_TERMS, 8)


def test_a_diverging_member_stops_alone(trained, word_shards, tmp_path):
    base = base_config(word_shards, **{"checkpoint.keep_fractions": ()})
    assert with_fields(base, SETTINGS[0]).to_dict() == base.to_dict()  # m0 of ``trained``
    members = members_of([("ok", tmp_path / "ok", base),
                          ("bad", tmp_path / "bad", with_fields(base, {"optim.peak_lr": 1e30}))])
    summary = PopulationTrainer(members, tmp_path / "pop", "map").run()
    assert summary["status"] == "completed"
    ok, bad = read_pretrain_summary(tmp_path / "ok"), read_pretrain_summary(tmp_path / "bad")
    assert ok.status == "completed" and ok.step == 8 and is_done(tmp_path / "ok")
    assert bad.status == "diverged" and not is_done(tmp_path / "bad")
    assert bad.step == bad.diverged_at - 1 < 8
    assert max(train_losses(tmp_path / "bad")) < bad.diverged_at  # no rows after it
    assert all(np.isfinite(v) for v in train_losses(tmp_path / "bad").values())
    assert find_checkpoint(tmp_path / "bad", "latest")[0] == bad.step  # its last finite state
    # the healthy member trained as if alone: as m0's separate run (``trained``: the same
    # config but for the snapshots it keeps), within 8 steps' rounding (this population is
    # compiled at the suite's opt level, ``trained`` with the exact flags); a member disturbed
    # by its diverged neighbour (a NaN in a shared sum, a skipped or repeated step) is far outside
    ours, alone = train_losses(tmp_path / "ok"), train_losses(trained[0] / "solo" / "m0")
    assert ours.keys() == alone.keys()
    np.testing.assert_allclose([ours[k] for k in alone], [alone[k] for k in alone], rtol=0,
                               atol=trajectory_tolerance(max(alone.values()), STEP_TERMS, 8))

    both_bad = members_of([(n, tmp_path / f"all-{n}", with_fields(base, {"seed": s,
                                                                         "optim.peak_lr": 1e30}))
                           for n, s in (("a", 0), ("b", 1))])
    with pytest.raises(TrainingDiverged, match="every member of the population diverged"):
        PopulationTrainer(both_bad, tmp_path / "pop-bad", "map").run()
    assert read_pretrain_summary(tmp_path / "all-a").status == "diverged"


def test_a_population_with_a_diverged_member_runs_again(word_shards, tmp_path):
    """A member that diverged is a finished member: the same population again completes instead
    of refusing the member's history as lost, also where that member left no ``metrics.jsonl``
    (it diverged before its first record, before the history file was written at the start);
    a healthy member's lost or truncated history is still refused."""
    base = base_config(word_shards, **{"checkpoint.keep_fractions": ()})
    members = members_of([("ok", tmp_path / "ok", base),
                          ("bad", tmp_path / "bad", with_fields(base, {"optim.peak_lr": 1e30}))])
    PopulationTrainer(members, tmp_path / "pop", "map").run()
    assert read_pretrain_summary(tmp_path / "bad").status == "diverged"
    (tmp_path / "bad" / "metrics.jsonl").unlink()  # as a member diverged before any record left it
    again = PopulationTrainer(members, tmp_path / "pop", "map")
    again.initial = dataclasses.replace(again.initial, build=never_built)  # it restores, never builds
    summary = again.run()
    assert summary["status"] == "completed"
    assert [m["status"] for m in summary["members"]] == ["completed", "diverged"]
    history = tmp_path / "ok" / "metrics.jsonl"  # a healthy member's history cut in half
    data = history.read_bytes()
    history.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"history of member ok .*no record of its best step"):
        PopulationTrainer(members, tmp_path / "pop", "map")
    history.unlink()
    with pytest.raises(UserError, match="history of member ok"):
        PopulationTrainer(members, tmp_path / "pop", "map")


def population_cli(shards, workdir):
    """The population command: base_config's run (8 steps, evaluated and saved every 4) with two
    seeds and the recipe's learning rate, i.e. m0 and m1 of ``trained``."""
    return cli_args(shards, workdir, 8, {
        "eval.every_steps": 4, "eval.batch_size": 48, "checkpoint.every_steps": 4,
        "mlm.max_predictions": 16, "population.seeds": "0,1", "population.peak_lr": "5e-4",
        "checkpoint.keep": 1})


def population_env():
    """The command's environment: 8 fake CPU devices (it trains on one of them) and the exact code
    generation (conftest.exact_xla_flags), under which its members equal ``trained``'s separate
    runs bit for bit."""
    return {**cli_env(), "XLA_FLAGS": exact_xla_flags(8)}


# The population command, slowed after its step-4 checkpoint (a SIGKILL then lands mid-run).
SLOW_AFTER_CHECKPOINT_4 = slow_pretrain_script(
    "minilm_jax.train.population_trainer:PopulationTrainer")


def member_digests(workdir):
    return {p.name: read_pretrain_summary(p).final_params_sha256
            for p in sorted((Path(workdir) / "members").iterdir())}


@pytest.mark.timeout(450)  # waits on a command it kills (may build the module's population first)
def test_sigkill_mid_population_resumes_bit_identically(trained, word_shards, tmp_path):
    # The uninterrupted reference: the command's members are base_config's run with seed 0 and 1
    # at the recipe's learning rate 5e-4, i.e. m0 and m1 of ``trained``, whose separate runs its
    # members equal bit for bit (test_members_equal_separate_runs_exactly).
    root, members, _ = trained
    assert [m.config.optim.peak_lr for m in members[:2]] == [5e-4, 5e-4]
    solo = {"s0-lr0.0005": root / "solo" / "m0", "s1-lr0.0005": root / "solo" / "m1"}
    reference = {name: read_pretrain_summary(d).final_params_sha256 for name, d in solo.items()}
    killed = tmp_path / "killed"
    command = population_cli(word_shards, killed)
    proc = subprocess.Popen([command[0], "-c", SLOW_AFTER_CHECKPOINT_4, *command[3:]], cwd=REPO,
                            env=population_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(killed / "checkpoints" / "4", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    out = subprocess.run(population_cli(word_shards, killed), cwd=REPO, env=population_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resumed from checkpoint at step" in out.stdout
    assert member_digests(killed) == reference
    for name in reference:
        assert train_losses(killed / "members" / name) == train_losses(solo[name])


    # A member that lost its final state and summary resumes from the population's checkpoint.
    member = killed / "members" / "s1-lr0.0005"
    before = read_pretrain_summary(member)
    shutil.rmtree(member / "checkpoints")
    (member / "summary.json").unlink()
    out = subprocess.run(population_cli(word_shards, killed), cwd=REPO, env=population_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    after = read_pretrain_summary(member)
    assert (after.status, after.best, after.final_params_sha256) == (
        before.status, before.best, before.final_params_sha256)
    # One that lost its best checkpoint, or its whole folder, is refused in one line naming it,
    # never reported completed without its history.
    shutil.rmtree(killed / "members" / "s0-lr0.0005" / "best")
    out = subprocess.run(population_cli(word_shards, killed), cwd=REPO, env=population_env(),
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and (
        "member s0-lr0.0005" in out.stderr and "lost its best checkpoint" in out.stderr), out.stderr
    shutil.rmtree(member)
    out = subprocess.run(population_cli(word_shards, killed), cwd=REPO, env=population_env(),
                         capture_output=True, text=True)
    assert out.returncode != 0 and not member.exists()
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "member s1-lr0.0005" in last and "history" in last, last


def test_population_cli_lists_and_strategy_are_checked(word_shards, tmp_path):
    """``a,b`` for a list of names is two members; a bad ``population.members`` is one line."""
    args = population_cli(word_shards, tmp_path / "p")
    shown = subprocess.run(args + ["--config.population.schedule=linear,cosine", "--print_config"],
                           cwd=REPO, env=cli_env(), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert 'population.schedule = ["linear", "cosine"]' in shown.stdout
    assert "population.seeds = [0, 1]" in shown.stdout  # numbers stay numbers
    bad = subprocess.run(args + ["--config.population.members=bogus"], cwd=REPO, env=cli_env(),
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: population.members='bogus': must be one of auto, vmap, map"], bad.stderr


def test_population_lists_cross_into_named_members(word_shards, tmp_path):
    c = base_config(word_shards)
    c.population.seeds = (0, 1, 2)
    c.population.dropout = (0.0, 0.1)
    members = expand(c, tmp_path)
    assert [m.name for m in members] == ["s0-do0", "s1-do0", "s2-do0", "s0-do0.1", "s1-do0.1",
                                         "s2-do0.1"]
    assert members[4].config.seed == 1 and members[4].config.model.attention_dropout == 0.1
    assert members[4].workdir == tmp_path / "members" / "s1-do0.1"
    assert all(len(m.config.population.seeds) == 0 for m in members)
    c.population.seeds = (0, 0)
    with pytest.raises(UserError, match="repeats a value"):
        expand(c, tmp_path)
    with pytest.raises(UserError, match="train.batch_size"):
        members_of([("a", tmp_path / "a", base_config(word_shards)),
                    ("b", tmp_path / "b", base_config(word_shards, **{"train.batch_size": 8}))])


def tiny_sweep(shards: Path, pack: str):
    """One design, two pre-training seeds, on one device: its runs' configs are base_config's with
    seed 0 and 1 (but for the snapshots kept), so they compile the programs of m0's and m1's
    separate runs (read from the compilation cache). Packing by point: test_the_a4_sweep_..."""
    sys.path.insert(0, str(REPO / "configs"))
    import sweep as sweep_configs

    s = sweep_configs.demo()
    s.shards, s.num_steps, s.eval_every, s.vocab_size = str(shards), 8, 4, 500
    s.batch_size = 16
    s.pretrain_overrides = ("model.max_len=64", "eval.batch_size=48", "train.log_every=4",
                            "train.progress=False", "mesh.data=1", "mlm.max_predictions=16",
                            "train.peak_flops=1e12")
    s.bases, s.ofat, s.groups, s.finetune_tasks = ("b=E32-H32-I64-L1-A2",), (), (), ()
    s.pretrain_seeds, s.pack, s.report = (0, 1), pack, False
    return s


def packed_and_unpacked_sweeps(shards: Path, root: Path) -> None:
    """tiny_sweep packed (root/auto) and not (root/off)."""
    from minilm_jax.sweep.worker_loop import SweepRunner

    for pack in ("auto", "off"):
        runner = SweepRunner(tiny_sweep(shards, pack), root / pack)
        assert len(runner.runs) == 2 and runner.runs[1].name == "b__seed=1"
        assert runner.run()["failures"] == {}


def test_a_packed_sweep_equals_an_unpacked_one_and_reports_seeds(word_shards, tmp_path):
    from minilm_jax.report.options import ReportOptions
    from minilm_jax.report.publish import build_report

    run_exact(packed_and_unpacked_sweeps, word_shards, tmp_path)
    rows = {}
    for pack in ("auto", "off"):
        text = (tmp_path / pack / "results.jsonl").read_text().replace(str(tmp_path / pack), "ROOT")
        rows[pack] = [json.loads(line) for line in text.splitlines()]
    assert sorted(p.name for p in (tmp_path / "auto" / "populations").iterdir()) \
        and not (tmp_path / "off" / "populations").exists()
    assert rows["auto"] == rows["off"]
    validation = [r for r in rows["auto"] if r["kind"] == "validation"]
    assert {(r["design"], r["pretrain_seed"]) for r in validation} == {("b", 0), ("b", 1)}

    report = build_report(tmp_path / "auto" / "results.jsonl", tmp_path / "report",
                          ReportOptions(bootstrap=20))
    text = report.read_text()
    assert "## Pre-training seeds" in text and "seed_bands.png" in text
    seeds_part = text[text.index("## Pre-training seeds"):]
    line = next(x for x in seeds_part.splitlines() if x.startswith("| b |"))
    assert line.split("|")[3].strip() == "2"  # n = 2 pre-training seeds
    assert (tmp_path / "report" / "seed_bands.png").is_file()


def test_gaps_use_the_pretraining_seed_as_the_unit():
    from scipy import stats as scipy_stats

    from minilm_jax.analysis.seeds import seed_gaps

    def row(kind, run, seed, **extra):
        return {"kind": kind, "run": run, "design": "d", "pretrain_seed": seed, "point": "P",
                **extra}

    rows = []
    for seed, (pre, rand) in enumerate([(70.0, 60.0), (72.0, 60.0), (68.0, 61.0)]):
        run = f"d__seed={seed}"
        rows += [row("validation", run, seed, step=4, loss=5.0, flops_paper=1.0),
                 row("downstream", run, seed, task="t", init="pretrained", score=pre),
                 row("downstream", run, seed, task="t", init="random", score=rand)]
    (gap,) = seed_gaps(rows)
    assert gap.gaps == [10.0, 12.0, 7.0] and gap.interval["n"] == 3
    assert gap.interval["mean"] == pytest.approx(29 / 3)
    assert gap.interval["sd"] == pytest.approx(np.std([10, 12, 7], ddof=1))
    assert gap.interval["low"] < gap.interval["mean"] < gap.interval["high"]
    assert 0 < gap.p_value < 0.05 and gap.method == "t"  # each seed its own twin: one-sample t

    # One random-init twin shared by the seeds (one fine-tuning workdir, its 3 fine-tuning
    # seeds' scores): Welch's t between the seeds' scores and the twin's, the twin counted once.
    twin = [55.0, 60.0, 66.0]
    shared = [dict(r, finetune_workdir="random/P/t", member_scores=twin, score=float(np.mean(twin)))
              if r.get("init") == "random" else r for r in rows]
    (gap,) = seed_gaps(shared)
    welch = scipy_stats.ttest_ind([70.0, 72.0, 68.0], twin, equal_var=False)
    assert gap.gaps == pytest.approx([70 - 181 / 3, 72 - 181 / 3, 68 - 181 / 3])
    assert (gap.interval["low"], gap.interval["high"]) == pytest.approx(
        tuple(welch.confidence_interval(0.95)))
    assert gap.p_value == pytest.approx(welch.pvalue) and gap.p_value > 0.05
    assert gap.method.startswith("Welch t")


def test_the_a4_sweep_declares_three_seeds_per_point_packed_by_point():
    import sys as _sys

    from conftest import REPO as _REPO
    from minilm_jax.sweep import expand as expand_sweep
    from minilm_jax.sweep.population_packing import packs

    _sys.path.insert(0, str(_REPO / "configs"))
    import sweep as sweep_configs

    sweep = sweep_configs.get_config("a4")  # by name, as the command line reads it
    sweep.shards = "shards"
    runs = expand_sweep(sweep)
    assert len(runs) == 21 and len({r.point for r in runs}) == 7
    assert {r.pretrain_seed for r in runs} == {0, 1, 2}
    by_run = packs(runs, "auto")
    assert all(len(p) == 3 and len({r.point for r in p}) == 1 for p in by_run.values())
    assert all(len(p) == 1 for p in packs(runs, "off").values())
    deep = next(r for r in runs if r.name == "tiny__num_layers=2__seed=1")
    assert {m.group for m in deep.memberships} == {"ofat:model.num_layers", "iso_param:d1"}


def test_icer_and_depth_compare_runs_within_a_pretraining_seed(tmp_path):
    import math

    from minilm_jax.report.options import ReportOptions
    from minilm_jax.report.publish import build_report

    places = [  # design, point, group, base, factor, factor value, flops, perplexity by seed
        ("b", "E32-H32-I128-L1-A2", "base", "b", "", None, 1e12, (300.0, 310.0, 305.0)),
        ("b__hidden_dim=64", "E32-H64-I128-L1-A2", "ofat:model.hidden_dim", "b",
         "model.hidden_dim", 64, 2e12, (250.0, 240.0, 260.0)),
        ("d2", "E32-H32-I128-L2-A2", "iso_param:g", "", "", None, 2e12, (280.0, 290.0, 270.0)),
        ("w1", "E32-H32-I384-L1-A2", "iso_param:g", "", "", None, 2e12, (275.0, 295.0, 260.0)),
    ]
    rows = []
    for design, point, group, base, factor, value, flops, ppls in places:
        for seed, ppl in enumerate(ppls):
            rows.append({"kind": "validation", "run": f"{design}__seed={seed}",
                         "workdir": f"w/{design}/{seed}", "point": point, "group": group,
                         "base": base, "factor": factor, "factor_value": value,
                         "params_total": 1000, "params_non_embedding": 100, "step": 100,
                         "flops_paper": flops, "flops_complete": flops, "loss": math.log(ppl),
                         "perplexity": ppl, "design": design, "pretrain_seed": seed})
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = build_report(results, tmp_path / "report", ReportOptions(bootstrap=20)).read_text()
    seeds_part = text[text.index("## Pre-training seeds"):]
    # within each seed: ICER = 1e12 FLOPs / gain (50, 70, 45 perplexity points)
    line = next(x for x in seeds_part.splitlines() if x.startswith("| 1 | b | model.hidden_dim"))
    assert "0: 2.00e10" in line and "1: 1.43e10" in line and "2: 2.22e10" in line
    assert "(n = 3)" in line
    assert "the ICER section above shows seed 0" in seeds_part
    depth = [x for x in seeds_part.splitlines() if x.startswith("| iso_param:g |")]
    assert [x.split("|")[2].strip() for x in depth] == ["d2", "w1"]
    assert [x.split("|")[-2].strip() for x in depth] == ["1", "2"]  # d2 won seed 1, w1 seeds 0, 2
    assert all(x.split("|")[3].strip() == "3" for x in depth)


def garble_after_first_record(path: Path) -> None:
    """A torn line (cut mid-record, a byte that is not UTF-8) written into ``path`` after its
    first record, as a crash mid-append followed by later appends leaves one."""
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], b'{"step": 1, "split": "tra\xff', *lines[1:]]) + b"\n")


def test_a_garbled_line_in_a_members_metrics_is_noted_and_counted_on_resume(
        word_shards, tmp_path, monkeypatch, capsys):
    """A population stopped by SIGTERM at step 3, a torn line in member m1's metrics.jsonl, the
    population run again: the note a separate run prints, naming the member, counts the garbled
    line and says its record is lost (it lies before the step resumed from: nothing recomputes
    it); every record up to the step resumed from survives unchanged and each later step is
    recorded once."""
    from test_interruptions import signal_after

    base = base_config(word_shards, **{"train.num_steps": 6, "eval.every_steps": 2,
                                       "checkpoint.every_steps": 2,
                                       "checkpoint.keep_fractions": ()})
    members = members_of([("m0", tmp_path / "m0", base),
                          ("m1", tmp_path / "m1", with_fields(base, {"seed": 1}))])
    signal_after(PopulationTrainer, 3, signal.SIGTERM, monkeypatch)
    first = PopulationTrainer(members, tmp_path / "pop", "map").run()
    monkeypatch.undo()
    stopped = first["step"]
    assert first["status"] == "preempted" and 0 < stopped < 6
    history = tmp_path / "m1" / "metrics.jsonl"
    before = read_metrics(history)
    later = sum(r["step"] > stopped for r in before)  # none expected: recomputed if any
    around = [json.loads(line)["step"] for line in history.read_text().splitlines()[:2]]
    garble_after_first_record(history)
    capsys.readouterr()
    summary = PopulationTrainer(members, tmp_path / "pop", "map").run()
    out = capsys.readouterr().out
    assert summary["status"] == "completed"
    # the torn line lies before the step resumed from: its record is lost, not recomputed
    assert (f"note: dropped 1 garbled metrics line(s) of member m1 (line 2, between the records "
            f"of steps {around[0]} and {around[1]}): what they recorded is lost, not recomputed "
            f"(the run resumes from step {stopped})") in out and around[1] <= stopped
    assert ("metrics record(s) after step" in out) == bool(later)
    assert "of member m0" not in out
    after = read_metrics(history)
    kept = {(r["step"], r["split"]): r for r in after}
    assert len(kept) == len(after)  # one record per (step, split)
    for record in before:
        if record["step"] <= stopped:
            assert kept[(record["step"], record["split"])] == record
    assert sorted(s for s, split in kept if split == "train") == list(range(1, 7))
    assert b"\xff" not in history.read_bytes()


def test_a_garbled_line_in_a_finetuning_population_runs_metrics_is_noted(
        pretrained, tmp_path, monkeypatch, capsys):
    """The same for a fine-tuning population (two runs from the pre-training run's two kept
    checkpoints, 2 seeds each): stopped in its second epoch, a torn line in run r1's history,
    resumed: the note names the run and counts the line; every earlier record survives."""
    from test_finetune import SMALL_RUN, ag_config
    from minilm_jax.finetune.finetuner import Finetuner
    from test_interruptions import signal_after

    runs = []
    for i, which in enumerate(("step:15", "latest")):
        c = ag_config(pretrained, **{**SMALL_RUN, "train__epochs": 2, "train__log_every": 1})
        c.init.which = which
        runs.append((f"r{i}", c, tmp_path / "pop" / f"r{i}"))

    def population():
        return Finetuner(runs[0][1], tmp_path / "pop" / "population", "pretrained", runs)

    first = population()
    signal_after(Finetuner, first.steps_per_epoch + 1, signal.SIGTERM, monkeypatch)
    assert first.run()["status"] == "preempted"
    monkeypatch.undo()
    history = tmp_path / "pop" / "r1" / "metrics.jsonl"
    before = read_metrics(history)
    stopped = max(r["step"] for r in before)
    assert any(r["split"] == "validation" for r in before)  # the first epoch's evaluation
    garble_after_first_record(history)
    capsys.readouterr()
    assert population().run()["status"] == "completed"
    out = capsys.readouterr().out
    assert "note: dropped 1 garbled metrics line(s) of member r1 (line 2, " in out
    assert "of member r0" not in out
    kept = {(r["step"], r["split"]): r for r in read_metrics(history)}
    for record in before:
        assert kept[(record["step"], record["split"])] == record
    assert max(s for s, _ in kept) > stopped
