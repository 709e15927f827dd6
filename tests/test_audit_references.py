"""The reference numbers a model is compared against, each against a hand count on tiny shards
written as the builders write them: the unigram and interpolated-bigram baselines (left
neighbours incl. ``<s>``, contexts never seen, lambda chosen on validation, chunked reading), the
never-masked ids read from the manifest's ``source.special_ids`` (a BERT ``vocab.txt`` layout),
the ``baselines.json`` cache and when it must be recomputed, the "learned" verdict and what a
run's summary records, and the perplexity evaluator's defaults and refusals."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from minilm_jax.data import baselines, learned
from minilm_jax.data.baselines import CACHE, LAMBDAS, compute_baselines, load_baselines
from minilm_jax.data.shards import TokenizerInfo, read_manifest, write_shards
from minilm_jax.errors import UserError

PAD = 1  # RoBERTa layout: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4
VOCAB = 12
ROWS = {
    "train": [[0, 5, 6, 7, 2, 1, 1, 1],
              [0, 5, 6, 8, 2, 1, 1, 1],
              [0, 6, 7, 3, 5, 2, 1, 1],  # <unk> is a left neighbour, never a target
              [0, 5, 7, 7, 6, 2, 1, 1],
              [0, 9, 5, 6, 2, 1, 1, 1]],
    "validation": [[0, 5, 6, 7, 2, 1, 1, 1],
                   [0, 6, 8, 5, 9, 2, 1, 1]],
    "test": [[0, 5, 7, 6, 10, 9, 2, 1],  # 10 unseen in train; 9 after it: a context never seen
             [0, 3, 6, 11, 2, 1, 1, 1]],
}


def _pairs(rows, never, pad):
    """(token, left neighbour or None) of every maskable position, read off row by row."""
    out = []
    for row in rows:
        for t, tok in enumerate(row):
            if tok == pad or tok in never:
                continue
            prev = row[t - 1] if t > 0 and row[t - 1] != pad else None
            out.append((tok, prev))
    return out


def _hand_baselines(splits, never, pad, vocab):
    """Unigram and interpolated-bigram nll by hand: add-one unigram over the vocabulary, bigram
    counts c(v, w) over maskable w, lambda from LAMBDAS minimising validation nll. Returns
    (lambda, {split: tokens, unigram, bigram}, {lambda: validation bigram nll})."""
    train = _pairs(splits["train"], never, pad)
    uni = Counter(w for w, _ in train)
    n = sum(uni.values())
    pair = Counter((v, w) for w, v in train if v is not None)
    ctx = Counter(v for w, v in train if v is not None)
    p_uni = lambda w: (uni[w] + 1) / (n + vocab)  # noqa: E731

    def bigram(pairs, lam):
        nll = [-math.log(lam * pair[(v, w)] / ctx[v] + (1 - lam) * p_uni(w))
               if v is not None and ctx[v] > 0 else -math.log(p_uni(w)) for w, v in pairs]
        return sum(nll) / len(nll)

    evals = {s: _pairs(r, never, pad) for s, r in splits.items() if s != "train"}
    by_lambda = {v: bigram(evals["validation"], v) for v in LAMBDAS}
    lam = min(LAMBDAS, key=by_lambda.get)
    return lam, {s: {"tokens": len(p), "unigram": sum(-math.log(p_uni(w)) for w, _ in p) / len(p),
                     "bigram": bigram(p, lam)} for s, p in evals.items()}, by_lambda


def _write(path, rows=ROWS, vocab=VOCAB, pad=PAD, special_ids=None):
    source = {"special_ids": special_ids} if special_ids else None  # as the builders record them
    write_shards(path, {k: np.asarray(v, np.int32) for k, v in rows.items()}, pad_id=pad,
                 tokenizer=TokenizerInfo("0" * 64, vocab), source=source)
    return path


def test_bigram_baseline_matches_a_hand_count_read_in_chunks(tmp_path, monkeypatch):
    """Every number of compute_baselines against a hand count, the splits read 2 rows at a time:
    <s> is a left neighbour, <unk>/<s>/</s> are no targets, an unseen context falls back to the
    unigram, lambda is the grid's best on validation."""
    monkeypatch.setattr(baselines, "_CHUNK_ROWS", 2)
    lam, expected, by_lambda = _hand_baselines(ROWS, {0, 1, 2, 3}, PAD, VOCAB)
    assert lam != max(LAMBDAS, key=by_lambda.get)  # the grid's best is not its worst
    result = compute_baselines(_write(tmp_path / "s"))
    assert result["bigram_lambda"] == lam and result["lambda_chosen_on"] == "validation"
    assert result["never_mask_ids"] == [0, 1, 2, 3]
    assert result["train_tokens"] == 3 + 3 + 3 + 4 + 3  # maskable train tokens, row by row
    assert set(result["splits"]) == {"validation", "test"}
    for split, values in expected.items():
        got = result["splits"][split]
        assert got["tokens"] == values["tokens"]
        assert got["unigram"] == pytest.approx(values["unigram"], rel=1e-12)
        assert got["bigram"] == pytest.approx(values["bigram"], rel=1e-12)


