"""Multi-host fine-tuning, proved on one machine: two ``python -m minilm_jax.finetune`` processes on
localhost (``jax.distributed`` + Gloo, 2 fake CPU devices each) fine-tune like one process with the
same 4 devices: the same validation scores every epoch, the same model selection, the same scores
and logits on the reported split. Only process 0 writes the run's files (summary, history,
predictions, tables, metrics); checkpoints are written by both through Orbax.

The two-process run is preempted the way a cluster does it: SIGTERM reaches one process only, both
save the same step and exit, and the run resumes (parameters now sharded across the processes) to
the one-process result. Everything is built here (a toy class-folder task, a WordPiece vocabulary,
a two-step pre-training run): no shared data needed.
"""

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import near_tie_share, trajectory_tolerance
from test_multihost import (distributed_flags, free_port, kill_all, output, records, run_stage,
                            start, wait_all)

POINT = "E32-H32-I64-L1-A2-V56"  # the 53-word vocabulary + spare rows
SEQ = 32
CLASSES = ("alpha", "bravo", "charlie")
DOCS_PER_CLASS = 30  # 90 documents: 18 held out (reported), 6 validation, 66 train
BATCH, EVAL_BATCH, EPOCHS = 8, 8, 3  # 9 steps per epoch; 18 holdout = 8 + 8 + 2 (padded)
SEEDS = "0,1"  # two members, vmapped
# Two processes reduce gradients in another order than one (Gloo across processes, XLA within):
# values agree to float32 rounding, not bit for bit (measured: train losses <= 2e-7 relative,
# logits <= 5e-7 absolute): trajectory_tolerance (tests/conftest.py) over a step's reductions: a
# weight gradient sums over BATCH x SEQ positions; the layer's hidden and ffn widths; attention
# over SEQ positions; the classes.
STEP_TERMS = BATCH * SEQ + 32 + 64 + SEQ + len(CLASSES)
TIMEOUT_S = 150  # per stage; a stuck collective must never hang the test suite
STOP_TIMEOUT_S = 60  # from the SIGTERM to both processes' exit
SLOW_FROM = 4  # stage 1's two processes sleep before each dispatch from the 4th on, so the
SLOW_S = 0.3   # SIGTERM surely lands mid-run however loaded the machine is

# Runs the real entry point, logging every file this process renames into place (atomic writes,
# Orbax's commits) and, when asked, slowing down its dispatches.
DRIVER = r"""
import os, runpy, sys, time
_replace, _log = os.replace, open(os.environ["MINILM_TEST_WRITE_LOG"], "a")
def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    _log.write(os.path.abspath(os.fspath(dst)) + "\n")
    _log.flush()
os.replace = replace
slow_from = int(os.environ.get("MINILM_TEST_SLOW_FROM", "0"))
if slow_from:
    from minilm_jax.finetune.finetuner import Finetuner
    _dispatch, _count = Finetuner.dispatch, [0]
    def dispatch(self, state, batch):
        _count[0] += 1
        if _count[0] >= slow_from:
            time.sleep(float(os.environ["MINILM_TEST_SLOW_S"]))
        return _dispatch(self, state, batch)
    Finetuner.dispatch = dispatch
sys.argv[0] = "minilm_jax.finetune"
runpy.run_module("minilm_jax.finetune", run_name="__main__", alter_sys=True)
"""


