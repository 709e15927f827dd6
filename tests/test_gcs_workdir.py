"""``gs://`` workdirs end to end, offline: pre-training and fine-tuning in a bucket of a Cloud
Storage stand-in on 127.0.0.1 (``gcs_stand_in``), each stopped by SIGTERM mid-run and resumed from
the bucket to the result of an uninterrupted run; fine-tuning starts from the bucket's pre-training
run and its resumption is the command line (``python -m minilm_jax.finetune``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, shared_path, tensorboard_config, write_line_shards
from gcs_stand_in import gcs  # noqa: F401  (the session fixture)

POINT = "E32-H32-I64-L1-A2-V500"
SEQ = 64


def sigterm_after(spec, dispatches: int):
    """Raise SIGTERM in this thread right after ``spec``'s ``dispatches``-th dispatch: the run
    loop's own handler then saves that step and stops (status ``preempted``), as on a preemption.
    (``raise_signal`` delivers to the calling thread before it returns; ``os.kill`` could reach
    another thread, and the handler would then run a little later, at another step.)"""
    original, count = spec.dispatch, [0]

    def dispatch(state, batch):
        out = original(state, batch)
        count[0] += 1
        if count[0] == dispatches:
            signal.raise_signal(signal.SIGTERM)
        return out

    spec.dispatch = dispatch
    return spec


def read_json(uri: str) -> Any:
    from etils import epath
    return json.loads(epath.Path(uri).read_text())


def read_npy(uri: str) -> np.ndarray:
    import io

    from etils import epath
    return np.load(io.BytesIO(epath.Path(uri).read_bytes()))


def raw_records(uri: str) -> list[tuple[int, str]]:
    from etils import epath
    return [(r["step"], r["split"]) for r in
            map(json.loads, epath.Path(uri).read_text().splitlines())]


def pre_config(shards: Path):
    from minilm_jax.configs.pretrain import get_config as pretrain_config

    c = pretrain_config(POINT)
    c.model.max_len = SEQ
    c.data.shards = str(shards)
    c.train.num_steps = 24
    c.train.batch_size = 16
    c.train.log_every = 4
    c.train.progress = False
    c.train.peak_flops = 1e12
    c.eval.every_steps = 12
    c.eval.batch_size = 50
    c.checkpoint.every_steps = 6
    c.mesh.data = 1
    c.mlm.max_predictions = 16
    return c


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """JAX's persistent compilation cache in a temporary folder for this module (and its child
    processes): the same programs are compiled for each run, about 5 s each on 2 CPU cores."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = str(tmp_path_factory.mktemp("jax-cache"))
    settings = {"jax_compilation_cache_dir": folder,
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    saved = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    try:
        yield {name.upper(): str(value) for name, value in settings.items()}
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def pretrained(gcs, compile_cache, tmp_path_factory) -> dict[str, Any]:  # noqa: F811
    """A 500-piece SentencePiece tokenizer and shards of real text (local); the same 24-step
    pre-training run locally (uninterrupted: the reference) and in the bucket, there stopped by
    SIGTERM after step 9 and run again."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    root = tmp_path_factory.mktemp("gcs")
    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12]
    news = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()
    tok_path = root / "tok.model"
    tok_path.write_bytes(train_sentencepiece(lines + news, 500, "bpe"))
    shards = write_line_shards(root / "shards", load_tokenizer(tok_path), lines, SEQ)
    config = pre_config(shards)
    reference = Pretrainer(config, root / "local").run()
    workdir = gcs.uri("pre")
    stopped = sigterm_after(Pretrainer(config, workdir), 9).run()
    resumed = Pretrainer(config, workdir).run()
    return {"root": root, "tokenizer": tok_path, "workdir": workdir, "local": root / "local",
            "reference": reference, "stopped": stopped, "resumed": resumed,
            "compile_cache": compile_cache}


def test_pretraining_in_a_bucket_resumes_to_the_uninterrupted_result(gcs, pretrained):  # noqa: F811
    from etils import epath

    from minilm_jax.train.checkpoint import find_checkpoint
    from minilm_jax.train.run_log import read_metrics
    from minilm_jax.train.seal import verify

    workdir, ref = pretrained["workdir"], pretrained["reference"]
    assert workdir.startswith(f"gs://{gcs.bucket}/")
    assert pretrained["stopped"]["status"] == "preempted" and pretrained["stopped"]["step"] == 9
    resumed = pretrained["resumed"]
    assert resumed["status"] == "completed" and resumed["step"] == 24
    assert resumed["final_params_sha256"] == ref["final_params_sha256"]
    assert resumed["best"] == ref["best"]
    # Everything the run wrote is in the bucket, and reads back.
    root = epath.Path(workdir)
    assert read_json(f"{workdir}/summary.json")["final_params_sha256"] == ref["final_params_sha256"]
    assert read_json(f"{workdir}/config.json")["train.num_steps"] == 24
    assert not (root / ".lock").exists()  # released
    kept = sorted(int(p.name) for p in (root / "checkpoints").iterdir())
    assert kept == sorted(int(p.name) for p in (pretrained["local"] / "checkpoints").iterdir())
    assert 9 not in kept and kept[-1] == 24  # the SIGTERM checkpoint was rotated out as locally
    assert verify(root / "checkpoints" / "24").ok and verify(root / "best" / "24").ok
    step, state_dir = find_checkpoint(root, "best")
    assert step == 24 and str(state_dir).startswith("gs://")
    # metrics.jsonl: the resumed run recomputed nothing twice, and logged what the local run did.
    records = raw_records(f"{workdir}/metrics.jsonl")
    assert len(records) == len(set(records))
    local = {(r["step"], r["split"]): r.get("loss") for r in
             read_metrics(pretrained["local"] / "metrics.jsonl")}
    remote = {(r["step"], r["split"]): r.get("loss")
              for r in read_metrics(f"{workdir}/metrics.jsonl")}
    assert remote == local
    # TensorBoard events in the bucket too, with the run's config as hyperparameters
    events = sorted((root / "tensorboard").iterdir())
    assert events and all(p.name.startswith("events.out.tfevents") for p in events)
    hparams, texts = tensorboard_config(root / "tensorboard")
    assert hparams["train.num_steps"] == 24 and "| `model.hidden_dim` | `32` |" in texts["config"]


FT_OVERRIDES = {"data.max_len": SEQ, "data.train_per_class": 25, "data.eval_per_class": 25,
                "optim.peak_lr": 1e-3, "train.epochs": 3, "train.progress": False,
                "checkpoint.every_steps": 4, "mesh.data": 1}


def ft_config(pretrained: dict[str, Any]):
    from minilm_jax.configs.finetune import get_config as finetune_config

    c = finetune_config("ag_news")
    c.init.checkpoint = pretrained["workdir"]
    c.data.dir = str(shared_path("ag_news"))
    for key, value in FT_OVERRIDES.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def ft_cli(pretrained: dict[str, Any], workdir: str) -> list[str]:
    return [sys.executable, "-m", "minilm_jax.finetune", "--config=configs/finetune.py:ag_news",
            f"--workdir={workdir}", f"--config.init.checkpoint={pretrained['workdir']}",
            f"--config.data.dir={shared_path('ag_news')}",
            *(f"--config.{k}={v}" for k, v in FT_OVERRIDES.items())]


def test_finetuning_from_and_into_a_bucket_resumes_from_it(gcs, pretrained):  # noqa: F811
    from minilm_jax.finetune.finetuner import Finetuner

    ref_dir, workdir = gcs.uri("ft-ref"), gcs.uri("ft")
    ref = Finetuner(ft_config(pretrained), ref_dir, "pretrained").run()
    assert ref["status"] == "completed"
    assert ref["pretrained"]["workdir"] == pretrained["workdir"]
    assert ref["pretrained"]["step"] == 24  # the bucket's best checkpoint
    stopped = sigterm_after(Finetuner(ft_config(pretrained), workdir, "pretrained"), 4).run()
    assert stopped["status"] == "preempted"
    assert read_json(f"{workdir}/summary.json")["status"] == "preempted"
    proc = subprocess.run(ft_cli(pretrained, workdir), cwd=REPO, capture_output=True, text=True,
                          env=gcs.child_env(PYTHONUNBUFFERED="1", **pretrained["compile_cache"]),
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from checkpoint at step 4" in proc.stdout, proc.stdout[-2000:]
    summary = read_json(f"{workdir}/summary.json")
    assert summary["status"] == "completed"
    for key in ("final", "selected", "validation"):
        assert summary[key] == ref[key], key
    for which in ("final", "selected"):
        np.testing.assert_array_equal(read_npy(f"{workdir}/predictions/test.{which}.npy"),
                                      read_npy(f"{ref_dir}/predictions/test.{which}.npy"))
    assert [h["step"] for h in read_json(f"{workdir}/history.json")] == [3, 6, 9]
    records = raw_records(f"{workdir}/metrics.jsonl")
    assert len(records) == len(set(records))
    # The command's results table went to the bucket too.
    assert read_json(f"{workdir}/results.json")