BERT = {"pad": 0, "unk": 100, "bos": 101, "eos": 102, "mask": 103}
BERT_ROWS = {"train": [[101, 104, 105, 100, 106, 1, 102, 0],  # 1, 2: [unused0], [unused1]
                       [101, 105, 104, 106, 102, 0, 0, 0],
                       [101, 104, 100, 2, 105, 107, 102, 0]],
             "validation": [[101, 104, 1, 105, 100, 102, 0, 0]],
             "test": [[101, 107, 2, 104, 102, 0, 0, 0]]}


def test_bert_layout_baselines_leave_out_the_manifests_own_special_ids(tmp_path):
    """Shards recording [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102 under source.special_ids: those
    are no targets (ids 1-3 are ordinary pieces there), numbers as by hand."""
    shards = _write(tmp_path / "s", BERT_ROWS, 110, 0, BERT)
    assert read_manifest(shards)["source"]["special_ids"] == BERT  # where the builders put them
    assert baselines.shard_never_mask_ids(read_manifest(shards)) == (0, 100, 101, 102)
    lam, expected, _ = _hand_baselines(BERT_ROWS, {0, 100, 101, 102}, 0, 110)
    result = compute_baselines(shards)
    assert result["never_mask_ids"] == [0, 100, 101, 102] and result["bigram_lambda"] == lam
    for split, values in expected.items():
        got = result["splits"][split]
        assert got["tokens"] == values["tokens"]
        assert got["unigram"] == pytest.approx(values["unigram"], rel=1e-12)
        assert got["bigram"] == pytest.approx(values["bigram"], rel=1e-12)
    # shards that record nothing: <s>, <pad>, </s>, <unk> at 0-3
    assert compute_baselines(_write(tmp_path / "old"))["never_mask_ids"] == [0, 1, 2, 3]


def test_baselines_cache_is_used_when_valid_and_recomputed_when_special_ids_change(tmp_path):
    """A valid baselines.json of BERT-layout shards is read as it is; a cache counted before the
    manifest recorded its special ids (same split bytes, so the same sha256) is recomputed."""
    shards = _write(tmp_path / "s", BERT_ROWS, 110, 0, BERT)
    load_baselines(shards)
    cached = json.loads((shards / CACHE).read_text())
    cached["splits"]["validation"]["unigram"] = 123.0
    (shards / CACHE).write_text(json.dumps(cached))
    assert load_baselines(shards)["splits"]["validation"]["unigram"] == 123.0

    other = _write(tmp_path / "o", BERT_ROWS, 110, 0)  # no special ids recorded: 0-3 left out
    assert load_baselines(other)["never_mask_ids"] == [0, 1, 2, 3]
    before = read_manifest(other)["splits"]
    _write(other, BERT_ROWS, 110, 0, BERT)  # the same arrays, now with their special ids
    assert read_manifest(other)["splits"] == before
    _, expected, _ = _hand_baselines(BERT_ROWS, {0, 100, 101, 102}, 0, 110)
    again = load_baselines(other)
    assert again["never_mask_ids"] == [0, 100, 101, 102]
    assert again["splits"]["validation"]["unigram"] == pytest.approx(
        expected["validation"]["unigram"], rel=1e-12)
    assert json.loads((other / CACHE).read_text())["never_mask_ids"] == [0, 100, 101, 102]


