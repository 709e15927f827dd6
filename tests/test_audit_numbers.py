"""The numbers the studies report, each against a value worked out by hand (or by scipy) on a tiny
input: macro F1, committee spread and members, count baselines, BERT replacement tokens, the
majority baseline, power-law fits and the frontier's bins, statistics over
pre-training seeds, study B's committee reference, minimal-pair summaries and the masked-LM
evaluation loss."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from minilm_jax import committee as committee_cli
from minilm_jax.analysis import study_b
from minilm_jax.analysis.fits import compare_fits, fit_power_law, fit_two_segments
from minilm_jax.analysis.frontier import bin_index, compute_frontier
from minilm_jax.analysis.seeds import seed_gaps, seed_spreads
from minilm_jax.data.baselines import compute_baselines
from minilm_jax.data.shards import TokenizerInfo, write_shards
from minilm_jax.evals.minimal_pairs import compare_paired, summarize
from minilm_jax.finetune.model_selection import majority_baseline
from minilm_jax.tasks.committee_math import accuracy_vs_k
from minilm_jax.tasks.metrics import macro_f1
from minilm_jax.train.evaluation import eval_result
from minilm_jax.train.masking import MaskingConfig, mask_tokens


def test_macro_f1_averages_over_classes_of_labels_and_predictions():
    """A class only predicted (never a label) still counts, with F1 0."""
    # class 0: TP 1, 1 predicted, 1 label -> 1; class 1: 0; class 2 (predicted only): 0
    assert macro_f1([0, 0, 2], [0, 1, 1]) == pytest.approx((2 / 3 + 0 + 0) / 3)


def test_committee_std_is_the_sample_std_over_member_subsets():
    """The spread of committee accuracies over member subsets is the sample std (ddof=1), as
    every spread the project reports; one subset (K = K_max) has none."""
    labels = np.array([0, 1, 0, 1])
    right, wrong = np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])
    # member accuracies 1, 0.5, 0 (each a block of two examples right or wrong)
    logits = np.stack([np.concatenate([right, right]), np.concatenate([right, wrong]),
                       np.concatenate([wrong, wrong])])
    accs = [1.0, 0.5, 0.0]
    point = accuracy_vs_k(logits, labels)[0]
    assert point.n_subsets == 3 and point.accuracy == pytest.approx(0.5)
    assert point.std == pytest.approx(math.sqrt(sum((a - 0.5) ** 2 for a in accs) / 2))
    assert accuracy_vs_k(logits, labels)[-1].std == 0.0


def test_every_seed_of_a_run_is_its_own_committee_member(tmp_path, monkeypatch):
    """load_members takes seed s's logits for member s; the reference averages all seeds."""
    monkeypatch.setattr(committee_cli, "check_member_run", lambda run: None)
    monkeypatch.setattr(committee_cli, "read_finetune_summary",
                        lambda run: types.SimpleNamespace(seeds=[0, 1], point="p"))
    pred = tmp_path / "run" / "predictions"
    pred.mkdir(parents=True)
    labels = np.array([0, 1, 1, 0])
    seed0 = np.eye(2)[labels] * 3.0  # all right
    seed1 = np.eye(2)[[0, 0, 0, 0]] * 3.0  # half right
    np.save(pred / "test.final.npy", np.stack([seed0, seed1]))
    np.save(pred / "test.labels.npy", labels)
    logits, got_labels, names = committee_cli.load_members([str(tmp_path / "run")], "test",
                                                           "final")
    assert logits.shape == (2, 4, 2) and len(names) == 2
    assert np.array_equal(logits[1], seed1) and np.array_equal(got_labels, labels)
    assert committee_cli.reference_accuracy(str(tmp_path / "run"), "test", "final") == 0.75


def test_bigram_context_stops_at_document_boundaries(tmp_path):
    """A pair spanning two packed documents is no bigram: a context seen only across a boundary
    falls back to the add-one unigram."""
    vocab = 10
    train = np.array([[5, 6, 5, 6]], np.int32)  # documents [5 6] [5 6]; (6, 5) crosses them
    validation = np.array([[6, 5, 1, 1]], np.int32)  # then padding
    write_shards(tmp_path / "s", {"train": train, "validation": validation}, pad_id=1,
                 tokenizer=TokenizerInfo("0" * 64, vocab),
                 segments={"train": np.array([[1, 1, 2, 2]], np.int32),
                           "validation": np.array([[1, 1, 0, 0]], np.int32)})
    result = compute_baselines(tmp_path / "s")["splits"]["validation"]
    p_uni = (2 + 1) / (4 + vocab)  # tokens 5 and 6: two train occurrences each
    assert result["unigram"] == pytest.approx(-math.log(p_uni))
    assert result["bigram"] == pytest.approx(-math.log(p_uni))


