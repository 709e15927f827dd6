"""Audit of the zero-shot evaluation suites and their scoring (minilm_jax/evals/: suites,
scoring, minimal_pairs, pair_tables, in_training, common, scoring_models, __main__), 2026-11-29:
45 mutants planted, 21 survived the owning tests; each is caught here.

Every number is checked against an independent computation on tiny inputs: a word-level
stand-in tokenizer (a word ending in ``s`` is two pieces) and a stand-in masked LM whose
log-probability of each (row, position, target) is a sha256 hash of the unpadded row, so a score
is recomputed here sentence by sentence, masked copy by masked copy, unbatched; accuracies,
Wilson intervals and paired t intervals are recomputed from hand counts and closed formulas."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from minilm_jax.errors import UserError
from minilm_jax.evals import minimal_pairs as mp
from minilm_jax.evals.scoring import EncodedSentence, ScoringModel, score_sentences
from minilm_jax.evals.suites import MinimalPair, Paradigm

PAD, UNK, BOS, EOS, MASK = 0, 1, 2, 3, 4
WORDS = ["she", "he", "run", "dog", "cat", "the", "a", "is", "are", "here", ".", "##s"]


class WordTokenizer:
    """Word-level stand-in: a known word is one id; ``<known>s`` is two (the word, ``##s``);
    anything else (``!``, ``zebra``) is ``<unk>``; the text is lower-cased first."""

    pad_id, unk_id, bos_id, eos_id, mask_id = PAD, UNK, BOS, EOS, MASK

    def __init__(self) -> None:
        self.vocab = {w: i + 5 for i, w in enumerate(WORDS)}

    def _pieces(self, word: str) -> list[int]:
        if word in self.vocab:
            return [self.vocab[word]]
        if word.endswith("s") and word[:-1] in self.vocab:
            return [self.vocab[word[:-1]], self.vocab["##s"]]
        return [UNK]

    def encode_words(self, text: str) -> tuple[list[int], list[bool]]:
        ids, starts = [], []
        for word in text.lower().split():
            pieces = self._pieces(word)
            ids += pieces
            starts += [True] + [False] * (len(pieces) - 1)
        return ids, starts

    def unknown_chars(self, texts: Sequence[str]) -> list[str]:
        chars = sorted({c for t in texts for c in t if not c.isspace()})
        return [c for c in chars if UNK in self.encode_words(c)[0]]


def unit(*parts: object) -> float:
    """A deterministic number in (0.01, 5.01) from a sha256 of ``parts``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return 0.01 + 5.0 * int.from_bytes(digest[:4], "big") / 2**32


def logp(row: Sequence[int], position: int, target: int, salt: int = 0) -> float:
    """The stand-in model's log p(target at position | row), row without padding."""
    return -unit(tuple(int(t) for t in row), int(position), int(target), salt)


def stand_in_fn(salt: int = 0, shapes: list | None = None, nan_row: tuple | None = None
                ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """TargetLogProbs of the stand-in model (padding-invariant); records batch shapes; a row
    equal to ``nan_row`` (unpadded) gets NaN."""
    def fn(tokens: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if shapes is not None:
            shapes.append(tokens.shape)
        out = np.zeros(positions.shape, np.float64)
        for r in range(tokens.shape[0]):
            row = tuple(int(t) for t in tokens[r] if t != PAD)
            for j in range(positions.shape[1]):
                out[r, j] = (np.nan if row == nan_row else
                             logp(row, positions[r, j], targets[r, j], salt))
        return out
    return fn


def naive(ids: Sequence[int], starts: Sequence[bool], rule: str, salt: int = 0) -> float:
    """One sentence's score, one masked copy at a time, unpadded (the rules of scoring.py)."""
    full = [BOS, *ids, EOS]
    n = len(ids)
    if rule == "holistic":
        return float(np.mean([logp(full, i + 1, ids[i], salt) for i in range(n)]))
    total = 0.0
    for i in range(n):
        masked = [i]
        while rule == "pll_word_l2r" and masked[-1] + 1 < n and not starts[masked[-1] + 1]:
            masked.append(masked[-1] + 1)
        copy = list(full)
        for m in masked:
            copy[m + 1] = MASK
        total += logp(copy, i + 1, ids[i], salt)
    return total


TOK = WordTokenizer()


def enc(text: str) -> EncodedSentence:
    ids, starts = TOK.encode_words(text)
    return EncodedSentence(tuple(ids), tuple(starts))


def margin(good: str, bad: str, rule: str = "pll", salt: int = 0) -> float:
    g, b = enc(good), enc(bad)
    return naive(g.ids, g.word_starts, rule, salt) - naive(b.ids, b.word_starts, rule, salt)


# --- scoring ------------------------------------------------------------------------------------


def test_scores_equal_a_naive_loop_for_every_batch_size_and_stay_within_max_len():
    """Every rule, sentences of 1 to 6 ids (three length buckets), batches of 1, 3, 5 and 256
    rows: each score equals the one-copy-at-a-time sum (no pair dropped or counted twice at a
    batch boundary); with ``max_len`` no batch is wider than it."""
    texts = ["she", "dogs run", "the cats are here .", "he runs", "a dog is here",
             "the dogs are cats here .", "cats", "she is here ."]
    sentences = [enc(t) for t in texts]
    for rule in ("pll", "pll_word_l2r", "holistic"):
        expected = [naive(s.ids, s.word_starts, rule) for s in sentences]
        for batch_rows in (1, 3, 5, 256):
            got = score_sentences(sentences, rule, stand_in_fn(), TOK, batch_rows)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=rule)
    shapes: list = []
    short = [enc("she"), enc("dogs run"), enc("he runs")]  # 3 ids + 2 specials = 5 <= 6
    got = score_sentences(short, "pll", stand_in_fn(shapes=shapes), TOK, 4, max_len=6)
    assert max(width for _, width in shapes) == 6  # bucket 8, capped at the model's 6
    np.testing.assert_allclose(got, [naive(s.ids, s.word_starts, "pll") for s in short],
                               rtol=1e-12)


def test_one_sentence_with_non_finite_scores_refuses_the_lot():
    sentences = [enc("she"), enc("he runs"), enc("a dog")]
    nan_row = (BOS, MASK, EOS)  # "she" masked: its only copy
    with pytest.raises(UserError, match="not finite for 1 of 3 sentences"):
        score_sentences(sentences, "pll", stand_in_fn(nan_row=nan_row), TOK, 4)


# --- paradigms ----------------------------------------------------------------------------------


def score(pairs: Sequence[tuple[str, str]], **kwargs) -> mp.ParadigmResult:
    paradigm = Paradigm("custom", "p", "agr", tuple(MinimalPair(g, b) for g, b in pairs))
    (result,) = mp.score_paradigms([paradigm], TOK, stand_in_fn(), "pll", **kwargs)
    return result


def test_accuracy_is_over_scored_pairs_and_skips_are_counted_by_reason():
    """Pairs: two scored (margins recomputed here), one with <unk>, one with an empty sentence
    (an <unk> skip too), one over the word list (words compared lower-cased), one too long."""
    pairs = [("She runs .", "She run ."), ("the dog is here", "the dogs is here"),
             ("a zebra", "a dog"), ("", "he"), ("he is here", "he are here"),
             ("the dogs are here .", "the dogs is here .")]
    words = ["She", "RUNS", "run", "The", "DOG", "dogs", "is", "here", "he", "a", "are"]  # cased
    result = score(pairs, word_list=words, max_len=7)
    expected = [margin(*pairs[0]), margin(*pairs[1]), margin(*pairs[4])]
    assert (result.pairs, result.scored, result.skipped_unk, result.skipped_vocab,
            result.skipped_long) == (6, 3, 1, 1, 1)  # "zebra" is out of the list, not <unk>
    kept = [0, 1, 4]
    np.testing.assert_allclose(result.margins[kept], expected, rtol=1e-12)
    assert np.isnan(result.margins[[2, 3, 5]]).all()
    right = sum(m > 0 for m in expected)
    assert result.correct == right and result.accuracy == pytest.approx(100.0 * right / 3)
    no_list = score(pairs, max_len=7)
    assert (no_list.skipped_unk, no_list.skipped_vocab) == (2, 0)  # "zebra" is <unk>, "" too
    assert no_list.row()["accuracy"] == pytest.approx(100.0 * no_list.correct / 3)


def test_drop_unknown_chars_cleans_both_sentences_of_a_pair():
    """"!" is <unk>: removed from the good and the bad sentence alike, the pair then scored as
    the cleaned pair."""
    pairs = [("she runs !", "she run !"), ("he is here !", "he are here")]
    result = score(pairs, drop_unknown_chars=True)
    assert (result.scored, result.skipped_unk) == (2, 0)
    np.testing.assert_allclose(result.margins, [margin("she runs", "she run"),
                                                margin("he is here", "he are here")], rtol=1e-12)
    assert score(pairs).skipped_unk == 2


def test_ties_are_counted_wrong_and_only_exact_ties_are_ties():
    pairs = [("she runs", "she run"), ("he is here", "he are here"), ("a dog", "a dog"),
             ("the cats", "the cat"), ("dogs run", "dog runs")]
    result = score(pairs)
    m = [margin(g, b) for g, b in pairs]
    assert m[2] == 0.0 and any(x < 0 for x in m) and any(x > 0 for x in m)
    assert result.ties == 1 and result.correct == sum(x > 0 for x in m)
    assert result.outcomes == "".join("1" if x > 0 else "0" for x in m)


# --- summaries and paired comparisons -----------------------------------------------------------


def wilson_pct(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def prow(phenomenon: str, outcomes: str, init: str = "pretrained", run: str | None = None,
         step: int = 5) -> dict:
    """A paradigm row from its outcomes (1 right, 0 wrong, - skipped)."""
    scored = len(outcomes.replace("-", ""))
    out = {"kind": "minimal_pairs", "suite": "custom", "rule": "pll", "init": init,
           "step": step, "paradigm": phenomenon, "phenomenon": phenomenon,
           "pairs": len(outcomes), "scored": scored, "correct": outcomes.count("1"), "ties": 0,
           "skipped_unk": outcomes.count("-"), "skipped_vocab": 0, "skipped_long": 0,
           "outcomes": outcomes}
    return out if run is None else {**out, "run": run}


def test_paired_comparison_keys_runs_apart_and_no_discordance_means_p_1():
    """Two runs' rows of the same paradigm are two paradigms (matched by run); identical
    outcomes: difference 0, p = 1 (no discordant pair)."""
    a = [prow("x", "1100", run="r1"), prow("x", "10-1", run="r2")]
    b = [prow("x", "0101", run="r1"), prow("x", "0011", run="r2")]
    c = mp.compare_paired(a, b)
    # r1: 1/0, 1/1, 0/0, 0/1; r2: 1/0, 0/0, skipped, 1/1 -> a_only 2, b_only 1, n 7
    assert (c.n, c.a_only, c.b_only) == (7, 2, 1)
    assert c.difference == pytest.approx(100 / 7)
    assert c.p_value == pytest.approx(stats.binomtest(2, 3).pvalue)
    same = mp.compare_paired(a, a)
    assert (same.difference, same.a_only, same.b_only, same.p_value) == (0.0, 0, 0, 1.0)


def test_cells_print_pooled_wilson_macro_and_the_pretrained_minus_random_difference():
    from minilm_jax.evals.pair_tables import accuracy_cell, model_table

    rows = [prow("a", "1111111000"), prow("b", "1000")]
    low, high = wilson_pct(8, 14)
    assert accuracy_cell(rows) == (f"{100 * 8 / 14:.1f} [{low:.1f}, {high:.1f}] "
                                   f"(macro {(70 + 25) / 2:.1f})")
    assert low < 100 * 8 / 14 < high
    pre = [prow("a", "11"), prow("b", "1011")]
    twin = [prow("a", "10", "random", step=0), prow("b", "1111", "random", step=0)]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[7:10]]
             for line in model_table(pre, twin)[2:]}
    d = 100.0 * np.array([0, 1, 0, -1, 0, 0])  # pre minus random over the 6 pairs, a then b
    half = stats.t.ppf(0.975, 5) * np.std(d, ddof=1) / math.sqrt(6)
    lo, hi = wilson_pct(5, 6)
    assert cells["**overall**"][0].startswith(f"{500 / 6:.1f} [{lo:.1f}, {hi:.1f}]")
    assert cells["**overall**"][1] == f"{0:+.1f} [{-half:+.1f}, {half:+.1f}] (n = 6)"
    assert cells["**overall**"][2] == f"{stats.binomtest(1, 2).pvalue:.2g}"
    assert cells["a"][1].startswith("+50.0 [") and cells["b"][1].startswith("-25.0 [")


def test_report_heading_names_the_pretrained_step_not_the_twins():
    from minilm_jax.evals.pair_tables import report_lines

    rows = [prow("a", "10", step=40), prow("a", "01", "random", step=0)]
    headings = [line for line in report_lines(rows, "t") if line.startswith("## ")]
    assert headings == ["## custom, rule `pll` (step 40)"]


# --- suites -------------------------------------------------------------------------------------


def test_two_pair_files_of_one_stem_are_refused(tmp_path: Path):
    from minilm_jax.evals.suites import load_pairs

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "agr.txt").write_text("he are .\nhe is .\n")
    (tmp_path / "agr.jsonl").write_text(json.dumps({"sentence_good": "a", "sentence_bad": "b"}))
    with pytest.raises(UserError, match="two pair files name paradigm 'agr'"):
        load_pairs(tmp_path)