REFERENCE = {"split": "validation", "unigram": 100.0, "bigram": 60.0}


def test_learned_verdict_states_the_ratio_and_the_side_of_the_bigram():
    """The learned line: perplexity / unigram, and below or above the bigram perplexity."""
    assert learned.verdict(70.0, REFERENCE) == (
        "learned: validation perplexity 70.0 is 0.70 x the unigram perplexity 100.0 and above "
        "the bigram one 60.0")
    assert learned.verdict(50.0, REFERENCE) == (
        "learned: validation perplexity 50.0 is 0.50 x the unigram perplexity 100.0 and below "
        "the bigram one 60.0")
    # between the bigram and the plateau line: still within 10% of unigram, not "not below"
    assert " is within 10% of the unigram" in learned.verdict(92.0, REFERENCE)
    assert learned.learned(89.9, REFERENCE) is True and learned.learned(90.1, REFERENCE) is False


def test_a_non_finite_perplexity_has_not_learned_and_no_reference_says_nothing():
    for bad in (float("nan"), float("inf"), None):
        assert learned.learned(bad, REFERENCE) is False
        assert learned.learned(bad, None) is None
    assert learned.learned(50.0, None) is None


def test_summary_records_whether_the_best_validation_perplexity_learned():
    """record_outcome judges the best checkpoint's validation perplexity (not its test one) and
    writes reference and verdict into the run's PretrainSummary."""
    from minilm_jax.train.records import PretrainSummary

    record = PretrainSummary(status="completed", step=10, point="p", model={}, params={},
                             flops_per_sequence={}, shards={})
    record.best = {"step": 10, "validation_perplexity": 50.0, "test_perplexity": 95.0}
    line = learned.record_outcome(record, REFERENCE)
    assert record.learned is True and record.reference == REFERENCE
    assert line.startswith("learned: validation perplexity 50.0 is 0.50 x")
    record.best = {"step": 10, "validation_perplexity": 95.0, "test_perplexity": 50.0}
    line = learned.record_outcome(record, REFERENCE)
    assert record.learned is False and line.startswith("warning: validation perplexity 95.0")
    saved = record.to_json()
    assert saved["learned"] is False and saved["reference"] == REFERENCE


def test_perplexity_evaluator_defaults_to_test_and_refuses_what_it_cannot_score(tmp_path):
    """An entry without a split scores test; a split the shard set lacks and negative counts are
    refused up front (check) with what the shard set has."""
    from minilm_jax.evals.perplexity import PerplexityEvaluator

    shards = _write(tmp_path / "s")
    assert PerplexityEvaluator.from_config("p", {}).split == "test"
    entry = PerplexityEvaluator.from_config("p", {"split": "dev", "shards": str(shards)})
    with pytest.raises(UserError, match=r"evals\.p\.split='dev': .* has test, train, validation"):
        entry.check()
    PerplexityEvaluator.from_config("p", {"split": "validation", "shards": str(shards)}).check()
    for field in ("max_sequences", "batch_size"):
        with pytest.raises(UserError, match=rf"evals\.p\.{field}=-1: must be >= 0"):
            PerplexityEvaluator.from_config("p", {field: -1})


@pytest.fixture(scope="module")
def fresh_model(tmp_path_factory):
    """A freshly initialised one-layer model on the module's shards, with its run's flattened
    config as pre-training writes it to config.json (run_identity: the shards' tokenizer
    recorded under data.tokenizer_sha256_seen)."""
    from flax import nnx

    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.evals.scoring import ScoringModel
    from minilm_jax.model.models import MaskedLM
    from minilm_jax.settings.model_fields import model_from_config
    from minilm_jax.train.pretrainer import run_identity

    shards = _write(tmp_path_factory.mktemp("ppl") / "s")
    config = get_config("E16-H16-I32-L1-A2-V16")
    config.model.max_len, config.data.shards = 8, str(shards)
    config.mlm.mask_prob, config.mlm.max_predictions = 0.4, 0  # cap derived: 8-token rows
    config.eval.batch_size, config.eval.seed, config.seed = 8, 7, 0  # 8 devices
    flat = run_identity(config, read_manifest(shards))
    model_cfg = model_from_config(config)
    graphdef, params, rest = nnx.split(MaskedLM(model_cfg, rngs=nnx.Rngs(params=0)), nnx.Param, ...)
    info = {"workdir": "w", "point": model_cfg.point, "step": 0, "init": "random",
            "validation_perplexity": None}
    return ScoringModel(None, None, info, (graphdef, params, rest), flat), shards


