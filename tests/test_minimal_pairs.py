"""Minimal-pair scoring: the three rules against naive per-sentence loops, batching that never
changes a score, pairs skipped and counted (never dropped), paired comparison, and the command on
a pre-trained checkpoint with Zorro."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance, shared_path
from minilm_jax.errors import UserError
from minilm_jax.evals.minimal_pairs import (ParadigmResult, compare_paired, score_paradigms,
                                            summarize, wilson)
from minilm_jax.evals.scoring import (EncodedSentence, encode_sentence, masked_rows,
                                      mlm_target_logprobs, score_sentences)
from minilm_jax.evals.suites import MinimalPair, Paradigm
from minilm_jax.model.models import MaskedLM
from minilm_jax.model.sizes import resolve_point

SENTENCES = ["the dog chased a ball", "a ball chased the dog",
             "unbelievably the grandmothers reorganised everything",
             "she is happy", "is she happy", "the children were playing outside"]


@pytest.fixture(scope="module")
def scorer():
    """A SentencePiece tokenizer small enough to split long words into several pieces, and a
    random-init masked LM with sharpened logits (so scores differ clearly)."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer
    import tempfile
    from pathlib import Path

    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12][:3000]
    path = Path(tempfile.mkdtemp()) / "tok.model"
    path.write_bytes(train_sentencepiece(lines, 400, "bpe"))
    tokenizer = load_tokenizer(path)
    cfg = resolve_point("E24-H32-I64-L2-A4-V410", max_len=64)
    model = MaskedLM(cfg, rngs=nnx.Rngs(params=3))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda x: x * 4.0, params)  # sharper than a fresh init
    return tokenizer, graphdef, params, rest


@functools.lru_cache(maxsize=4)
def _all_logits_program(graphdef):
    """The model's every-position logits, jitted (one program per sentence length; op-by-op
    execution compiled each operation anew for every length, most of this file's CPU time)."""
    return jax.jit(lambda params, rest, tokens:
                   nnx.merge(graphdef, params, rest).all_logits(tokens))


def all_logits(scorer, tokens_bt) -> jax.Array:
    _, graphdef, params, rest = scorer
    return _all_logits_program(graphdef)(params, rest, jnp.asarray(tokens_bt))


def naive_logprob(scorer, ids_t: list[int], masked: tuple[int, ...], position: int) -> float:
    """log p(original token at ``position``) with ``masked`` positions replaced by <mask>, one
    sentence at a time, unpadded, through the model's every-position logits."""
    tokenizer = scorer[0]
    tokens = np.asarray(ids_t, np.int32)
    target = int(tokens[position])
    tokens[list(masked)] = tokenizer.mask_id
    logits = all_logits(scorer, tokens[None])[0, position]
    return float(jax.nn.log_softmax(logits.astype(jnp.float32))[target])


def full(tokenizer, sentence: EncodedSentence) -> list[int]:
    return [tokenizer.bos_id, *sentence.ids, tokenizer.eos_id]


def pll_tolerance(scorer, encoded: list[EncodedSentence]) -> float:
    """float32_tolerance for a sum of per-position log-probabilities: each adds the vocabulary's
    logsumexp and each layer's widest reductions; a sentence sums up to its length of them."""
    tokenizer = scorer[0]
    rows = [full(tokenizer, e) for e in encoded]  # one padded batch: one compilation
    batch = np.full((len(rows), max(map(len, rows))), tokenizer.pad_id, np.int32)
    for i, row in enumerate(rows):
        batch[i, :len(row)] = row
    logits = np.asarray(all_logits(scorer, batch))
    scale = float(np.max(np.abs(logits[batch != tokenizer.pad_id])))
    longest = max(len(e.ids) for e in encoded)
    return float32_tolerance(scale, (410 + 2 * (32 + 64)) * longest)


def test_pll_equals_a_naive_masking_loop_whatever_the_batch(scorer):
    tokenizer, graphdef, params, rest = scorer
    fn = mlm_target_logprobs(graphdef, params, rest)
    encoded = [encode_sentence(tokenizer, s) for s in SENTENCES]
    naive = [sum(naive_logprob(scorer, full(tokenizer, e), (i + 1,), i + 1)
                 for i in range(len(e.ids))) for e in encoded]
    # 4 rows: every sentence alone in a batch of its own rows (a length bucket split over several
    # batches); 256: each bucket's sentences (2, 3 and 1 here) together in one padded batch. (16,
    # a mix of both, compiled two more programs for no path these two leave out.)
    for batch_rows in (4, 256):
        got = score_sentences(encoded, "pll", fn, tokenizer, batch_rows)
        np.testing.assert_allclose(got, naive, rtol=0, atol=pll_tolerance(scorer, encoded))