# --- the evaluator, in training and on the command line -----------------------------------------


def pair_file(tmp_path: Path) -> Path:
    """Three Zorro-format pairs (bad line first): one with "!", one of 5 ids."""
    path = tmp_path / "mine.txt"
    path.write_text("she run !\nshe runs !\nhe are here\nhe is here\n"
                    "the dog are cats here\nthe dog is cats here\n")
    return path


GOODS_BADS = [("she runs !", "she run !"), ("he is here", "he are here"),
              ("the dog is cats here", "the dog are cats here")]


def model(salt: int = 0, max_len: int | None = None, step: int = 9, init: str = "pretrained"
          ) -> ScoringModel:
    info = {"workdir": "w", "point": "P", "step": step, "init": init,
            "validation_perplexity": None}
    return ScoringModel(TOK, stand_in_fn(salt), info, max_len=max_len)


def test_evaluator_entry_names_are_stripped_and_drop_unknown_chars_reaches_scoring(tmp_path):
    from minilm_jax.evals.common import MinimalPairsEvaluator

    with pytest.raises(UserError, match=r"evals\.z\.rules: \(none\)"):
        MinimalPairsEvaluator.from_config("z", {"rules": " , "})
    ev = MinimalPairsEvaluator.from_config("z", {
        "suite": str(pair_file(tmp_path)), "rules": "pll, holistic", "paradigms": " mine ,",
        "drop_unknown_chars": True})
    assert (ev.rules, ev.paradigms) == (("pll", "holistic"), ("mine",))
    rows = ev.rows(model())
    assert [(r["rule"], r["scored"], r["skipped_unk"]) for r in rows] == [
        ("pll", 3, 0), ("holistic", 3, 0)]
    cleaned = [(g.replace(" !", ""), b.replace(" !", "")) for g, b in GOODS_BADS]
    right = sum(margin(g, b) > 0 for g, b in cleaned)
    assert rows[0]["correct"] == right


