"""Evaluators inside pre-training: Zorro scored at the snapshot steps of the model being trained
equals scoring the saved snapshot afterwards; rows of a step evaluated again replace the earlier
ones; the overall accuracy is logged; evaluations are run control (not part of a run's identity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ZORRO_DEV_PARADIGM as PARADIGM
from conftest import shared_path
from minilm_jax.errors import UserError


@pytest.fixture(scope="module")
def zorro_words(tmp_path_factory) -> Path:
    """A word list: the content words of every 400th pair of the paradigm (26 words).
    ``evals.zorro.word_list`` keeps the 140 of its 2000 pairs made of them alone, in training as
    afterwards: a fourteenth of the scoring (which in training runs on each device of the 8-device
    mesh)."""
    from minilm_jax.tasks.vocab_filter import content_words

    lines = shared_path("zorro", "sentences", "babyberta", f"{PARADIGM}.txt").read_text(
        encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("zorro_words") / "words.txt"
    path.write_text("".join(f"{w}\n" for w in sorted(
        {w for s in lines[0::800] + lines[1::800] for w in content_words(s)})), encoding="utf-8")
    return path


def config_for(shards: Path, words: Path, rules: str = "holistic,pll_word_l2r"):
    from minilm_jax.configs.pretrain import get_config

    c = get_config("E16-H16-I32-L1-A2-V610")
    c.model.max_len = 64
    c.data.shards = str(shards)
    c.train.num_steps = 8
    c.train.batch_size = 32
    c.train.progress = False
    c.train.log_every = 4
    c.eval.every_steps = 4
    c.eval.batch_size = 48
    c.checkpoint.every_steps = 4
    c.checkpoint.keep_fractions = (0.5, 1.0)
    c.evals = {"zorro": {"type": "minimal_pairs", "suite": "zorro", "paradigms": PARADIGM,
                         "rules": rules, "word_list": str(words)},
               "ppl": {"type": "perplexity", "split": "validation"}}
    return c


def test_in_training_scores_equal_scoring_the_saved_snapshots(zorro_shards, offline_zorro,
        zorro_words, tmp_path):
    from minilm_jax.evals.common import from_config
    from minilm_jax.evals.in_training import read_zero_shot, step_evaluations
    from minilm_jax.evals.scoring_models import checkpoint_model
    from minilm_jax.train.pretrainer import Pretrainer
    from minilm_jax.train.run_log import read_metrics

    config, workdir = config_for(zorro_shards, zorro_words), tmp_path / "run"
    Pretrainer(config, workdir, step_evaluations(config, workdir)).run()
    everything = read_zero_shot(workdir)
    rows = [r for r in everything if r["kind"] == "minimal_pairs"]
    assert sorted({(r["step"], r["rule"]) for r in rows}) == [
        (s, r) for s in (4, 8) for r in ("holistic", "pll_word_l2r")]
    assert {(r["pairs"], r["skipped_vocab"]) for r in rows} == {(2000, 2000 - 140)}  # the word list
    # Perplexity behind the same seam equals the run loop's own validation figure at each step,
    # and the test perplexity of a saved checkpoint the summary's.
    validation = {m["step"]: m["perplexity"] for m in read_metrics(workdir / "metrics.jsonl")
                  if m["split"] == "validation"}
    ppl = [r for r in everything if r["kind"] == "perplexity"]
    assert [r["step"] for r in ppl] == [4, 8]
    # The same compiled evaluation (eval_program: the same function, mesh, replicated parameters,
    # masks and batch size) of the same state, so bit-identical on any processor.
    for r in ppl:
        assert r["perplexity"] == validation[r["step"]]
    summary = json.loads((workdir / "summary.json").read_text())
    test = from_config("t", {"type": "perplexity", "split": "test"}).rows(
        checkpoint_model(workdir, "best"))
    assert test[0]["perplexity"] == summary["best"]["test_perplexity"]  # a lossless checkpoint
    random = from_config("t", {"type": "perplexity", "split": "test"}).rows(
        checkpoint_model(workdir, "best", random_seed=0))
    assert random[0]["perplexity"] > test[0]["perplexity"]
    evaluator = from_config("zorro", dict(config.evals.zorro))
    for step in (4, 8):
        after = evaluator.rows(checkpoint_model(workdir, f"step:{step}"))
        during = [r for r in rows if r["step"] == step]
        assert [(r["rule"], r["outcomes"], r["correct"]) for r in during] == \
            [(r["rule"], r["outcomes"], r["correct"]) for r in after]
        assert all(r["validation_perplexity"] is not None for r in during)
    logged = [m for m in read_metrics(workdir / "metrics.jsonl") if m["split"] == "zero_shot"]
    assert [m["step"] for m in logged] == [4, 8]
    assert 0 < logged[0]["zorro/holistic"] < 100

    # A step evaluated again (a resumed run) replaces its rows; other steps' rows stay.
    from flax import nnx

    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.model.models import MaskedLM

    evaluation = next(e for e in step_evaluations(config, workdir) if e.name == "zorro")
    run = PretrainedRun.open(workdir, "step:4")  # another state, scored as step 8
    m = MaskedLM(run.model, rngs=nnx.Rngs(params=0))
    nnx.update(m, run.model_state())
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    evaluation(8, graphdef, params, rest, 1.0)
    again = read_zero_shot(workdir)
    assert len(again) == len(everything)
    assert [r for r in again if r["step"] == 4] == [r for r in everything if r["step"] == 4]
    assert {r["validation_perplexity"] for r in again
            if r["step"] == 8 and r["evaluation"] == "zorro"} == {1.0}

    # Evaluations are run control: the finished run reopens with other entries.
    Pretrainer(config_for(zorro_shards, zorro_words, "holistic"), workdir)


def test_a_zero_shot_cadence_off_the_validation_steps_is_refused(zorro_shards, offline_zorro,
        zorro_words, tmp_path):
    from minilm_jax.evals.in_training import step_evaluations

    config = config_for(zorro_shards, zorro_words)
    config.eval.zero_shot_every = 6
    with pytest.raises(UserError, match="zero_shot_every=6 must be a multiple"):
        step_evaluations(config, tmp_path / "run")