def test_pll_word_l2r_masks_the_rest_of_the_word(scorer):
    tokenizer, graphdef, params, rest = scorer
    e = EncodedSentence((10, 11, 12, 13, 14), (True, False, False, True, False))
    assert masked_rows(e, "pll_word_l2r") == [(0, 1, 2), (1, 2), (2,), (3, 4), (4,)]
    assert masked_rows(e, "pll") == [(0,), (1,), (2,), (3,), (4,)]
    sentence = encode_sentence(tokenizer, SENTENCES[2])
    pieces = tokenizer.pieces(SENTENCES[2])
    assert len(pieces) > len(SENTENCES[2].split())  # some word has several pieces
    assert sum(sentence.word_starts) == len(SENTENCES[2].split())
    fn = mlm_target_logprobs(graphdef, params, rest)
    naive = sum(naive_logprob(scorer, full(tokenizer, sentence), tuple(m + 1 for m in masked),
                              masked[0] + 1)
                for masked in masked_rows(sentence, "pll_word_l2r"))
    got = score_sentences([sentence], "pll_word_l2r", fn, tokenizer)[0]
    assert got == pytest.approx(naive, abs=pll_tolerance(scorer, [sentence]))
    assert got != pytest.approx(score_sentences([sentence], "pll", fn, tokenizer)[0], abs=1e-3)


def test_holistic_is_the_mean_cross_entropy_of_the_unmasked_sentence(scorer):
    tokenizer, graphdef, params, rest = scorer
    fn = mlm_target_logprobs(graphdef, params, rest)
    encoded = [encode_sentence(tokenizer, s) for s in SENTENCES]
    expected, scale = [], 0.0
    for e in encoded:
        ids = full(tokenizer, e)
        logits = all_logits(scorer, [ids])[0].astype(jnp.float32)
        scale = max(scale, float(jnp.max(jnp.abs(logits))))
        logp = jax.nn.log_softmax(logits)
        expected.append(float(np.mean([logp[i, ids[i]] for i in range(1, len(ids) - 1)])))
    # Row-chunked scoring and this full log-softmax add the same float32 terms in other orders
    # (XLA's CPU code differs by processor): the tolerance follows from the arithmetic, not from
    # the digits one machine gave (tests/conftest.py, float32_tolerance).
    terms = 410 + 2 * (32 + 64)  # the vocabulary's logsumexp, each layer's widest reductions
    np.testing.assert_allclose(score_sentences(encoded, "holistic", fn, tokenizer, 2), expected,
                               rtol=0, atol=float32_tolerance(scale, terms))


def test_a_model_with_non_finite_weights_is_refused_not_scored(scorer):
    """NaN weights give NaN log-probabilities: refused in one line, never "0% of pairs"."""
    tokenizer, graphdef, params, rest = scorer
    poisoned = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
    encoded = [encode_sentence(tokenizer, s) for s in SENTENCES]
    with pytest.raises(UserError, match=rf"not finite for {len(encoded)} of {len(encoded)} "
                                        "sentences"):
        score_sentences(encoded, "holistic", mlm_target_logprobs(graphdef, poisoned, rest),
                        tokenizer, 2)


def test_pairs_with_unknown_or_listed_out_words_are_counted_not_dropped(scorer):
    tokenizer, graphdef, params, rest = scorer
    fn = mlm_target_logprobs(graphdef, params, rest)
    pairs = (MinimalPair("she is happy", "is she happy"),
             MinimalPair("the dog chased a ball", "the dog chased a \u4e00"),  # <unk>
             MinimalPair("the children were playing", "the children was playing"))
    paradigm = Paradigm("custom", "p", "agreement", pairs)
    [result] = score_paradigms([paradigm], tokenizer, fn, "pll")
    assert (result.pairs, result.scored, result.skipped_unk, result.skipped_vocab) == (3, 2, 1, 0)
    assert np.isnan(result.margins[1]) and result.correct == int(np.sum(result.margins[[0, 2]] > 0))
    words = "she is happy the dog chased a ball".split()
    [limited] = score_paradigms([paradigm], tokenizer, fn, "pll", word_list=words)
    assert (limited.scored, limited.skipped_unk, limited.skipped_vocab) == (1, 0, 2)
    # the pair scored in another batch: a margin, two sentences' sums, within twice pll_tolerance
    tol = 2 * pll_tolerance(scorer, [encode_sentence(tokenizer, s)
                                     for s in (pairs[0].good, pairs[0].bad)])
    assert limited.margins[0] == pytest.approx(result.margins[0], rel=0, abs=tol)
    row = result.row(run="r", step=5)
    assert row["kind"] == "minimal_pairs" and row["skipped_unk"] == 1 and row["step"] == 5
    longest = max(len(encode_sentence(tokenizer, s).ids) for p in pairs for s in (p.good, p.bad)
                  if tokenizer.unk_id not in encode_sentence(tokenizer, s).ids)
    [short] = score_paradigms([paradigm], tokenizer, fn, "pll", max_len=longest + 1)
    assert short.skipped_long >= 1 and short.scored + short.skipped_long == result.scored
    assert short.row()["skipped_long"] == short.skipped_long