def test_in_training_rows_use_the_runs_max_len_and_a_changed_entry_drops_its_old_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from minilm_jax.evals import in_training
    from minilm_jax.evals.common import MinimalPairsEvaluator

    monkeypatch.setattr(in_training, "mlm_target_logprobs", lambda g, p, r: stand_in_fn(g))
    ev = MinimalPairsEvaluator.from_config("z", {"suite": str(pair_file(tmp_path)),
                                                  "rules": "pll"})
    sha = hashlib.sha256(json.dumps(dataclasses.asdict(ev), sort_keys=True, default=list)
                         .encode()).hexdigest()[:12]
    work = tmp_path / "run"
    work.mkdir()
    old = [{"evaluation": "z", "entry_sha": "0" * 12, "step": 2, "kind": "minimal_pairs"},
           {"evaluation": "z", "entry_sha": sha, "step": 2, "kind": "minimal_pairs"},
           {"evaluation": "other", "entry_sha": "1" * 12, "step": 2, "kind": "perplexity"}]
    (work / in_training.ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in old))
    step_eval = in_training.StepEvaluation(ev, TOK, work, "P", {"model.max_len": 6})
    assert step_eval.entry_sha == sha
    assert in_training.read_zero_shot(work) == old[1:]
    scalars = step_eval(4, 3, None, None, 2.5)  # salt 3: the "graphdef" handed to the stand-in
    (row,) = [r for r in in_training.read_zero_shot(work) if r["step"] == 4]
    assert (row["scored"], row["skipped_long"], row["skipped_unk"]) == (1, 1, 1)  # 5 ids > 6-2
    right = int(margin(*GOODS_BADS[1], salt=3) > 0)
    assert (row["correct"], row["entry_sha"], row["validation_perplexity"]) == (right, sha, 2.5)
    assert scalars == {"z/pll": 100.0 * right}