def _words(prefix: str, n: int) -> list[str]:
    return [prefix + chr(ord("a") + i) for i in range(n)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """Class folders (three topics, each with its own words among shared ones), a WordPiece
    vocabulary of exactly those words, and a two-step pre-training run on the same text."""
    from minilm_jax.data.shards import write_shards
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    root = tmp_path_factory.mktemp("mh_finetune")
    rng = np.random.default_rng(0)
    common = _words("common", 12)
    topic = {cls: _words(cls, 12) for cls in CLASSES}
    lines = []
    for cls in CLASSES:
        (root / "task" / cls).mkdir(parents=True)
        for i in range(DOCS_PER_CLASS):
            doc = [" ".join(rng.choice(topic[cls] + common, size=int(rng.integers(lo, hi))))
                   for lo, hi in ((3, 6), (8, 20))]  # title, body
            (root / "task" / cls / f"{i:03d}.txt").write_text("\n".join(doc) + "\n")
            lines += doc
    vocab = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]  # RoBERTa's ids: <s> <pad> </s> <unk> <mask>
    vocab += common + [w for cls in CLASSES for w in topic[cls]]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = load_tokenizer(root / "vocab.txt")
    rows = []
    for ids in tok.encode_batch(lines):
        row = [tok.bos_id] + ids[:SEQ - 2] + [tok.eos_id]
        rows.append(row + [tok.pad_id] * (SEQ - len(row)))
    write_shards(root / "shards", {"train": np.asarray(rows, np.int32)}, pad_id=tok.pad_id,
                 tokenizer=tok.info)
    config = pretrain_config(POINT)
    config.model.max_len = SEQ
    config.data.shards = str(root / "shards")
    config.train.num_steps = 2
    config.train.batch_size = 8
    config.train.progress = False
    config.train.peak_flops = 1e12
    config.mlm.max_predictions = 0  # derived from mask_prob (8 would drop 1.3% of 15% of 32)
    config.checkpoint.every_steps = 2
    config.mesh.data = 1  # one device: the fine-tuning runs only read its checkpoint
    Pretrainer(config, root / "pre").run()
    return {"task": root / "task", "vocab": root / "vocab.txt", "pre": root / "pre"}


def launch(name, tmp_path, toy, workdir, *, devices, mesh=(-1, 1), distributed=None, slow=False):
    """Start one fine-tuning process; its stdout+stderr go to ``<tmp>/<name>.log``, the files it
    renames into place to ``<tmp>/<name>.writes``."""
    args = ["-c", DRIVER, "--config=configs/finetune.py:folders", f"--workdir={workdir}",
            f"--config.init.checkpoint={toy['pre']}", f"--config.data.dir={toy['task']}",
            f"--config.data.tokenizer={toy['vocab']}", f"--config.data.max_len={SEQ}",
            "--config.data.pad_buckets=0", f"--config.train.seeds={SEEDS}",
            f"--config.train.batch_size={BATCH}", f"--config.train.epochs={EPOCHS}",
            "--config.train.early_stopping_patience=2", "--config.optim.peak_lr=3e-3",
            f"--config.eval.batch_size={EVAL_BATCH}", "--config.train.log_every=1",
            "--config.train.progress=False", f"--config.mesh.data={mesh[0]}",
            f"--config.mesh.fsdp={mesh[1]}"]
    if distributed is not None:
        args += distributed_flags(distributed)
    env = {"MINILM_TEST_WRITE_LOG": str(tmp_path / f"{name}.writes")}
    if slow:
        env.update(MINILM_TEST_SLOW_FROM=str(SLOW_FROM), MINILM_TEST_SLOW_S=str(SLOW_S))
    return start(name, tmp_path, args, devices=devices, env=env)


def run_files(tmp_path, name, workdir) -> set[str]:
    """The workdir files process ``name`` wrote, checkpoints left out."""
    path = tmp_path / f"{name}.writes"
    written = path.read_text().splitlines() if path.exists() else []
    root = str(Path(workdir).resolve())
    return {str(Path(p).relative_to(root)) for p in written
            if p.startswith(root + "/") and "/checkpoints/" not in p}


def scores(history) -> np.ndarray:
    return np.asarray([[m["score"] for m in h["members"]] for h in history])