def test_paired_comparison_counts_discordant_pairs():
    def row(margins, paradigm="p"):
        m = np.asarray(margins, float)
        return ParadigmResult("s", paradigm, "x", "pll", len(m), int(np.sum(~np.isnan(m))), 0, 0,
                              int(np.sum(m > 0)), m).row()

    a = row([1, 1, 1, 1, 1, 1, 1, 1, -1, np.nan])
    b = row([-1, -1, -1, -1, -1, -1, 1, 1, 1, 1])
    assert a["outcomes"] == "111111110-" and b["outcomes"] == "0000001111"
    c = compare_paired([a], [b])
    assert (c.n, c.a_only, c.b_only) == (9, 6, 1)
    assert c.difference == pytest.approx(100 * 5 / 9)
    assert c.p_value == pytest.approx(0.125)  # exact two-sided binomial, 1 of 7
    assert c.low < c.difference < c.high
    with pytest.raises(ValueError, match="different paradigms"):
        compare_paired([a], [row([1, -1], paradigm="q")])
    with pytest.raises(ValueError, match="repeat a paradigm"):
        compare_paired([a, a], [b, row([1, -1], paradigm="q")])
    with pytest.raises(ValueError, match="different pairs"):
        compare_paired([a], [row([1, -1])])
    s = summarize([a, b])
    assert (s.scored, s.correct, s.paradigms) == (19, 12, 2)
    assert s.macro == pytest.approx((100 * 8 / 9 + 40) / 2)
    assert wilson(0, 0) != wilson(0, 0)  # NaN: nothing scored
    low, high = wilson(50, 100)
    assert low < 50 < high and high - low == pytest.approx(19.2, abs=0.3)


def test_ties_are_counted_and_reported_and_count_as_wrong(scorer, tmp_path):
    """Fails on the old code: a pair whose sentences are identical (or encode identically)
    counted as a silent wrong answer, with no count anywhere."""
    from minilm_jax.evals.pair_tables import report_lines

    tokenizer, graphdef, params, rest = scorer
    fn = mlm_target_logprobs(graphdef, params, rest)
    same, spaced = "she is happy", "she  is  happy"  # SentencePiece collapses the spaces
    assert encode_sentence(tokenizer, same) == encode_sentence(tokenizer, spaced)
    pairs = (MinimalPair(same, same), MinimalPair(same, spaced),
             MinimalPair("the children were playing", "the children was playing"),
             MinimalPair("the dog chased a ball", "a ball chased the dog"))
    [result] = score_paradigms([Paradigm("custom", "p", "agreement", pairs)], tokenizer, fn, "pll")
    assert result.margins[0] == 0.0 and result.margins[1] == 0.0  # exact: one score per encoding
    assert (result.scored, result.ties) == (4, 2)
    others = int(np.sum(result.margins[2:] > 0))
    assert result.correct == others  # a tie is wrong (strict >), as BLiMP and Zorro count
    assert result.accuracy == pytest.approx(100.0 * others / 4)
    assert result.outcomes[:2] == "00"
    row = result.row(init="pretrained", step=1, point="x")
    assert row["ties"] == 2 and summarize([row, row]).ties == 4
    text = "\n".join(report_lines([row], "t"))
    assert "| ties |" in text
    assert "2 pairs tied" in text and "counted as wrong" in text


def _row(name: str, margins: list[float], phenomenon: str = "agreement") -> dict:
    m = np.asarray(margins, float)
    kept = ~np.isnan(m)
    return ParadigmResult("custom", name, phenomenon, "pll", len(m), int(kept.sum()),
                          int((~kept).sum()), 0, int(np.sum(m[kept] > 0)), m
                          ).row(init="pretrained", step=3, point="x")