def test_bert_random_replacements_never_draw_special_ids():
    """The 10% random tokens lie in [random_token_min_id, vocab): never <s>, <pad>, </s>, <unk>."""
    cfg = MaskingConfig(mask_prob=0.15, max_predictions=40, replacement="bert", mask_id=4,
                        never_mask_ids=(0, 1, 2, 3), random_token_min_id=5, vocab_size=30)
    tokens = np.random.default_rng(0).integers(5, 30, size=(256, 128)).astype(np.int32)
    mb = mask_tokens(jax.random.key(0), jnp.asarray(tokens), jnp.ones_like(jnp.asarray(tokens)),
                     cfg)
    w = np.asarray(mb.weights_bp) > 0
    rows = np.repeat(np.arange(256)[:, None], 40, axis=1)[w]
    new = np.asarray(mb.inputs_bt)[rows, np.asarray(mb.positions_bp)[w]]
    assert w.sum() > 3000 and new.min() >= 4  # 4 is <mask>
    assert ((new >= 5) & (new != np.asarray(mb.targets_bp)[w])).sum() > 150


def test_majority_baseline_breaks_a_tie_towards_the_lowest_id():
    """Training labels tied between 0 and 1: the baseline predicts 0."""
    out = majority_baseline("sst2", np.array([1, 0, 1, 0]), {"dev": np.array([0, 0, 0, 1])},
                            False)
    assert out["dev"]["prediction"] == 0 and out["dev"]["accuracy"] == pytest.approx(75.0)


def _broken_law():
    flops = 10.0 ** np.arange(1, 9)
    loss = np.where(flops < 1e4, 10 * flops ** -0.05, 20 * flops ** -0.2)  # jumps at 1e4
    return flops, loss * np.exp([0.01, -0.02, 0.015, 0.0, -0.01, 0.02, -0.015, 0.01])


def test_r2_log_is_the_r2_of_the_log_space_regression():
    """r2_log equals r^2 of ln L on ln C (scipy's linregress)."""
    flops, loss = _broken_law()
    fit = fit_power_law(flops, loss)
    assert fit.r2_log == pytest.approx(stats.linregress(np.log(flops), np.log(loss)).rvalue ** 2)


def test_break_estimate_is_the_geometric_midpoint_of_its_gap():
    """A law that jumps between 1e3 and 1e4 FLOPs: break at 10^3.5."""
    two = fit_two_segments(*_broken_law())
    assert (two.break_low, two.break_high) == pytest.approx((1e3, 1e4))
    assert two.break_flops == pytest.approx(10 ** 3.5)


def test_two_segment_bic_counts_five_parameters():
    """BIC = n ln(SSE / n) + 5 ln n for two segments (2 + 2 + break), 2 ln n for one line."""
    flops, loss = _broken_law()
    cmp = compare_fits(flops, loss, n_resamples=0)
    n, sse = 8, cmp.two.sse_log
    assert cmp.bic_two == pytest.approx(n * math.log(sse / n) + 5 * math.log(n))
    assert cmp.bic_single == pytest.approx(n * math.log(cmp.single.sse_log / n) + 2 * math.log(n))


def test_an_exact_bin_edge_opens_its_bin():
    """10^(k/11) FLOPs is in bin k even where log10 * 11 rounds to just below k."""
    ks = np.array([2, 5, 15, 30, 49, 60])
    flops = 10.0 ** (ks / 11)
    assert np.array_equal(bin_index(flops), ks)
    frontier = compute_frontier(flops, np.ones(ks.size))
    assert np.array_equal(frontier.bins, ks)


def _seed_rows(losses_by_seed):
    rows = []
    for seed, losses in losses_by_seed.items():
        for step, loss in enumerate(losses, 1):
            rows.append({"kind": "validation", "run": f"d0__seed={seed}", "design": "d0",
                         "pretrain_seed": seed, "step": step, "loss": loss, "point": "P",
                         "flops_paper": 1e12 * step, "perplexity": math.exp(loss)})
    return rows


