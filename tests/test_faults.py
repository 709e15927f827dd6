"""Fault injection on the engine: corrupt checkpoints, checkpoints of another run, rejected
commands, resumed metric histories (the README's reliability table lists what each test holds)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.train.checkpoint import CheckpointError, find_checkpoint, load_encoder
from minilm_jax.train.pretrainer import Pretrainer
from minilm_jax.train.seal import verify

from test_pretrain import small_config, train_losses


def flip_bytes(step_dir: Path, count: int = 64) -> Path:
    """Invert ``count`` bytes in the middle of the largest data file (its size is unchanged)."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.name != "seal.json"]
    target = max(files, key=lambda f: f.stat().st_size)
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + count, len(data))):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def raw_records(workdir: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["split"]) for r in
            (json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def eight_steps(word_shards, tmp_path_factory) -> Path:
    """A finished 8-step run of ``small_config`` (checkpoints at 4 and 8, an evaluation at 6),
    trained once: each test that breaks such a run breaks a copy of its own (``copy_run``)."""
    workdir = tmp_path_factory.mktemp("faults") / "run"
    Pretrainer(small_config(word_shards, **{"train.num_steps": 8}), workdir).run()
    return workdir


def copy_run(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run ``finished`` at ``tmp_path / "run"`` (a run names no folder:
    its copy resumes as the run itself would)."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_bit_flip_in_the_newest_checkpoint_is_quarantined_and_recomputed(word_shards, eight_steps,
                                                                         tmp_path):
    workdir = copy_run(eight_steps, tmp_path)  # checkpoints at 4 and 8, the best at 6
    ref = train_losses(workdir)
    assert verify(workdir / "checkpoints" / "8").ok
    assert [verify(best).ok for best in (workdir / "best").iterdir()] == [True]
    flip_bytes(workdir / "checkpoints" / "8")
    assert verify(workdir / "checkpoints" / "8").state == "corrupt"
    summary = Pretrainer(small_config(word_shards), workdir).run()  # on to 12 steps
    assert summary["status"] == "completed" and summary["step"] == 12
    quarantined = list((workdir / "quarantine").iterdir())
    assert [q.name.split("-")[:2] for q in quarantined] == [["checkpoints", "8"]]
    assert verify(workdir / "checkpoints" / "8").ok  # recomputed from step 4 and saved again
    losses = train_losses(workdir)
    assert all(losses[s] == ref[s] for s in range(5, 9))  # steps 5..8 re-done identically
    # every (step, split) once in the file itself: the records after step 4 were recomputed
    assert len(raw_records(workdir)) == len(set(raw_records(workdir)))
    step, path = find_checkpoint(workdir, "latest")
    assert step == 12 and load_encoder(path, model_from_config(small_config(word_shards)))


def test_no_usable_checkpoint_is_an_error_that_moves_nothing(word_shards, eight_steps, tmp_path):
    workdir = copy_run(eight_steps, tmp_path)
    for step in ("4", "8"):
        flip_bytes(workdir / "checkpoints" / step)
    before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=r"no usable checkpoint .*step 8: file .* changed.*"
                                              r"step 4: file .* changed"):
        Pretrainer(small_config(word_shards, **{"train.num_steps": 8}), workdir).run()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before
    assert not (workdir / "quarantine").exists()


def test_checkpoint_of_another_run_is_refused_even_without_config_json(word_shards, eight_steps,
                                                                       tmp_path):
    workdir = copy_run(eight_steps, tmp_path)
    (workdir / "config.json").unlink()
    before = sorted(str(p) for p in workdir.rglob("*"))
    with pytest.raises(CheckpointError, match=r"different config \(model.hidden_dim: 32 -> 64"):
        Pretrainer(small_config(word_shards, **{"model.hidden_dim": 64}), workdir).run()
    (workdir / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"different config \(optim.peak_lr: .*seed: 0 -> 7"):
        Pretrainer(small_config(word_shards, **{"seed": 7, "optim.peak_lr": 1e-2}), workdir).run()
    (workdir / "config.json").unlink()
    assert sorted(str(p) for p in workdir.rglob("*") if p.name != ".lock") == [
        b for b in before if not b.endswith(".lock")]