def test_outputs_are_strict_json_and_count_only_paradigms_with_scored_pairs(tmp_path):
    """Fails on the old code: a bare NaN in minimal_pairs.jsonl for a paradigm with no scored
    pair, and an overall row counting that paradigm among those scored."""
    from minilm_jax.evals.pair_tables import model_table, write_outputs

    rows = [_row("a", [1.0, -1.0]), _row("b", [np.nan, np.nan]),
            _row("c", [2.0, 0.5], phenomenon="island")]
    md = write_outputs(tmp_path, rows, "t")

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    lines = (tmp_path / "minimal_pairs.jsonl").read_text().splitlines()
    back = [json.loads(line, parse_constant=refuse) for line in lines]
    empty = back[1]
    assert empty["scored"] == 0 and empty["accuracy"] is None
    assert empty["accuracy_low"] is None and empty["accuracy_high"] is None
    assert back[0]["accuracy"] == 50.0
    s = summarize(rows)
    assert (s.paradigms, s.empty, s.scored, s.correct) == (2, 1, 4, 3)
    overall = next(line for line in model_table(rows) if "**overall**" in line)
    assert overall.split("|")[2].strip() == "2 (1 with no scored pair)"
    agreement = next(line for line in model_table(rows) if line.startswith("| agreement "))
    assert agreement.split("|")[2].strip() == "1 (1 with no scored pair)"
    assert "| island | 1 |" in md.read_text()


ZORRO_PARADIGMS = ["agreement_subject_verb-in_simple_question", "island-effects-adjunct_island"]


def test_command_scores_zorro_on_a_checkpoint_and_its_random_twin(pretrained, tmp_path):
    from minilm_jax.evals.__main__ import main

    out = tmp_path / "zorro"
    names = ZORRO_PARADIGMS
    # A Zorro folder of the first 200 pairs of each file (a third file not asked for): the same
    # reading, selection and scoring as the full 2,000, at a tenth of the CPU time.
    zorro = tmp_path / "babyberta"
    zorro.mkdir()
    for name in [*names, "irregular-verb"]:
        lines = shared_path("zorro", "sentences", "babyberta", f"{name}.txt").read_text()
        (zorro / f"{name}.txt").write_text("\n".join(lines.splitlines()[:400]) + "\n")
    assert main(["--workdir", str(pretrained["pre"]), "--which", "latest",
                 "--suite", str(zorro), "--paradigms", ",".join(names),
                 "--rules", "holistic,pll_word_l2r", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "minimal_pairs.jsonl").read_text().splitlines()]
    assert {(r["init"], r["rule"], r["paradigm"]) for r in rows} == {
        (i, r, p) for i in ("pretrained", "random") for r in ("holistic", "pll_word_l2r")
        for p in names}
    assert all(r["pairs"] == 200 == r["scored"] + r["skipped_unk"] for r in rows)
    assert all(r["scored"] > 0 for r in rows)
    assert all(r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"] for r in rows)
    text = (out / "minimal_pairs.md").read_text()
    assert "Chance: 50%" in text and "McNemar" in text and "**overall**" in text


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    """A checkpoint to score: two pre-training steps of a tiny model on WikiText-2, with a BPE
    tokenizer that also saw ZORRO_PARADIGMS' sentences (so their "?" encodes). What it learned is
    not under test, and the command reads any run's latest checkpoint the same way:
    test_finetune's 30-step run on a 1,000-piece tokenizer cost this file a third of its time."""
    from conftest import write_line_shards
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    root = tmp_path_factory.mktemp("pre")
    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12]
    zorro = [line for name in ZORRO_PARADIGMS for line in shared_path(
        "zorro", "sentences", "babyberta", f"{name}.txt").read_text().splitlines()]
    (root / "tok.model").write_bytes(train_sentencepiece(lines + zorro, 400, "bpe"))
    write_line_shards(root / "shards", load_tokenizer(root / "tok.model"), lines, 64)
    config = pretrain_config("E32-H32-I64-L1-A2-V410")
    config.model.max_len = 64
    config.data.shards = str(root / "shards")
    config.train.num_steps = 2
    config.train.batch_size = 8
    config.train.progress = False
    config.train.peak_flops = 1e12  # no matmul benchmark for the MFU denominator
    config.eval.every_steps = 2
    config.eval.batch_size = 32
    config.eval.max_sequences = 32
    config.checkpoint.every_steps = 2
    # one device, not the 8 fake ones: a program for one compiles faster, and a checkpoint of
    # unsharded arrays is written without slicing every array op by op
    config.mesh.data = 1
    Pretrainer(config, root / "pre").run()
    return {"root": root, "pre": root / "pre"}