def test_seed_spread_reads_each_seeds_final_validation_loss():
    """The loss over seeds is the last evaluation's, not the lowest one."""
    spread = seed_spreads(_seed_rows({0: [3.0, 2.0, 2.5], 1: [3.0, 2.2, 2.4]}))[0]
    assert spread.losses == [2.5, 2.4]
    assert spread.interval["mean"] == pytest.approx(2.45)


def test_seed_gap_p_value_is_two_sided():
    """One gap per pre-training seed, each with its own random twin: a two-sided one-sample t."""
    rows = _seed_rows({0: [3.0], 1: [3.0], 2: [3.0]})
    gaps = {0: -1.0, 1: -2.0, 2: 0.5}
    for seed, gap in gaps.items():
        for init, score in (("pretrained", 60.0 + gap), ("random", 60.0)):
            rows.append({"kind": "downstream", "run": f"d0__seed={seed}", "task": "t",
                         "init": init, "score": score, "checkpoint_step": 1,
                         "finetune_workdir": f"ft/{seed}/{init}"})
    (gap,) = seed_gaps(rows)
    assert gap.gaps == pytest.approx(list(gaps.values()))
    assert gap.p_value == pytest.approx(stats.ttest_1samp(list(gaps.values()), 0.0).pvalue)


def test_study_b_committee_is_compared_with_the_lowest_seed_deep_model(tmp_path):
    """Of the 6-layer models of seeds 3 and 7, seed 3's is the reference (paired by FT seed)."""
    labels = np.array([0, 1, 1, 0])
    for m in ("m0", "m1"):
        (tmp_path / m / "predictions").mkdir(parents=True)
        np.save(tmp_path / m / "predictions" / "test.selected.npy",
                np.stack([np.eye(2)[labels], np.eye(2)[labels]]))
        np.save(tmp_path / m / "predictions" / "test.labels.npy", labels)
    by_run = {"m0": {0: 100.0, 1: 100.0}, "m1": {0: 100.0, 1: 100.0},
              "deep7": {0: 90.0, 1: 95.0}, "deep3": {0: 50.0, 1: 60.0}}
    design = types.SimpleNamespace(
        members=["m0", "m1"], deep={7: "deep7", 3: "deep3"},
        workdir=lambda run, task, init: tmp_path / run,
        scores=lambda run, task, init: types.SimpleNamespace(by_seed=by_run[run]),
        seed_of=lambda run: int(run[1:]))
    out = study_b.committee(design, "t")
    assert out["deep_seed"] == 3 and out["deep"]["mean"] == pytest.approx(55.0)
    assert out["largest_minus_deep"].mean == pytest.approx(45.0)


def test_pooled_accuracy_is_over_pairs_and_macro_over_paradigms():
    """Minimal pairs' ``summarize``: pooled accuracy counts every scored pair once (10 right of
    16), macro is the mean, not the median, of the paradigms' own accuracies (90%, 0%, 25%); a
    paradigm with nothing scored is counted empty."""
    rows = [{"scored": 10, "correct": 9, "ties": 0}, {"scored": 2, "correct": 0, "ties": 1},
            {"scored": 4, "correct": 1, "ties": 0}, {"scored": 0, "correct": 0, "ties": 0}]
    s = summarize(rows)
    assert s.pooled == pytest.approx(100.0 * 10 / 16)
    assert s.macro == pytest.approx((90.0 + 0.0 + 25.0) / 3)
    assert (s.scored, s.correct, s.paradigms, s.empty, s.ties) == (16, 10, 3, 1, 1)


def test_paired_difference_interval_uses_the_sample_sd():
    """A minus B over 6 pairs: t interval with the ddof=1 sd of the per-pair differences."""
    a = [{"suite": "s", "paradigm": "p", "outcomes": "111100"}]
    b = [{"suite": "s", "paradigm": "p", "outcomes": "100110"}]
    d = 100.0 * np.array([0, 1, 1, 0, -1, 0])
    got = compare_paired(a, b)
    half = stats.t.ppf(0.975, 5) * np.std(d, ddof=1) / math.sqrt(6)
    assert got.difference == pytest.approx(d.mean())
    assert (got.low, got.high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_evaluation_loss_is_the_mean_over_predictions():
    """10 nats over 4 predictions: loss 2.5, perplexity e^2.5."""
    row = eval_result(10.0, 4.0, 2)
    assert row["loss"] == pytest.approx(2.5) and row["perplexity"] == pytest.approx(math.exp(2.5))
