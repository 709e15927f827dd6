"""The pre-training engine on real text: resume exactness, preemption, bad input, meshes, masking."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import never_built, tensorboard_config, trajectory_tolerance, xla_flags
from minilm_jax.errors import UserError
from minilm_jax.data.shards import ShardError
from minilm_jax.model.config import ConfigError
from minilm_jax.configs.pretrain import get_config as pretrain_config
from minilm_jax.settings.pretraining import log_eval_steps
from minilm_jax.train.batches import BatchIndexer
from minilm_jax.train.dispatch import TrainingDiverged
from minilm_jax.train.pretrainer import Pretrainer
from minilm_jax.train.masking import MaskingConfig, mask_tokens
from minilm_jax.train.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
POINT = "E32-H32-I64-L1-A2-V500"
# A training step's float32 reductions (small_config): a weight gradient sums over 16 x 64 token
# positions; the 500-way logsumexp; the layer's hidden and ffn widths; attention over 64 positions.
STEP_TERMS = 16 * 64 + 500 + 32 + 64 + 64


def small_config(shards, **overrides):
    c = pretrain_config(POINT)
    c.model.max_len = 64
    c.data.shards = str(shards)
    c.train.batch_size = 16
    c.train.num_steps = 12
    c.train.log_every = 1
    c.train.progress = False
    c.train.peak_flops = 1e12
    c.eval.every_steps = 6
    c.eval.batch_size = 48  # does not divide the 100 validation sequences
    c.checkpoint.every_steps = 4
    c.mesh.data = 1
    c.mlm.max_predictions = 16
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(workdir) / "metrics.jsonl")
            if r["split"] == "train"}


def cli_args(shards, workdir, steps=40, fields: dict | None = None):
    """The pre-training command on ``shards``; ``fields`` (``{"eval.every_steps": 4}``) replace
    or add to its ``--config.`` overrides."""
    values = {"data.shards": shards, "model.max_len": 64, "train.num_steps": steps,
              "train.batch_size": 16, "train.log_every": 1, "eval.every_steps": 20,
              "eval.batch_size": 50, "checkpoint.every_steps": 5, "mesh.data": 1,
              "train.peak_flops": "1e12", "train.progress": False, **(fields or {})}
    return [sys.executable, "-m", "minilm_jax.pretrain", f"--config=configs/pretrain.py:{POINT}",
            f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in values.items())]


def cli_env():
    return {**os.environ, "XLA_FLAGS": xla_flags(1), "PYTHONUNBUFFERED": "1"}


def wait_for(path: Path, proc, timeout=240):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "process ended"
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.timeout(300)  # waits on a command it stops: a hang fails in 5 minutes
def test_sigkill_then_restart_is_identical(word_shards, tmp_path):
    """A run killed with SIGKILL mid-way and restarted ends with bit-identical parameters and loss.
    20 steps: the kill lands after the step-10 checkpoint, with 10 steps, an evaluation and two
    saves still to go."""
    steps = 20
    ref = tmp_path / "ref"
    subprocess.run(cli_args(word_shards, ref, steps), check=True, env=cli_env(), capture_output=True,
                   cwd=REPO, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(word_shards, killed, steps), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(killed / "checkpoints" / "10", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    resumed = subprocess.run(cli_args(word_shards, killed, steps), env=cli_env(), capture_output=True,
                             text=True, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at step" in resumed.stdout
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["final_params_sha256"] == b["final_params_sha256"]
    assert train_losses(ref)[steps] == train_losses(killed)[steps]
    assert a["best"] == b["best"]


@pytest.mark.timeout(300)  # waits on a command it stops: a hang fails in 5 minutes
def test_sigterm_saves_and_exits_cleanly(word_shards, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(cli_args(word_shards, workdir, steps=5000), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(workdir / "checkpoints" / "5", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "preempted"
    assert (workdir / "checkpoints" / str(summary["step"])).is_dir()
    assert f"saved checkpoint at step {summary['step']}" in out


def test_device_counts_and_fsdp_give_the_same_losses(word_shards, tmp_path):
    """1 device, data-parallel over 8, and data x fsdp = 4 x 2: same losses (float tolerance).
    Training losses only: no validation split (no evaluation program to compile per mesh) and one
    checkpoint, at the end (evaluation, checkpoints and resumption on a data x fsdp mesh:
    tests/test_multihost.py)."""
    runs = {}
    for name, mesh in {"one": (1, 1), "dp8": (8, 1), "dp4xfsdp2": (4, 2)}.items():
        cfg = small_config(word_shards, **{"mesh.data": mesh[0], "mesh.fsdp": mesh[1],
                                           "train.num_steps": 6, "data.eval_split": "",
                                           "checkpoint.every_steps": 100,
                                           "checkpoint.keep_best": False})
        Pretrainer(cfg, tmp_path / name).run()
        runs[name] = train_losses(tmp_path / name)
    for name in ("dp8", "dp4xfsdp2"):
        got, want = [runs[name][s] for s in range(1, 7)], [runs["one"][s] for s in range(1, 7)]
        # 6 steps, each rounding its sums in another order (tests/conftest.py)
        np.testing.assert_allclose(got, want, rtol=0,
                                   atol=trajectory_tolerance(max(want), STEP_TERMS, 6))


def test_fsdp_shards_parameters(word_shards, tmp_path):
    cfg = small_config(word_shards, **{"mesh.data": 4, "mesh.fsdp": 2})
    trainer = Pretrainer(cfg, tmp_path)
    table = trainer.state["params"]["mlm_head"]["decoder"]["kernel"][...]
    assert "fsdp" in str(table.sharding.spec)
    assert len(table.addressable_shards[0].data.flatten()) == table.size // 2


def test_grad_accum_and_steps_per_dispatch_match_plain_steps(word_shards, tmp_path):
    # training losses only: no validation split (no evaluation program per run)
    base = {"model.hidden_dropout": 0.0, "model.attention_dropout": 0.0, "train.num_steps": 4,
            "checkpoint.keep_best": False, "data.eval_split": ""}
    Pretrainer(small_config(word_shards, **base), tmp_path / "plain").run()
    Pretrainer(small_config(word_shards, **base, **{"train.grad_accum": 2}), tmp_path / "accum").run()
    Pretrainer(small_config(word_shards, **base, **{"train.steps_per_dispatch": 3}), tmp_path / "scan").run()
    plain = train_losses(tmp_path / "plain")
    # 4 steps of other summation orders (two half-batches summed; a scanned program)
    tol = trajectory_tolerance(max(plain.values()), STEP_TERMS, 4)
    accum = train_losses(tmp_path / "accum")
    np.testing.assert_allclose([accum[s] for s in range(1, 5)], [plain[s] for s in range(1, 5)],
                               rtol=0, atol=tol)
    scan = train_losses(tmp_path / "scan")
    assert scan[3] == pytest.approx(plain[3], abs=tol)
    assert scan[4] == pytest.approx(plain[4], abs=tol)


def test_a_resumed_run_restores_without_building_its_initial_state(word_shards, tmp_path):
    """A run that resumes restores its checkpoint into the initial state's shapes and shardings
    and never builds the state (the initialiser neither compiled nor run): its end is bit for bit
    that of the run never stopped (4 steps; its copy resumed from step 2). A run that starts
    afresh builds it."""
    base = {"train.num_steps": 4, "checkpoint.every_steps": 2, "checkpoint.keep": 3,
            "checkpoint.keep_best": False, "data.eval_split": ""}
    straight = Pretrainer(small_config(word_shards, **base), tmp_path / "straight").run()
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")  # as if stopped after the step-2 checkpoint
    (resumed / "summary.json").unlink()
    trainer = Pretrainer(small_config(word_shards, **base), resumed)
    trainer.initial = dataclasses.replace(trainer.initial, build=never_built)
    summary = trainer.run()
    assert trainer.initial is None  # let go once the state was restored
    assert summary["final_params_sha256"] == straight["final_params_sha256"]
    assert train_losses(resumed)[4] == train_losses(tmp_path / "straight")[4]
    fresh = Pretrainer(small_config(word_shards, **base), tmp_path / "fresh")
    fresh.initial = dataclasses.replace(fresh.initial, build=never_built)
    with pytest.raises(AssertionError, match="built"):
        fresh.run()


def test_runs_of_one_program_share_it_and_no_other_run_does(word_shards, tmp_path, monkeypatch):
    """pretrain_program keeps the programs it built in this process: a second run of the same
    config (another workdir) is handed the same jitted steps and ends bit for bit as the first; a
    run with another learning rate or step count gets its own and ends exactly as it does when
    built first (a key that left the optimizer or the steps out would hand it the first run's
    program); a run with another seed runs the first run's compiled step and initialiser, compiled
    once, with its own seed, and ends exactly as it does when built first. Building for another
    platform builds another program."""
    from minilm_jax.model.target_platform import building_for
    from minilm_jax.train import program as programs
    from minilm_jax.train.built_programs import BuiltPrograms
    from minilm_jax.train.mesh import make_mesh

    base = {"train.num_steps": 3, "checkpoint.every_steps": 3, "checkpoint.keep_best": False,
            "data.eval_split": "", "train.log_every": 3}

    def run(name: str, **changes):
        trainer = Pretrainer(small_config(word_shards, **{**base, **changes}), tmp_path / name)
        return trainer.program, trainer.run()["final_params_sha256"]

    programs._BUILT.clear()
    first, first_sha = run("a")
    again, again_sha = run("a_again")
    assert (again.train_step, again.eval_step, again.state) == (
        first.train_step, first.eval_step, first.state)
    assert again_sha == first_sha
    compiled = first.train_step.fn._cache_size(), first.state.init.fn._cache_size()
    assert compiled == (1, 1)
    for name, changes in (("seed", {"seed": 1}), ("lr", {"optim.peak_lr": 3e-3}),
                          ("steps", {"train.num_steps": 4})):
        other, other_sha = run(name, **changes)  # built while a's are kept
        shared = other.train_step.fn is first.train_step.fn
        assert shared == (other.state.init.fn is first.state.init.fn) == (name == "seed"), name
        assert (first.train_step.fn._cache_size(), first.state.init.fn._cache_size()) == compiled
        with monkeypatch.context() as patch:  # built with nothing kept
            patch.setattr(programs, "_BUILT", BuiltPrograms())
            alone, alone_sha = run(f"{name}_alone", **changes)
        assert alone.train_step.fn is not other.train_step.fn
        assert other_sha == alone_sha != first_sha, name
    config, mesh = small_config(word_shards, **base), make_mesh(1, 1)
    with building_for("gpu"):
        gpu = programs.pretrain_program(config, mesh)
    assert gpu.train_step.fn is not programs.pretrain_program(config, mesh).train_step.fn


@pytest.mark.timeout(300)  # waits on a command it stops: a hang fails in 5 minutes
def test_a_second_live_process_on_the_workdir_is_refused(word_shards, tmp_path):
    """One live process per workdir: the second is refused before it writes anything."""
    import socket
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(),
                                                    "pid": sleeper.pid, "since": 0.0}))
        with pytest.raises(UserError, match="in use by process"):
            Pretrainer(small_config(word_shards), tmp_path)
        assert not (tmp_path / "config.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    Pretrainer(small_config(word_shards, **{"train.num_steps": 2}), tmp_path).run()  # stale now
    assert not (tmp_path / ".lock").exists()  # released at the end of the run


def test_log_spaced_evaluation_steps():
    c = small_config("unused", **{"train.num_steps": 2500, "eval.per_decade": 4})
    assert log_eval_steps(c) == (10, 18, 32, 56, 100, 178, 316, 562, 1000, 1778)
    assert log_eval_steps(small_config("unused")) == ()
    with pytest.raises(ConfigError, match="per_decade"):
        log_eval_steps(small_config("unused", **{"eval.per_decade": -1}))


def test_outputs_metrics_and_summary(word_shards, tmp_path):
    # eval.per_decade=1 adds step 10 to the every-6-steps cadence
    summary = Pretrainer(small_config(word_shards, **{"eval.per_decade": 1}), tmp_path).run()
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    for key in ("loss", "perplexity", "lr", "grad_norm", "tokens_seen", "flops_paper", "flops_complete"):
        assert all(np.isfinite(r[key]) for r in train)
    assert all("tokens_per_sec" in r and "mfu" in r for r in train[1:])
    val = [r for r in records if r["split"] == "validation"]
    assert [r["step"] for r in val] == [6, 10, 12] and all(r["sequences"] == 100 for r in val)
    assert summary["params"]["total"] > 0 and summary["best"]["test_perplexity"] > 1
    assert train[-1]["loss"] < train[0]["loss"]
    assert list((tmp_path / "tensorboard").iterdir())
    hparams, texts = tensorboard_config(tmp_path / "tensorboard")  # runs filterable by config
    config = json.loads((tmp_path / "config.json").read_text())
    assert hparams["optim.peak_lr"] == pytest.approx(config["optim.peak_lr"])
    assert hparams["point"] == config["point"] and len(hparams) == len(config)
    assert "| `model.hidden_dim` |" in texts["config"]


def test_evaluation_counts_every_sequence_once(word_shards, tmp_path):
    """Batch size 48 (padded last batch) and 100 give the same validation loss."""
    a = Pretrainer(small_config(word_shards, **{"eval.batch_size": 48}), tmp_path / "a")
    b = Pretrainer(small_config(word_shards, **{"eval.batch_size": 100}), tmp_path / "b")
    ra, rb = a.evaluate(a.eval_split), b.evaluate(b.eval_split)
    assert ra["sequences"] == rb["sequences"] == 100
    # Masks depend on the batch index, so compare the per-prediction loss of full passes instead.
    assert ra["predictions"] > 0 and abs(ra["loss"] - rb["loss"]) < 0.05


def test_non_finite_loss_stops_with_step(word_shards, tmp_path):
    # (a NaN learning rate is refused up front now: a huge one makes the loss diverge)
    cfg = small_config(word_shards, **{"optim.peak_lr": 1e30, "checkpoint.every_steps": 100})
    with pytest.raises(TrainingDiverged, match=r"non-finite training loss at step \d+ \((nan|inf)\); "
                       "no checkpoint was saved before it"):
        Pretrainer(cfg, tmp_path).run()


def test_bad_input_errors(word_shards, tmp_path):
    with pytest.raises(ShardError, match="shard directory not found"):
        Pretrainer(small_config(tmp_path / "nope"), tmp_path / "w1")
    with pytest.raises(ShardError, match="seq_len 64, but model.max_len is 128"):
        Pretrainer(small_config(word_shards, **{"model.max_len": 128, "mlm.max_predictions": 0}),
                   tmp_path / "w2")
    with pytest.raises(ShardError, match="tokenizer of 500 tokens, more than model.vocab_size=300"):
        Pretrainer(small_config(word_shards, **{"model.vocab_size": 300}), tmp_path / "w3")
    Pretrainer(small_config(word_shards), tmp_path / "w4")
    # more than the 10 spare rows over the tokenizer: refused before anything is written
    with pytest.raises(ShardError, match=r"model.vocab_size=511 but the shards' tokenizer has 500 "
                       r"tokens: 11 embedding rows would never be used.*"
                       r"--config.model.vocab_size=510 .*allow_vocab_mismatch=True"):
        Pretrainer(small_config(word_shards, **{"model.vocab_size": 511}), tmp_path / "w6")
    assert not (tmp_path / "w6").exists()
    Pretrainer(small_config(word_shards, **{"model.vocab_size": 510}), tmp_path / "w7")
    Pretrainer(small_config(word_shards, **{"model.vocab_size": 19010,
                                            "data.allow_vocab_mismatch": True}), tmp_path / "w8")
    # as if w4 had completed a step (a run that never did takes any corrected config)
    (tmp_path / "w4" / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    with pytest.raises(UserError, match=r"different config \(model.hidden_dim: 32 -> 64"):
        Pretrainer(small_config(word_shards, **{"model.hidden_dim": 64}), tmp_path / "w4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardError, match="no manifest.json"):
        Pretrainer(small_config(empty), tmp_path / "w5")


def test_cli_bad_input_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minilm_jax.pretrain", f"--config=configs/pretrain.py:{POINT}",
                           f"--workdir={tmp_path / 'w'}", f"--config.data.shards={tmp_path / 'missing'}"],
                          capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: shard directory not found")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module, spec", [("minilm_jax.pretrain", "pretrain:<point>"),
                                          ("minilm_jax.finetune", "finetune:<task>")])
def test_cli_missing_config_or_workdir_is_one_line(module, spec, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, f"--workdir={tmp_path / 'w'}"],
                          capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: both --config={spec} and --workdir=DIR are required")
    assert not (tmp_path / "w").exists()


def test_batches_are_a_function_of_seed_and_step():
    a, b = BatchIndexer(0, 100, 32), BatchIndexer(0, 100, 32)
    np.testing.assert_array_equal(a.indices(7), b.indices(7))
    seen = np.concatenate([a.indices(s) for s in range(25)])  # 800 = 8 epochs exactly
    assert sorted(np.bincount(seen, minlength=100)) == [8] * 100
    assert not np.array_equal(BatchIndexer(1, 100, 32).indices(0), a.indices(0))


def _masking(replacement="mask", max_predictions=40):
    return MaskingConfig(mask_prob=0.15, max_predictions=max_predictions, replacement=replacement,
                         mask_id=4, never_mask_ids=(0, 1, 2, 3), random_token_min_id=5, vocab_size=500)


def test_masking_selects_fifteen_percent_of_real_tokens_only():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 500, size=(64, 128)).astype(np.int32)
    tokens[:, 0], tokens[:, 100], tokens[:, 101:] = 0, 2, 1
    segments = (tokens != 1).astype(np.int32)
    mb = mask_tokens(jax.random.key(0), jnp.asarray(tokens), jnp.asarray(segments), _masking())
    w = np.asarray(mb.weights_bp)
    pos = np.asarray(mb.positions_bp)
    chosen = pos[w > 0]
    assert abs(w.sum() / (64 * 99) - 0.15) < 0.02
    assert chosen.min() >= 1 and chosen.max() <= 99
    inputs = np.asarray(mb.inputs_bt)
    rows = np.repeat(np.arange(64)[:, None], 40, axis=1)
    assert (inputs[rows[w > 0], chosen] == 4).all()  # paper: all selected -> <mask>
    assert (np.asarray(mb.targets_bp)[w > 0] == tokens[rows[w > 0], chosen]).all()
    assert ((inputs != tokens).sum()) == w.sum()


def test_bert_replacement_split_and_cap():
    tokens = np.random.default_rng(1).integers(5, 500, size=(256, 128)).astype(np.int32)
    seg = np.ones_like(tokens)
    mb = mask_tokens(jax.random.key(1), jnp.asarray(tokens), jnp.asarray(seg), _masking("bert"))
    w = np.asarray(mb.weights_bp) > 0
    rows = np.repeat(np.arange(256)[:, None], 40, axis=1)[w]
    new = np.asarray(mb.inputs_bt)[rows, np.asarray(mb.positions_bp)[w]]
    old = np.asarray(mb.targets_bp)[w]
    frac_mask, frac_same = (new == 4).mean(), (new == old).mean()
    assert abs(frac_mask - 0.8) < 0.03 and abs(frac_same - 0.1) < 0.03
    capped = mask_tokens(jax.random.key(1), jnp.asarray(tokens), jnp.asarray(seg), _masking(max_predictions=8))
    assert np.asarray(capped.weights_bp).sum(axis=1).max() == 8
