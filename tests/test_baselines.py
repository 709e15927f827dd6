"""Count-based reference perplexities of a shard set (unigram, interpolated bigram)."""

import json
import math

import numpy as np
import pytest

from minilm_jax.data.baselines import CACHE, compute_baselines, load_baselines, shard_baselines
from minilm_jax.data.shards import TokenizerInfo, write_shards

PAD = 1


def _markov_rows(rng, n_rows, seq_len, vocab, noise, nxt):
    """Rows of a chain where token t+1 = nxt[t] except with probability ``noise``; some padding."""
    rows = np.full((n_rows, seq_len), PAD, np.int32)
    for r in range(n_rows):
        length = rng.integers(seq_len // 2, seq_len + 1)
        tok = int(rng.integers(5, vocab))
        for t in range(length):
            rows[r, t] = tok
            tok = int(rng.integers(5, vocab)) if rng.random() < noise else int(nxt[tok])
    return rows


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    vocab = 40
    nxt = dict(zip(range(5, vocab), rng.permutation(np.arange(5, vocab))))
    splits = {s: _markov_rows(rng, n, 32, vocab, 0.2, nxt) for s, n in
              (("train", 400), ("validation", 60), ("test", 60))}
    write_shards(tmp_path / "shards", splits, pad_id=PAD,
                 tokenizer=TokenizerInfo("0" * 64, vocab))
    return tmp_path / "shards", splits, vocab


def test_unigram_matches_hand_count(shards):
    path, splits, vocab = shards
    result = compute_baselines(path)
    train = splits["train"][splits["train"] != PAD]
    counts = np.bincount(train, minlength=vocab).astype(float)
    p = (counts + 1) / (counts.sum() + vocab)
    valid = splits["validation"][splits["validation"] != PAD]
    expected = float(-np.log(p[valid]).mean())
    assert result["splits"]["validation"]["unigram"] == pytest.approx(expected, rel=1e-12)
    assert result["splits"]["validation"]["tokens"] == valid.size


def test_bigram_beats_unigram_on_a_chain(shards):
    path, _, vocab = shards
    result = compute_baselines(path)
    for split in ("validation", "test"):
        values = result["splits"][split]
        # 80% of next tokens are determined by the previous one: far below the unigram level.
        assert values["bigram"] < values["unigram"] - 1.0
        assert values["unigram"] < math.log(vocab) + 0.1
    assert result["lambda_chosen_on"] == "validation"


def test_rows_and_cache(shards):
    path, _, _ = shards
    rows = shard_baselines(path)
    assert {(r["name"], r["split"]) for r in rows} == {
        (n, s) for n in ("unigram", "bigram") for s in ("validation", "test")}
    for r in rows:
        assert r["kind"] == "baseline" and r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    cached = json.loads((path / CACHE).read_text())
    cached["splits"]["validation"]["unigram"] = 123.0  # a valid cache is used as it is
    (path / CACHE).write_text(json.dumps(cached))
    assert load_baselines(path)["splits"]["validation"]["unigram"] == 123.0
    cached["splits_sha256"]["train"] = "stale"  # shards changed: recomputed
    (path / CACHE).write_text(json.dumps(cached))
    assert load_baselines(path)["splits"]["validation"]["unigram"] != 123.0


def test_a_run_says_whether_it_learned_beyond_the_unigram_plateau(shards):
    from minilm_jax.data import learned

    path, _, _ = shards
    reference = learned.reference_perplexities(str(path))
    base = compute_baselines(path)["splits"]["validation"]
    assert reference == {"split": "validation", "unigram": pytest.approx(math.exp(base["unigram"])),
                         "bigram": pytest.approx(math.exp(base["bigram"]))}
    uni, bi = reference["unigram"], reference["bigram"]
    assert learned.beside(10.0, reference) == f" (unigram {uni:.1f}, bigram {bi:.1f})"
    assert learned.learned(0.89 * uni, reference) and not learned.learned(0.91 * uni, reference)
    assert learned.verdict(0.95 * uni, reference).startswith(
        f"warning: validation perplexity {0.95 * uni:.1f} is within 10% of the unigram")
    assert "is not below the unigram" in learned.verdict(2 * uni, reference)
    assert learned.verdict(0.5 * uni, reference).startswith("learned: validation perplexity")
    assert learned.reference_perplexities("") is None and learned.verdict(1.0, None) is None


def test_plateau_advice_knows_a_run_already_on_the_small_corpus_recipe():
    """The warning's advice names the small-corpus recipe only to a run that is not on it; a run
    on it (its config, or its config.json read back) is told what is left: more steps (twice its
    own count) or a larger corpus."""
    from minilm_jax.configs.own_data import get_config as own_data_config
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.data import learned
    from minilm_jax.settings.command_line import flatten

    reference = {"split": "validation", "unigram": 100.0, "bigram": 60.0}
    paper = pretrain_config("paper-1.25m")
    own = own_data_config("paper-1.25m")
    own.train.num_steps = 1234
    assert "--config=own_data" in learned.verdict(95.0, reference, paper)
    assert learned.verdict(95.0, reference, None).endswith(learned.ADVICE)
    for config in (own, flatten(own)):  # the run's config, or its config.json (flat keys)
        line = learned.verdict(95.0, reference, config)
        assert "try the small-corpus recipe" not in line
        assert "already uses the small-corpus recipe" in line and "a larger corpus" in line
        assert f"--config.train.num_steps={2 * 1234}" in line
    for field, other in (("optim.peak_lr", 5e-4), ("mlm.mask_prob", 0.15),
                         ("optim.schedule", "inverse_sqrt"), ("model.hidden_dropout", 0.1)):
        section, name = field.split(".")
        changed = own_data_config("paper-1.25m")
        changed[section][name] = other  # one of the recipe's values away: not on the recipe
        assert "try the small-corpus recipe" in learned.verdict(95.0, reference, changed), field


def test_a_run_on_the_small_corpus_recipe_is_not_told_to_use_it(word_shards, tmp_path, capsys):
    """The trainer hands its config to the verdict: 2 steps of the own_data recipe stay on the
    unigram plateau, and the warning says what is left rather than --config=own_data."""
    from minilm_jax.configs.own_data import get_config as own_data_config
    from minilm_jax.train.pretrainer import Pretrainer

    c = own_data_config("E32-H32-I64-L1-A2-V500")
    c.model.max_len, c.data.shards, c.mesh.data = 64, str(word_shards), 1
    c.train.batch_size, c.train.num_steps, c.train.progress = 16, 2, False
    c.eval.every_steps, c.eval.per_decade, c.eval.batch_size = 2, 0, 50
    c.checkpoint.every_steps, c.mlm.max_predictions = 2, 0  # derived from mask_prob
    summary = Pretrainer(c, tmp_path).run()
    assert summary["learned"] is False  # 2 steps: on the plateau
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines()
               if line.startswith("warning: validation perplexity")]
    assert len(warning) == 1, out
    assert "already uses the small-corpus recipe" in warning[0]
    assert "--config.train.num_steps=4" in warning[0] and "--config=own_data:" not in warning[0]