def test_perplexity_refuses_shards_of_another_tokenizer(fresh_model, tmp_path):
    """The model's config.json records its shards' tokenizer: shards of another are refused."""
    from minilm_jax.evals.perplexity import PerplexityEvaluator

    model, _ = fresh_model
    other = tmp_path / "o"
    write_shards(other, {k: np.asarray(v, np.int32) for k, v in ROWS.items()}, pad_id=PAD,
                 tokenizer=TokenizerInfo("f" * 64, VOCAB))
    with pytest.raises(UserError, match="made with another tokenizer"):
        PerplexityEvaluator("p", split="test", shards=str(other)).rows(model)


def test_perplexity_row_uses_the_runs_evaluation_seed_and_the_asked_sequences(fresh_model):
    """A row equals the engine's own evaluation (ShardPerplexity) of the asked split on masks of
    the run's eval.seed (7, not its training seed 0), over the first max_sequences (3 of 5)
    rows only."""
    import ml_collections

    from minilm_jax.data.shards import open_split
    from minilm_jax.evals.perplexity import PerplexityEvaluator
    from minilm_jax.train.evaluation import ShardPerplexity
    from minilm_jax.train.masking import MaskingConfig
    from minilm_jax.train.mesh import make_mesh
    from minilm_jax.train.program import eval_program

    model, shards = fresh_model
    flat = model.run_config
    assert flat["eval.seed"] == 7 and flat["seed"] == 0
    [row] = PerplexityEvaluator("p", split="train", max_sequences=3).rows(model)
    assert row["split"] == "train" and row["shards"] == str(shards) and row["sequences"] == 3
    graphdef, params, rest = model.state
    mlm = ml_collections.ConfigDict({k[4:]: v for k, v in flat.items() if k.startswith("mlm.")})
    masking = MaskingConfig.from_config(mlm, int(flat["model.vocab_size"]))
    eval_step, shardings = eval_program(graphdef, masking, 7, make_mesh())
    config = ml_collections.ConfigDict({"batch_size": 8, "max_sequences": 3, "seed": 7})
    train = open_split(shards, "train")
    expected = ShardPerplexity(train, config, PAD, eval_step, shardings)(0, graphdef, params, rest)
    assert expected["predictions"] > 0 and expected["loss"] > 0
    assert row["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert row["predictions"] == expected["predictions"]


def test_a_random_twin_says_step_0_and_no_validation_perplexity(tmp_path):
    """run_info of a run's checkpoint and of its random twin: the twin is at step 0, "random",
    without the checkpoint's validation perplexity; both carry arch and accepted code changes."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.evals.scoring import provenance
    from minilm_jax.evals.scoring_models import run_info
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.settings.model_fields import model_from_config
    from minilm_jax.storage import run_path

    model_cfg = model_from_config(get_config("E16-H16-I32-L1-A2-V16"))
    run = PretrainedRun(workdir=run_path(tmp_path), model=model_cfg, tokenizer_path="",
                        tokenizer_sha256="", step=30, checkpoint_dir=run_path(tmp_path),
                        validation_perplexity=42.0, code_changes=["encoder.py"])
    trained, twin = run_info(tmp_path, run, True), run_info(tmp_path, run, False)
    assert (trained["step"], trained["init"], trained["validation_perplexity"]) == (
        30, "pretrained", 42.0)
    assert (twin["step"], twin["init"], twin["validation_perplexity"]) == (0, "random", None)
    for info in (trained, twin):
        assert info["point"] == model_cfg.point
        assert provenance(info) == {"arch": model_cfg.arch, "code_changes": ["encoder.py"]}