@pytest.mark.parametrize("overrides, message, then_corrected", [
    ({"mesh.data": 2, "train.batch_size": 15}, "batch_size", True),
    ({"optim.schedule": "cosin"}, "schedule", False),
    ({"train.batch_size": 0}, "batch_size", False),
    ({"train.num_steps": -5}, "num_steps", False),
])
def test_a_rejected_command_leaves_no_trace(word_shards, tmp_path, overrides, message,
                                            then_corrected):
    """Refused before anything is written; the corrected command then runs in that workdir (in
    one case: after every refusal the workdir does not exist, so there is nothing else to run
    into)."""
    workdir = tmp_path / "run"
    with pytest.raises((UserError, ConfigError), match=message):
        Pretrainer(small_config(word_shards, **overrides), workdir)
    assert not workdir.exists()
    if then_corrected:
        Pretrainer(small_config(word_shards, **{"train.num_steps": 2}), workdir).run()


def test_a_resumed_run_logs_each_step_once(word_shards, eight_steps, tmp_path):
    """The evaluation at step 6 is logged after the checkpoint at step 4; the run dies before the
    next save. Resuming from 4 recomputes steps 5-8 and logs each once."""
    workdir = copy_run(eight_steps, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "8")  # as if killed between the step-6 log and step 8
    Pretrainer(small_config(word_shards, **{"train.num_steps": 8}), workdir).run()
    records = raw_records(workdir)
    assert len(records) == len(set(records))
    assert [s for s, split in records if split == "validation"] == [6]
    assert [s for s, split in records if split == "train"] == list(range(1, 9))


def test_a_corrupt_snapshot_is_not_fine_tuned_from(word_shards, tmp_path):
    workdir = tmp_path / "run"
    config = small_config(word_shards, **{"checkpoint.keep_fractions": (0.5,)})
    Pretrainer(config, workdir).run()
    step, path = find_checkpoint(workdir, "step:6")
    encoder = load_encoder(path, model_from_config(config))
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(encoder))
    flip_bytes(workdir / "snapshots" / "6")
    with pytest.raises(CheckpointError, match=r"snapshots/6 is corrupt \(file .* changed"):
        load_encoder(path, model_from_config(config))
    step, best = find_checkpoint(workdir, "best")
    flip_bytes(best.parent)
    with pytest.raises(CheckpointError, match=rf"best/{step} is corrupt"):
        load_encoder(best, model_from_config(config))


def test_an_unsealed_checkpoint_is_used_only_when_nothing_verified_is_left(word_shards, eight_steps,
                                                                          tmp_path, capsys):
    workdir = copy_run(eight_steps, tmp_path)
    (workdir / "checkpoints" / "8" / "seal.json").unlink()  # killed between Orbax and the seal
    capsys.readouterr()
    Pretrainer(small_config(word_shards, **{"train.num_steps": 8}), workdir).run()
    out = capsys.readouterr().out
    assert "checkpoints/8 is not usable (no seal.json" in out and "resumed from checkpoint at step 4" in out
    for step in ("4", "8"):  # checkpoints from before seals existed
        (workdir / "checkpoints" / step / "seal.json").unlink()
    Pretrainer(small_config(word_shards, **{"train.num_steps": 10}), workdir).run()
    out = capsys.readouterr().out
    assert "has no seal; restored unverified" in out and "resumed from checkpoint at step 8" in out


# ------------------------------------------------------------------ bad shards, full and read-only disks
def copy_shards(word_shards: Path, to: Path) -> Path:
    shutil.copytree(word_shards, to)
    return to


