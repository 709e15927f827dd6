"""``minilm_jax.load_run`` reads what it is asked: a pre-training run whose best checkpoint is not
its newest gives each (``best`` at the lowest validation loss of its metrics, ``latest``, ``step:N``)
with that checkpoint's parameters; a fine-tuning run whose members' final and selected parameters
differ gives the asked ones, and without ``seed`` the member with the best validation score. The
fine-tuning run is written here by hand in the documented ``parameters.npz`` layout, each member's
parameters a constant of its own, so what is read is known without training."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import build_word_shards

import minilm_jax
from minilm_jax.model.models import build_classifier
from minilm_jax.model.sizes import resolve_point
from minilm_jax.runs.finetuned import flat_leaves
from minilm_jax.train.checkpoint import load_model_state
from minilm_jax.train.run_log import read_metrics


@pytest.fixture(scope="module")
def diverging_run(tmp_path_factory):
    """4 steps at a learning rate of 3 (no warmup, held): validation loss rises from step 2 to
    4, so the best checkpoint (2) is not the newest (4); both are kept."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.train.pretrainer import Pretrainer

    root = tmp_path_factory.mktemp("load_run")
    shards = build_word_shards(root / "shards",
                               splits=(("train", 64), ("validation", 16), ("test", 16)))
    c = get_config("E16-H16-I32-L1-A2-V500")
    c.model.max_len, c.data.shards, c.mesh.data = 64, str(shards), 1
    c.train.batch_size, c.train.num_steps, c.train.progress, c.train.log_every = 8, 4, False, 2
    c.eval.every_steps, c.eval.batch_size, c.eval.test_at_end = 2, 16, False
    c.checkpoint.every_steps = 2
    c.mlm.max_predictions = 16
    c.optim.peak_lr, c.optim.warmup_steps, c.optim.schedule = 3.0, 1, "constant"
    Pretrainer(c, root / "run").run()
    (root / "vocab.txt").write_text("\n".join(["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]) + "\n")
    return root / "run"


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_a_pretraining_run_gives_the_asked_checkpoint(diverging_run):
    losses = {int(r["step"]): float(r["loss"]) for r in read_metrics(
        diverging_run / "metrics.jsonl") if r["split"] == "validation"}
    best = min(losses, key=losses.get)
    assert sorted(losses) == [2, 4] and best == 2  # best != latest, by the metrics
    vocab = str(diverging_run.parent / "vocab.txt")  # the word-level shards record no file
    loaded = {which: minilm_jax.load_run(diverging_run, which=which, tokenizer=vocab)
              for which in ("best", "latest", "step:2", "step:4")}
    assert {which: run.step for which, run in loaded.items()} == {
        "best": 2, "latest": 4, "step:2": 2, "step:4": 4}
    for which, run in loaded.items():
        assert run.which == which
        saved = load_model_state(diverging_run / "checkpoints" / str(run.step) / "default",
                                 run.model_config)
        expected = [np.asarray(x) for x in jax.tree.leaves(saved.filter(nnx.Param))]
        got = params_of(run.model)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(loaded["best"].model),
                                                        params_of(loaded["latest"].model)))


SEEDS = (3, 4, 5)
SCORES = (0.2, 0.9, 0.5)  # the best member: the second (seed 4)


def value(which: str, member: int) -> float:
    return {"final": 10.0, "selected": 20.0}[which] + member


@pytest.fixture
def finetuned(tmp_path):
    """A finished 3-member fine-tuning run: every parameter of member m is 10 + m in its final
    parameters and 20 + m in its selected ones."""
    cfg = resolve_point("E16-H16-I32-L1-A2-V300").replace(max_len=32)
    model = build_classifier(cfg, 4)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    arrays = {}
    for which in ("final", "selected"):
        for path, leaf in flat_leaves(params).items():
            arrays[f"{which}/params/{path}"] = np.stack(
                [np.full_like(leaf, value(which, m)) for m in range(len(SEEDS))])
        for path, leaf in flat_leaves(rest).items():
            arrays[f"{which}/rest/{path}"] = np.stack([leaf] * len(SEEDS))
    run = tmp_path / "ft"
    run.mkdir()
    np.savez(run / "parameters.npz", **arrays)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]", "the"]) + "\n")
    (run / "config.json").write_text(json.dumps({"task": "table", "init.mode": "random"}))
    (run / "summary.json").write_text(json.dumps({
        "status": "completed", "task": "table", "init": "random", "seeds": list(SEEDS),
        "model": cfg.to_dict(), "steps": 6, "tokenizer": {"path": str(vocab)},
        "validation": {"members": [{"score": s} for s in SCORES]}}))
    return run


@pytest.mark.parametrize("which", ["final", "selected", "best"])
@pytest.mark.parametrize("seed", [None, 3, 5])
def test_a_fine_tuning_run_gives_the_asked_parameters_and_member(finetuned, which, seed):
    run = minilm_jax.load_run(finetuned, which=which, seed=seed)
    member = SEEDS.index(seed) if seed is not None else int(np.argmax(SCORES))
    assert member == (1 if seed is None else member) and run.seed == SEEDS[member]
    stored = "final" if which == "final" else "selected"
    leaves = params_of(run.model)
    assert leaves and all(np.all(leaf == value(stored, member)) for leaf in leaves), (
        which, seed, sorted({float(leaf.flat[0]) for leaf in leaves}))
