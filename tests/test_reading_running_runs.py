"""Every reader of a pre-training run works on a run that is still training: the tokenizer is
recorded before the first step, a checkpoint replaced while it is read is read again from the step
that serves now (corruption still refused), and a population's own folder is one line naming its
members."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilm_jax.errors import UserError
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.runs import running as reading
from minilm_jax.train import seal
from minilm_jax.train.checkpoint import CheckpointError, find_checkpoint

from conftest import slow_pretrain_script
from test_pretrain import REPO, cli_env

POINT = "E32-H32-I64-L1-A2-V600"  # zorro_shards: a 600-piece BPE tokenizer, 64-token rows


# A tiny pre-training: an evaluation and a checkpoint every 2 steps (``best/`` is replaced often
# while the validation loss falls); the command's overrides, or the config in process.
SETTINGS = {"model.max_len": 64, "train.batch_size": 8, "train.log_every": 1,
            "eval.every_steps": 2, "eval.batch_size": 50, "checkpoint.every_steps": 2,
            "mesh.data": 1, "train.peak_flops": 1e12, "train.progress": False,
            "optim.peak_lr": 3e-3}


def pretrain_cli(shards: Path, workdir: Path, steps: int, *extra: str) -> list[str]:
    """The command of a tiny pre-training (SETTINGS)."""
    return [sys.executable, "-m", "minilm_jax.pretrain", f"--config=configs/pretrain.py:{POINT}",
            f"--workdir={workdir}", f"--config.data.shards={shards}",
            f"--config.train.num_steps={steps}",
            *(f"--config.{key}={value}" for key, value in SETTINGS.items()), *extra]


def pretrain_config(shards: Path, steps: int):
    """The config of :func:`pretrain_cli`'s run, for a run in process."""
    from minilm_jax.configs.pretrain import get_config

    config = get_config(POINT)
    config.data.shards, config.train.num_steps = str(shards), steps
    for key, value in SETTINGS.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def sealed_best(workdir: Path) -> list[int]:
    return sorted(int(p.parent.name) for p in (workdir / "best").glob(f"*/{seal.SEAL_NAME}"))


def wait_until(event, proc: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    """Wait for ``event()`` (polled), failing at once when ``proc`` ends first."""
    start = time.monotonic()
    while not event():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stdout.read()[-3000:]}")
        assert time.monotonic() - start < timeout, f"no {what} after {timeout} s"
        time.sleep(0.05)


def pairs_file(folder: Path) -> Path:
    """A few BLiMP-format minimal pairs (a suite of one paradigm)."""
    path = folder / "tiny_pairs.jsonl"
    pairs = [("the dog is here", "the dog are here"), ("the cats were there", "the cats was there"),
             ("she has gone", "she have gone"), ("they play outside", "they plays outside")]
    path.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n"
                            for g, b in pairs))
    return path


# ----------------------------------------------------------------- a population's own folder
@pytest.fixture(scope="module")
def population(zorro_shards, tmp_path_factory) -> Path:
    """A population of 2 members trained in process, as the command trains one
    (minilm_jax.pretrain.main): a command's start (imports) would cost more than its training."""
    from minilm_jax.train.population import expand
    from minilm_jax.train.population_trainer import PopulationTrainer

    root = tmp_path_factory.mktemp("population") / "pop"
    config = pretrain_config(zorro_shards, 4)
    config.population.seeds = (0, 1)
    summary = PopulationTrainer(expand(config, root), root, config.population.members).run()
    assert summary["status"] == "completed", summary
    return root


@pytest.mark.parametrize("tokenizer", [False, True])  # with one: the shape-error path
def test_export_of_a_population_folder_is_one_line_naming_its_members(population, zorro_shards,
                                                                      tmp_path, tokenizer, capsys):
    extra = [f"--tokenizer={zorro_shards.parent / 'tok.model'}"] if tokenizer else []
    args = ["export", f"--workdir={population}", f"--out={tmp_path / 'hf'}", *extra]
    if tokenizer:  # in process: the same main and its line (the command around it: the other case)
        from minilm_jax.interop.__main__ import main

        code, stderr = main(args), capsys.readouterr().err
    else:
        out = subprocess.run([sys.executable, "-m", "minilm_jax.interop", *args],
                             cwd=REPO, env=cli_env(), capture_output=True, text=True)
        code, stderr = out.returncode, out.stderr
    assert code != 0
    lines = stderr.strip().splitlines()
    members = sorted(str(p) for p in (population / "members").iterdir())
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"error: {population} is a population of 2 members: export a "
                               "member: "), lines[0]
    assert all(m in lines[0] for m in members)
    assert not (tmp_path / "hf").exists()