def test_a_truncated_shard_file_is_named(word_shards, tmp_path):
    shards = copy_shards(word_shards, tmp_path / "shards")
    train = shards / "train.npy"
    train.write_bytes(train.read_bytes()[:-1000])
    with pytest.raises(UserError, match=r"shard file .*train.npy is truncated"):
        Pretrainer(small_config(shards), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_out_of_range_token_ids_are_caught_at_open(word_shards, tmp_path):
    shards = copy_shards(word_shards, tmp_path / "shards")
    train = np.load(shards / "train.npy")
    train[-1, 5] = 70000  # the last row is always among the rows checked at open
    np.save(shards / "train.npy", train)
    with pytest.raises(UserError, match=r"train.npy holds token id 70000, outside the tokenizer's "
                                         r"500 ids"):
        Pretrainer(small_config(shards), tmp_path / "run")


def cli(shards: Path, workdir: Path, steps: int, *, file_size_limit: int | None = None):
    """``python -m minilm_jax.pretrain`` on the small config; ``file_size_limit`` (bytes) makes
    every larger write fail as a full disk does (RLIMIT_FSIZE; SIGXFSZ ignored)."""
    import subprocess
    import sys

    from test_pretrain import REPO, cli_args, cli_env

    args = cli_args(shards, workdir, steps=steps)
    if file_size_limit:  # set the limit in a fresh interpreter, which then becomes the command
        args = [sys.executable, "-c", LIMITED, str(file_size_limit)] + args
    return subprocess.run(args, env=cli_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=300)


LIMITED = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_earlier_ones(word_shards, tmp_path):
    workdir = tmp_path / "run"
    first = cli(word_shards, workdir, 10)
    assert first.returncode == 0, first.stderr[-2000:]
    full = cli(word_shards, workdir, 20, file_size_limit=100_000)  # the step-15 save fails
    assert full.returncode == 2
    assert full.stderr.strip().splitlines() == [full.stderr.strip()]  # one line, no traceback
    assert full.stderr.startswith("error: cannot save the checkpoint at step 15 in ")
    assert "File too large" in full.stderr and "the earlier checkpoints are kept" in full.stderr
    assert verify(workdir / "checkpoints" / "5").ok and verify(workdir / "checkpoints" / "10").ok
    again = cli(word_shards, workdir, 20)  # space again: resumes from 10 and finishes
    assert again.returncode == 0 and "resumed from checkpoint at step 10" in again.stdout
    assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"


def test_an_unwritable_workdir_is_one_line(word_shards, tmp_path):
    import os
    target = Path("/sys/minilm-jax-unwritable/run")  # sysfs: no new files, even for root
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_create(Path("/sys")):
        pytest.skip("no unwritable directory on this platform")
    proc = cli(word_shards, target, 4)
    assert proc.returncode == 2
    assert proc.stderr.strip() in ("error: /sys/minilm-jax-unwritable: Permission denied",
                                   "error: /sys/minilm-jax-unwritable: Operation not permitted")


def _can_create(folder: Path) -> bool:
    probe = folder / ".minilm-probe"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def test_outputs_follow_the_umask(word_shards, tmp_path):
    import os
    from minilm_jax.storage import atomic_write_json
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ input stages and entry points
def corpus_cli(*args: str):
    import subprocess
    import sys

    from test_pretrain import REPO, cli_env
    return subprocess.run([sys.executable, "-m", "minilm_jax.corpus", *args], env=cli_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_undecodable_lines_are_counted_by_every_stage(tmp_path):
    from conftest import shared_path
    text = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_bytes().splitlines()
    lines = [line for line in text if len(line.split()) > 8][:1500]
    lines[10] = b"caf\xe9 au lait " + lines[10]  # Latin-1, not UTF-8
    lines[700] = b"\xff\xfe" + lines[700]
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    tok = corpus_cli("train-tokenizer", "--corpus", f"text:{corpus}", "--out", str(tmp_path / "tok"),
                     "--sizes", "300", "--no_progress")
    assert tok.returncode == 0, tok.stderr[-2000:]
    assert f"skipped 2 undecodable line(s) (first at {corpus}:11)" in tok.stdout
    shards = corpus_cli("shards", "--corpus", f"text:{corpus}", "--tokenizer",
                        str(tmp_path / "tok" / "bpe-300.model"), "--out", str(tmp_path / "shards"),
                        "--seq_len", "64", "--valid", "0.1", "--no_progress")
    assert shards.returncode == 0, shards.stderr[-2000:]
    assert f"skipped 2 undecodable line(s) (first at {corpus}:11)" in shards.stdout
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["source"]["undecodable_skipped"] == 2
    strict = corpus_cli("shards", "--corpus", f"text:{corpus}", "--tokenizer",
                        str(tmp_path / "tok" / "bpe-300.model"), "--out", str(tmp_path / "s2"),
                        "--on_decode_error", "fail", "--no_progress")
    assert strict.returncode == 2 and strict.stderr.startswith(f"error: {corpus}:11: undecodable")
    assert not (tmp_path / "s2").exists()


def test_an_unknown_sweep_name_is_one_line():
    import subprocess
    import sys

    from test_pretrain import REPO, cli_env
    proc = subprocess.run([sys.executable, "-m", "minilm_jax.sweep", "--config=configs/sweep.py:nope",
                           "--dry_run"], env=cli_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --config=configs/sweep.py:nope: unknown sweep 'nope'; "
                                   "known: paper, demo, smoke, main, a4, variant, childes, study_b, study_b_smoke, "
                                   "study_b_full")


def test_a_vocabulary_file_without_a_word_column_is_a_user_error(tmp_path):
    from minilm_jax.errors import one_line
    from minilm_jax.tasks.task_data import load_vocabulary
    bad = tmp_path / "words.csv"
    bad.write_text("token,frequency\nthe,10\n")
    with pytest.raises(UserError, match="expected a 'word' column") as caught:
        load_vocabulary(str(bad))
    assert one_line(caught.value).startswith(f"vocabulary file {bad}: header has columns")