def test_command_scores_the_asked_checkpoint_and_the_twin_of_the_asked_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from minilm_jax.evals import scoring_models
    from minilm_jax.evals.__main__ import main

    calls = []

    def fake(location, which="best", random_seed=None):
        calls.append((str(location), which, random_seed))
        if random_seed is None:
            return model(salt=0, step=30)
        return model(salt=100 + random_seed, step=0, init="random")

    monkeypatch.setattr(scoring_models, "scoring_model", fake)
    work, out = tmp_path / "w", tmp_path / "out"
    work.mkdir()
    assert main(["--workdir", str(work), "--which", "step:30", "--suite",
                 str(pair_file(tmp_path)), "--rules", "pll", "--random_seed", "5",
                 "--out", str(out)]) == 0
    assert calls == [(str(work), "step:30", None), (str(work), "step:30", 5)]
    rows = [json.loads(line) for line in (out / "minimal_pairs.jsonl").read_text().splitlines()]
    for r, salt in zip(rows, (0, 105)):
        scored = [margin(g, b, salt=salt) for g, b in GOODS_BADS[1:]]
        assert (r["scored"], r["correct"]) == (2, sum(m > 0 for m in scored)), salt
    title = (out / "minimal_pairs.md").read_text().splitlines()[0]
    assert title == f"# Minimal pairs: mine, P at step 30 ({work})"


def test_scoring_model_hands_which_and_seed_to_the_checkpoint(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    from minilm_jax.evals import scoring_models

    (tmp_path / "config.json").write_text("{}")
    seen = []
    monkeypatch.setattr(scoring_models, "checkpoint_model",
                        lambda w, which, seed: seen.append((which, seed)) or "m")
    assert scoring_models.scoring_model(tmp_path, "step:4", 2) == "m"
    assert seen == [("step:4", 2)]