def test_other_readers_of_a_population_folder_name_its_members(population, tmp_path):
    from minilm_jax.evals.__main__ import main as evals_main
    from minilm_jax.latency import trained_member

    with pytest.raises(UserError, match=r"is a population of 2 members: score a member: "):
        evals_main(["--workdir", str(population), "--suite", str(pairs_file(tmp_path))])
    with pytest.raises(UserError, match=r"is a population of 2 members: time a member: "):
        trained_member(str(population), num_labels=2, seq_len=16)
    with pytest.raises(UserError, match=r"is a population of 2 members: use a member: "):
        PretrainedRun.open(population, "best")  # fine-tuning's init.checkpoint
    # a member is a run like any other
    member = sorted((population / "members").iterdir())[0]
    run = PretrainedRun.open(member, "best")
    assert run.tokenizer_path.endswith("tok.model") and run.model_state()


def test_a_committee_refuses_pre_training_folders_and_unfinished_runs(population, tmp_path):
    from minilm_jax.committee import CommitteeError, write_committee

    with pytest.raises(UserError, match=r"is a population of 2 members: fine-tune a member"):
        write_committee([str(population)], tmp_path / "out")
    member = sorted((population / "members").iterdir())[0]
    with pytest.raises(CommitteeError, match=r"is a pre-training run: a committee combines"):
        write_committee([str(member)], tmp_path / "out")
    running = tmp_path / "ft"  # a fine-tuning run still training: config, no summary yet
    (running / "predictions").mkdir(parents=True)
    (running / "config.json").write_text(json.dumps({"task": "sst2", "init.mode": "pretrained"}))
    with pytest.raises(CommitteeError, match=r"has no summary.json: it is still training"):
        write_committee([str(running)], tmp_path / "out")
    (running / "summary.json").write_text(json.dumps({"status": "preempted", "task": "sst2",
                                                      "init": "pretrained", "seeds": [0]}))
    with pytest.raises(CommitteeError, match=r"has status 'preempted': not a finished"):
        write_committee([str(running)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------- a checkpoint replaced while it is read
@pytest.fixture
def finished(population, tmp_path) -> Path:
    """A copy of a finished run (a population member) whose best step is ``best/4``."""
    member = sorted((population / "members").iterdir())[0]
    workdir = shutil.copytree(member, tmp_path / "run")
    assert sealed_best(workdir)
    return workdir


def publish_newer_best(workdir: Path) -> int:
    """What the writer does (``Checkpoints.save_best``): a newer best step written and sealed
    (here: a copy of the current one), then the old one deleted. Returns the new step."""
    old = sealed_best(workdir)[-1]
    new = old + 2
    shutil.copytree(workdir / "best" / str(old), workdir / "best" / str(new))
    (workdir / "best" / str(new) / seal.SEAL_NAME).unlink()
    seal.write_seal(workdir / "best" / str(new), None)
    shutil.rmtree(workdir / "best" / str(old))
    return new


@pytest.mark.parametrize("moment", ["before_verify", "between_verify_and_restore"])
def test_a_best_replaced_while_it_is_read_is_read_from_the_new_one(finished, monkeypatch, moment):
    import orbax.checkpoint as ocp

    run = PretrainedRun.open(finished, "best")
    first = run.step
    replaced = []
    if moment == "before_verify":
        real = seal.verify

        def hook(step_dir):
            if not replaced:
                replaced.append(publish_newer_best(finished))
            return real(step_dir)
        monkeypatch.setattr(seal, "verify", hook)
    else:
        real_restore = ocp.PyTreeCheckpointer.restore

        def hook(self, *args, **kwargs):
            if not replaced:
                replaced.append(publish_newer_best(finished))
            return real_restore(self, *args, **kwargs)
        monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", hook)
    state = run.model_state()
    assert replaced == [first + 2] and run.step == first + 2  # the step actually read
    assert str(run.checkpoint_dir) == str(finished / "best" / str(first + 2) / "state")
    assert state and run.describe()["step"] == first + 2


def test_a_best_replaced_at_every_read_is_one_error_after_a_few_attempts(finished, monkeypatch):
    import orbax.checkpoint as ocp

    run = PretrainedRun.open(finished, "best")
    real_restore = ocp.PyTreeCheckpointer.restore

    def hook(self, *args, **kwargs):
        publish_newer_best(finished)
        return real_restore(self, *args, **kwargs)
    monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", hook)
    with pytest.raises(CheckpointError, match=rf"replaced {reading.READ_ATTEMPTS} times while it "
                                              "was read"):
        run.encoder_state()


def test_a_corrupt_best_is_refused_never_read_and_never_retried_as_good(finished, monkeypatch,
                                                                         tmp_path):
    import numpy as np

    step = sealed_best(finished)[-1]
    good = PretrainedRun.open(finished, "best").model_state()
    stash = shutil.copytree(finished / "best" / str(step), tmp_path / "stash")
    victim = max((p for p in (finished / "best" / str(step)).rglob("*")
                  if p.is_file() and p.name != seal.SEAL_NAME), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size, other bytes
    verified = []
    real = seal.verify
    monkeypatch.setattr(seal, "verify", lambda d: verified.append(Path(d).name) or real(d))
    with pytest.raises(CheckpointError, match="is corrupt"):
        PretrainedRun.open(finished, "best").model_state()
    assert verified == [str(step)]  # it still serves: refused at once, nothing read, no retry

    def publish_while_read(step_dir):  # the writer publishes a good successor, deletes the old
        if not (finished / "best" / str(step + 2)).exists():
            shutil.copytree(stash, finished / "best" / str(step + 2))
            shutil.rmtree(finished / "best" / str(step))
        return real(step_dir)
    monkeypatch.setattr(seal, "verify", publish_while_read)
    run = PretrainedRun.open(finished, "best")
    state = run.model_state()
    assert run.step == step + 2
    assert all(np.array_equal(a, b) for a, b in zip(jax_leaves(state), jax_leaves(good)))


def jax_leaves(state):
    import jax

    return jax.tree.leaves(state)


# ----------------------------------------------------------------- where the tokenizer is
def test_the_tokenizer_is_looked_up_in_run_start_then_summary_then_the_shards(finished):
    assert (finished / reading.RUN_START).is_file()  # a population member records one too
    (finished / reading.RUN_START).unlink()  # as a run of an earlier version
    flat = json.loads((finished / "config.json").read_text())
    from_shards = reading.recorded_tokenizer(finished, flat)  # no run_start.json, no summary
    assert from_shards["path"].endswith("tok.model")
    assert from_shards["sha256"] == flat["data.tokenizer_sha256_seen"]
    summary = {**from_shards, "path": "/moved/tok.model"}
    assert reading.recorded_tokenizer(finished, flat, summary)["path"] == "/moved/tok.model"
    reading.write_run_start(finished, {"tokenizer": {**from_shards, "path": "/recorded.model"}},
                            {}, "shards")
    assert reading.recorded_tokenizer(finished, flat, summary)["path"] == "/recorded.model"
    # shards rebuilt with another tokenizer since: not taken for the run's
    (finished / reading.RUN_START).unlink()
    assert reading.recorded_tokenizer(finished, {**flat, "data.tokenizer_sha256_seen": "other"}
                                      ) == {"sha256": "other"}


# ----------------------------------------------------------------- a run still training
@pytest.fixture(scope="module")
def running(zorro_shards, tmp_path_factory):
    """A pre-training that goes on for far longer than the tests (killed at the end), once its
    first best step is sealed. After its 4th step it takes one step a second (still evaluating,
    replacing its best and saving every 2 steps): a run at full speed would take a core from the
    rest of the suite for as long as these tests read it."""
    workdir = tmp_path_factory.mktemp("running") / "run"
    slow = slow_pretrain_script("minilm_jax.train.pretrainer:Pretrainer", after=4)
    proc = subprocess.Popen([sys.executable, "-c", slow,
                             *pretrain_cli(zorro_shards, workdir, 1_000_000)[3:]], cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait_until(lambda: (workdir / "metrics.jsonl").exists(), proc, "the first metrics line")
        first_metrics = (workdir / "metrics.jsonl").read_text()
        record = reading.read_run_start(workdir)
        wait_until(lambda: sealed_best(workdir), proc, "a sealed best step")
        yield {"proc": proc, "workdir": workdir, "record_at_first_metrics": record,
               "first_metrics": first_metrics}
    finally:
        proc.kill()
        proc.wait()


def still_training(running) -> None:
    assert running["proc"].poll() is None and not (running["workdir"] / "summary.json").exists()


def test_the_tokenizer_is_recorded_before_the_first_step(running, zorro_shards):
    record = running["record_at_first_metrics"]
    assert record is not None, "no run_start.json when the first metrics line was written"
    assert record["tokenizer"]["path"] == str(zorro_shards.parent / "tok.model")
    assert record["model"]["vocab_size"] == 600 and record["shards"] == str(zorro_shards)


def test_evals_scores_the_best_of_a_run_still_training(running, tmp_path, capsys):
    from minilm_jax.evals.__main__ import main as evals_main

    out = tmp_path / "pairs"
    assert evals_main(["--workdir", str(running["workdir"]), "--which", "best",
                       "--suite", str(pairs_file(tmp_path)), "--rules", "holistic",
                       "--no_twin", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "minimal_pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["pairs"] == 4 for r in rows)
    still_training(running)


def test_export_best_of_a_run_still_training_needs_no_tokenizer_flag(running, tmp_path, capsys):
    from minilm_jax.interop.__main__ import main  # in process: the run's life, its CPU, is shorter

    code = main(["export", f"--workdir={running['workdir']}", f"--out={tmp_path / 'hf'}",
                 "--which=best"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert (tmp_path / "hf" / "tok.model").is_file()
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "unfinished (no summary.json)" in card
    still_training(running)


def test_fine_tuning_and_latency_read_a_run_still_training(running):
    from minilm_jax.latency import trained_member

    run = PretrainedRun.open(running["workdir"], "best")
    assert Path(run.tokenizer_path).is_file() and run.encoder_state()
    assert run.step > 0 and run.validation_perplexity is not None
    latest = PretrainedRun.open(running["workdir"], "latest")
    assert latest.model_state() and (latest.checkpoint_dir.parent / seal.SEAL_NAME).exists()
    assert trained_member(str(running["workdir"]), num_labels=2, seq_len=16).cfg.vocab_size == 600
    still_training(running)