def test_two_processes_finetune_like_one_and_survive_preemption(toy, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"

    # Stage 1: the reference (one process, 4 devices) and two processes (2 devices each) at once;
    # after step SLOW_FROM, SIGTERM reaches process 1 only.
    port = free_port()
    stage1 = [launch(f"two-{i}", tmp_path, toy, two, devices=2, distributed=(port, i, 2),
                     slow=True) for i in range(2)]
    reference = launch("one", tmp_path, toy, one, devices=4)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        wait_all(stage1, deadline, waiting_for=f"step {SLOW_FROM}",
                 until=lambda: max(records(two, "train"), default=0) >= SLOW_FROM)
        stage1[1].send_signal(signal.SIGTERM)
        # Both must save and exit: a process stopping alone deadlocks the other.
        wait_all(stage1, min(deadline, time.monotonic() + STOP_TIMEOUT_S),
                 waiting_for="both processes to save and exit after SIGTERM reached process 1")
        wait_all([reference], deadline)
    finally:
        kill_all(stage1 + [reference])
    stops = [re.findall(r"received SIGTERM: saved checkpoint at step (\d+); exiting", output(p))
             for p in stage1]
    assert stops[0] and stops[0] == stops[1], f"the processes stopped apart: {stops}"
    stopped = int(stops[0][0])
    steps = EPOCHS * 9
    assert SLOW_FROM <= stopped < steps
    assert (two / "checkpoints" / str(stopped)).is_dir()
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "preempted" and "final" not in summary
    for i in range(2):
        assert f"distributed: process {i} of 2, 2 local of 4 devices" in output(stage1[i])

    # Stage 2: resume both processes from that checkpoint, parameters now sharded across them.
    port = free_port()
    stage2 = [launch(f"two-{i}-resumed", tmp_path, toy, two, devices=2, mesh=(1, 4),
                     distributed=(port, i, 2)) for i in range(2)]
    run_stage(stage2, TIMEOUT_S)
    for i in range(2):
        assert f"resumed from checkpoint at step {stopped}" in output(stage2[i])

    # Only process 0 wrote the run's files (process 1 renamed nothing into place outside
    # checkpoints/, where Orbax has every process write its part).
    for name in ("two-1", "two-1-resumed"):
        assert run_files(tmp_path, name, two) == set(), f"{name} wrote run files"
    written = run_files(tmp_path, "two-0", two) | run_files(tmp_path, "two-0-resumed", two)
    assert {"config.json", "summary.json", "history.json", "results.json", "results.md",
            "predictions/holdout.final.npy", "predictions/holdout.selected.npy"} <= written
    assert run_files(tmp_path, "two-0-resumed", two) >= {"summary.json", "history.json"}

    # The same validation scores every epoch, the same selection, the same reported scores.
    ref_history = json.loads((one / "history.json").read_text())
    history = json.loads((two / "history.json").read_text())
    assert [h["step"] for h in history] == [h["step"] for h in ref_history] == [9, 18, 27]
    assert [h["improved"] for h in history] == [h["improved"] for h in ref_history]
    # validation accuracy counts argmaxes; its logits are not saved, so no near tie can be
    # allowed for: the same counts
    np.testing.assert_allclose(scores(history), scores(ref_history), rtol=0, atol=1e-6)
    ref_records, got_records = records(one, "validation"), records(two, "validation")
    assert sorted(got_records) == sorted(ref_records) == [9, 18, 27]
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert got["status"] == ref["status"] in ("completed", "early_stopped")
    assert got["examples"] == ref["examples"] == {"train": 66, "validation": 6, "holdout": 18}
    assert got["validation"]["epochs"] == ref["validation"]["epochs"]
    assert got["selected"]["epochs"] == ref["selected"]["epochs"]
    for a, b in zip(got["validation"]["members"], ref["validation"]["members"]):
        assert a == pytest.approx(b, rel=0, abs=1e-6)  # counts, as above
    for which in ("final", "selected"):
        a = np.load(two / "predictions" / f"holdout.{which}.npy")
        b = np.load(one / "predictions" / f"holdout.{which}.npy")
        assert a.shape == b.shape == (2, 18, len(CLASSES))  # every example exactly once
        # the run's steps and one forward pass; its scores count argmaxes, so only examples
        # within the logits' tolerance of a tie can flip
        tol = trajectory_tolerance(float(np.max(np.abs(b))), STEP_TERMS, steps + 1)
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)
        shares = near_tie_share(b, tol)
        for x, y, share in zip(got[which]["members"], ref[which]["members"], shares):
            assert x == pytest.approx(y, rel=0, abs=float(share) + 1e-6)
    ref_loss = {s: r["loss"] for s, r in records(one, "train").items()}
    got_loss = {s: r["loss"] for s, r in records(two, "train").items()}
    assert sorted(got_loss) == sorted(ref_loss) == list(range(1, steps + 1))
    np.testing.assert_allclose([got_loss[s] for s in ref_loss], list(ref_loss.values()), rtol=0,
                               atol=trajectory_tolerance(max(ref_loss.values()), STEP_TERMS, steps))
    print(f"\nstopped at step {stopped}; validation scores {scores(history).tolist()}; holdout "
          f"accuracy (final) {got['final']['mean']}")
