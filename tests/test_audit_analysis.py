"""Audit of the analyses and the numbers the reports print, by mutation testing: each test pins one
decision that a plausible one-line bug changed without any other test failing. Tiny hand-made rows
and summaries, each number checked against one worked out here (by hand or with scipy): the
direction verdict of a positive expected sign, one-sided power and the smallest replicate count,
which fine-tuning runs and twins the downstream gaps count, each architecture's own r, iso-group
winners, best validation points and downstream means, integer fields of the results table,
variants' final perplexity and fine-tuning seeds, skipped minimal pairs and phenomenon twins, the
cross-validated majority, row count and pooling, the fine-tuning table's majority, gain and
correlation, and the report's number formats, headline count and ICER interval."""

from __future__ import annotations

import json
import math
import re
import types

import numpy as np
import pytest
from scipy import stats

from minilm_jax.analysis import cross_validation, depth, downstream, variants
from minilm_jax.analysis.finetune_tables import perplexity_correlation as table_correlation
from minilm_jax.analysis.finetune_tables import run_row, tables
from minilm_jax.analysis.power import one_sample_t_power, replicates_for_power
from minilm_jax.analysis.result_rows import BUILT_IN, ResultsError, read_results
from minilm_jax.analysis.results import (TaskScore, downstream_scores, mean_scores,
                                         summarize_runs)
from minilm_jax.analysis.seeds import SeedFactor, SeedSpread
from minilm_jax.analysis.stats import paired_gap, pearson_fisher, t_interval
from minilm_jax.analysis.zero_shot import zero_shot_analyses
from minilm_jax.analysis.zero_shot_seeds import SeedRun, analyse
from minilm_jax.report.downstream import DownstreamAnalysis, summary_lines
from minilm_jax.report.fmt import sci
from minilm_jax.report.seeds import section_seeds
from test_analysis_icer import run_rows, write_jsonl
from test_downstream_analysis import _row as downstream_row

# --- statistics and power ----------------------------------------------------------------------


def test_a_positive_expected_sign_agrees_only_when_the_interval_lies_above_0():
    """r = 0.8 over 5 points: Fisher-z interval tanh(atanh 0.8 -+ 1.96 / sqrt 2) straddles 0."""
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    r = stats.pearsonr(x, y).statistic
    half = stats.norm.ppf(0.975) / math.sqrt(5 - 3)
    assert r == pytest.approx(0.8) and math.tanh(math.atanh(r) - half) < 0
    assert pearson_fisher(x, y).agreement(+1) == "same sign as expected, but the CI includes 0"
    wide = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert pearson_fisher(wide, [v + (0.1 if i % 2 else 0.0) for i, v in enumerate(wide)]
                          ).agreement(+1) == "agrees: expected sign, CI excludes 0"


def test_one_sided_power_puts_all_of_alpha_in_one_tail():
    """P(T > t_{1 - alpha, n - 1}) under the noncentral t with nc = d sqrt(n)."""
    want = stats.nct.sf(stats.t.ppf(0.95, 9), 9, 0.5 * math.sqrt(10))
    got = one_sample_t_power(0.5, 1.0, 10, two_sided=False)
    assert got == pytest.approx(want, rel=1e-9)
    assert got > one_sample_t_power(0.5, 1.0, 10)  # the two-sided test needs more


def test_two_replicates_suffice_for_a_huge_effect():
    """d = 13 with n = 2 (df 1): power P(T > 12.71) + P(T < -12.71) ~ 0.85 >= 0.8."""
    crit = stats.t.ppf(0.975, 1)
    assert stats.nct.sf(crit, 1, 13 * math.sqrt(2)) > 0.8
    assert replicates_for_power(13.0, 1.0) == 2


# --- downstream: which fine-tuning runs and twins count --------------------------------------


def test_a_run_with_its_own_twin_is_paired_with_it_not_with_its_architectures():
    """Runs a and b of one point, each with its own random twin: b's gap is against b's twin."""
    rows = [downstream_row("a", "/r/a", "t", "pretrained", [50.0, 52.0], 10, 100.0, "P"),
            downstream_row("b", "/r/b", "t", "pretrained", [60.0, 61.0], 10, 90.0, "P"),
            downstream_row("a", "/r/a", "t", "random", [20.0, 21.0], point="P", ft="/tw/a"),
            downstream_row("b", "/r/b", "t", "random", [40.0, 42.0], point="P", ft="/tw/b")]
    gaps = {g.run: g.gap for g in downstream.gap_rows(downstream.finetune_runs(rows))}
    assert gaps["b"].mean == pytest.approx(((60 - 40) + (61 - 42)) / 2)
    assert gaps["a"].mean == pytest.approx(((50 - 20) + (52 - 21)) / 2)


def _hand_made(run: str, score: float) -> dict:
    """One seed's row of a hand-made table: no fine-tuning workdir, no seeds."""
    return {**downstream_row(run, "/r/a", "t", "pretrained", [score], 10, 100.0, "P"),
            "finetune_workdir": None, "seeds": None, "member_scores": None}


@pytest.mark.parametrize("copy", ["a@iso_flop:g", "b"])
def test_hand_made_seed_rows_copied_under_another_name_count_once(copy):
    """Three seeds of run a (10, 20, 30) and the same rows under a group's label or another run
    sharing the workdir: one run of three seeds, mean 20 and sd 10, both names on it."""
    rows = [_hand_made("a", s) for s in (10.0, 20.0, 30.0)]
    rows += [_hand_made(copy, s) for s in (10.0, 20.0, 30.0)]
    (run,) = downstream.finetune_runs(rows)
    assert sorted(run.scores_by_seed.values()) == [10.0, 20.0, 30.0]
    assert run.score == pytest.approx(20.0)
    assert (run.summary.n, run.summary.sd) == (3, pytest.approx(np.std([10, 20, 30], ddof=1)))
    assert run.runs == {"a", copy.split("@")[0]}


def _checkpoint(arch, k, ppl, score):
    return downstream.FinetuneRun(f"{arch}{k}", "P", f"/r/{arch}{k}", "t", "pretrained", 10,
                                  None, ppl, {0: score}, score, None, None, f"/ft/{arch}{k}",
                                  {f"{arch}{k}"}, arch)


def test_an_architecture_with_exactly_four_checkpoints_gets_its_own_r():
    """PER_ARCH_MIN = 4 checkpoints suffice (a Fisher-z interval needs n > 3)."""
    a = [(10.0, 80.0), (20.0, 75.0), (30.0, 77.0), (40.0, 70.0)]
    b = [(15.0, 60.0), (25.0, 62.0), (35.0, 55.0), (45.0, 50.0), (55.0, 52.0)]
    runs = [_checkpoint("a", k, p, s) for k, (p, s) in enumerate(a)]
    runs += [_checkpoint("b", k, p, s) for k, (p, s) in enumerate(b)]
    c = downstream.perplexity_correlation(runs)
    assert sorted(c.per_arch) == ["a", "b"]
    for arch, points in (("a", a), ("b", b)):
        want = stats.pearsonr(*zip(*points)).statistic
        assert c.per_arch[arch].r == pytest.approx(want, rel=1e-12) and c.per_arch[arch].n == len(
            points)


def test_the_headline_counts_only_gaps_whose_interval_excludes_0():
    """Two final (run, task) gaps, both with a positive mean; one interval includes 0."""
    clear = paired_gap({0: 60.0, 1: 61.0, 2: 62.0}, {0: 50.0, 1: 50.5, 2: 51.0})
    unclear = paired_gap({0: 60.0, 1: 50.0, 2: 62.0}, {0: 50.0, 1: 58.0, 2: 51.0})
    assert clear.low > 0 and unclear.mean > 0 and unclear.low < 0
    rows = [downstream.GapRow(run, 10, None, "t", None, None, gap, None)
            for run, gap in (("a", clear), ("b", unclear))]
    c = downstream.CheckpointCorrelation([], [], None, [])
    lines = summary_lines(DownstreamAnalysis(rows, c))
    assert "1 of 2 (run, task) pairs better" in lines[0]


# --- iso groups, per-run summaries and downstream means ----------------------------------------


def test_equal_best_perplexities_in_an_iso_group_have_no_winner():
    rows = (run_rows("wide", "E32-H64-I128-L2-A2", "iso_flop:g", curve=[(2, 100, 40.0)])
            + run_rows("deep", "E32-H32-I128-L8-A2", "iso_flop:g", curve=[(2, 100, 40.0)]))
    (group,) = depth.depth_analysis(summarize_runs(rows).values(), {})
    assert group.perplexity_winner is None


def test_an_iso_member_without_downstream_scores_leaves_no_common_task():
    """Two of three members scored: no task every member has, so no means and no winner."""
    rows = (run_rows("a", "E32-H32-I128-L1-A2", "iso_param:g", curve=[(2, 100, 50.0)])
            + run_rows("b", "E32-H32-I128-L2-A2", "iso_param:g", curve=[(2, 100, 45.0)])
            + run_rows("c", "E32-H32-I128-L4-A2", "iso_param:g", curve=[(2, 100, 48.0)]))
    scores = {("a", "sst2", "pretrained"): TaskScore("a", "sst2", "pretrained", 70.0, 1),
              ("b", "sst2", "pretrained"): TaskScore("b", "sst2", "pretrained", 80.0, 1)}
    (group,) = depth.depth_analysis(summarize_runs(rows).values(), scores)
    assert group.tasks == [] and group.downstream_winner is None
    assert [m.downstream_mean for m in group.members] == [None, None, None]


def test_the_best_validation_point_is_the_earliest_of_equal_perplexities():
    rows = run_rows("r", "E32-H32-I128-L2-A2", "base", curve=[(1, 10, 40.0), (2, 20, 45.0),
                                                                (3, 30, 40.0)])
    run = summarize_runs(rows)["r"]
    assert (run.best_step, run.best_perplexity, run.final_step) == (1, 40.0, 3)


def test_mean_scores_over_given_tasks_leave_out_a_run_missing_one():
    scores = {(run, task, "pretrained"): TaskScore(run, task, "pretrained", s, 1)
              for run, task, s in (("a", "t1", 60.0), ("a", "t2", 70.0), ("b", "t1", 50.0))}
    assert mean_scores(scores, "pretrained", ["t1", "t2"]) == {"a": 65.0}


def test_a_non_finite_downstream_score_is_left_out_of_the_mean():
    rows = [downstream_row("a", "/r/a", "t", "pretrained", [70.0], 10, ft="/ft/1"),
            {**downstream_row("a", "/r/a", "t", "pretrained", [1.0], 10, ft="/ft/2"),
             "score": float("nan")}]
    got = downstream_scores(rows)[("a", "t", "pretrained")]
    assert (got.score, got.n) == (70.0, 1)


@pytest.mark.parametrize("field, value", [("step", 1.5), ("params_total", 1000.5)])
def test_a_fractional_integer_field_is_refused(tmp_path, field, value):
    rows = run_rows("r", "E32-H32-I128-L2-A2", "base", curve=[(1, 10, 40.0)])
    path = write_jsonl(tmp_path / "results.jsonl", [{**rows[0], field: value}])
    with pytest.raises(ResultsError, match=f"field '{field}' must be an integer"):
        read_results(path)


# --- encoder variants --------------------------------------------------------------------------


@pytest.fixture
def plain_arch(monkeypatch):
    """A row's ``arch`` as is (the registry lookup imports jax; the pairing is what is tested)."""
    monkeypatch.setattr(variants, "row_arch", lambda r: r.get("arch") or BUILT_IN)


def _variant_rows(run, arch, seed, curve):
    rows = run_rows(run, "E16-H16-I32-L1-A2", "grid", curve=curve)
    return [{**r, "pretrain_seed": seed, **({"arch": arch} if arch else {})} for r in rows]


def test_variants_compare_final_not_best_perplexity(plain_arch):
    """Each run's curve dips then rises: the final perplexity (last point) is compared."""
    rows = []
    for seed, (base, var) in enumerate([(100.0, 90.0), (110.0, 95.0)]):
        rows += _variant_rows(f"b{seed}", None, seed, [(1, 10, base - 20), (2, 20, base)])
        rows += _variant_rows(f"v{seed}", "lab:V", seed, [(1, 10, var - 30), (2, 20, var)])
    (c,) = variants.compare_variants(rows)
    assert (c.baseline.mean, c.variant.mean) == (105.0, 92.5)
    assert c.gap.mean == pytest.approx(((90 - 100) + (95 - 110)) / 2)


def test_variant_downstream_names_the_fewest_finetuning_seeds(plain_arch):
    def row(run, arch, seed, n):
        (r,) = _variant_rows(run, arch, seed, [(2, 20, 50.0)])
        return {**r, "kind": "downstream", "task": "sst2", "init": "pretrained",
                "checkpoint_step": 2, "score": 70.0 + seed, "score_n": n}
    rows = [row("b0", None, 0, 4), row("b1", None, 1, 4), row("v0", "lab:V", 0, 3),
            row("v1", "lab:V", 1, 4)]
    (d,) = variants.compare_downstream(rows)
    assert d.finetune_seeds == 3


# --- zero-shot minimal pairs --------------------------------------------------------------------


def test_skipped_pairs_are_those_not_scored():
    rows = [{"kind": "minimal_pairs", "evaluation": "zorro", "suite": "s", "rule": "h",
             "run": "r", "point": "P", "init": "pretrained", "step": 10, "paradigm": p,
             "phenomenon": "ph", "pairs": pairs, "scored": scored, "correct": scored // 2}
            for p, pairs, scored in (("p1", 10, 8), ("p2", 6, 6))]
    (found,) = zero_shot_analyses(rows)
    assert found.runs[0].skipped == 2 and found.runs[0].final.scored == 14


def test_a_phenomenons_twin_accuracy_counts_only_runs_scored_on_it_both_ways():
    """Run 3's final checkpoint skipped the phenomenon: its twin's accuracy is left out too."""
    def run(seed, final_ph):
        return SeedRun(f"d{seed}", "d", seed, 10, 60.0, 50.0, [(10, 60.0, 30.0)], final_ph,
                       {"p": 40.0 + seed})
    found = analyse("e", "s", "r", [run(1, {"p": 55.0}), run(2, {"p": 57.0}), run(3, {})])
    ph = found.phenomena["p"]
    assert ph.twin == t_interval([41.0, 42.0]) and ph.final == t_interval([55.0, 57.0])
    assert ph.pooled.n == 2 and ph.pooled.mean == pytest.approx(((55 - 41) + (57 - 42)) / 2)


# --- cross-validated verdict -------------------------------------------------------------------


def _fold_runs(root, sizes, seeds=(0, 1), skip=()):
    """Fold runs of two inits: fold k holds sizes[k] rows and a majority of 50 + 10 k; every
    prediction right. ``skip``: (seed, fold) runs left out."""
    runs = []
    for init in cross_validation.INITS:
        for seed in seeds:
            for fold, held in enumerate(sizes):
                if (seed, fold) in skip:
                    continue
                folder = root / init / f"s{seed}-f{fold}"
                (folder / "predictions").mkdir(parents=True)
                labels = np.arange(held) % 2
                np.save(folder / "predictions" / "holdout.final.npy", np.eye(2)[labels][None])
                np.save(folder / "predictions" / "holdout.labels.npy", labels)
                score = 70.0 + fold + (3.0 * seed if init == "pretrained" else 0.0)
                summary = {"task": "table", "init": init, "point": "P", "seeds": [seed],
                           "cross_validation": {"folds": len(sizes), "fold": fold, "seed": seed},
                           "final": {"members": [{"score": score}]},
                           "examples": {"train": sum(sizes) - held, "holdout": held},
                           "majority": {"holdout": {"score": 50.0 + 10 * fold}}}
                (folder / "summary.json").write_text(json.dumps(summary))
                runs.append(cross_validation.FoldRun.read(folder / "summary.json"))
    return runs


def test_cross_validated_majority_weighs_each_fold_by_its_rows_and_rows_count_one_seed(tmp_path):
    """Folds of 2 and 6 rows (majority 50 and 60): (2 x 50 + 6 x 60) / 8 = 57.5, not 55; the
    labelled file has 8 rows whatever the number of seeds."""
    v = cross_validation.verdict(_fold_runs(tmp_path, (2, 6)), "ckpt")
    assert v.majority == pytest.approx(57.5) and v.rows == 8


def test_a_seed_with_a_fold_missing_is_not_pooled(tmp_path):
    v = cross_validation.verdict(_fold_runs(tmp_path, (4, 4), skip={(1, 1)}), "ckpt")
    assert {init: sorted(by_seed) for init, by_seed in v.pooled.items()} == {
        "pretrained": [0], "random": [0]}
    assert v.gap.n == 3  # the three (seed, fold) runs both inits have


# --- the fine-tuning results table --------------------------------------------------------------


def _summary(root, name, task, init, final, selected=None, ckpt="/runs/c", ppl=None, **extra):
    """A fine-tuning summary.json: per-seed member scores at the final and selected epochs."""
    def block(scores):
        return {"members": [{"score": s} for s in scores], "mean": {"score": np.mean(scores)},
                "std": {"score": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0}}
    summary = {"task": task, "init": init, "status": "completed", "point": "P",
               "seeds": list(range(len(final))),
               "pretrained": {"workdir": ckpt, "validation_perplexity": ppl},
               "final": block(final), "selected": block(selected or final), **extra}
    path = root / name / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    return run_row(path)


def test_the_majority_baseline_averages_only_the_reported_splits(tmp_path):
    row = _summary(tmp_path, "a", "sst2", "pretrained", [80.0], reported_splits=["test"],
                   majority={"validation": {"score": 50.0}, "test": {"score": 60.0}})
    assert row["majority_score"] == 60.0


def test_the_gain_pairs_the_final_epochs_not_the_selected_ones(tmp_path):
    pre = _summary(tmp_path, "p", "sst2", "pretrained", [80.0, 84.0, 83.0],
                   selected=[90.0, 91.0, 95.0])
    rnd = _summary(tmp_path, "r", "sst2", "random", [70.0, 72.0, 75.0], selected=[70.0, 80.0, 71.0])
    markdown, _ = tables([pre, rnd])
    d = np.array([10.0, 12.0, 8.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert f"+10.0 [{10 - half:+.1f}, {10 + half:+.1f}] (95% CI, paired t, n = 3" in markdown


def test_the_tables_correlation_averages_only_the_tasks_every_checkpoint_has(tmp_path):
    """t1 on four checkpoints, t2 on two: each point's score is its t1 score."""
    points = [(10.0, 80.0), (20.0, 70.0), (40.0, 72.0), (80.0, 50.0)]
    rows = []
    for i, (ppl, score) in enumerate(points):
        rows.append(_summary(tmp_path, f"c{i}t1", "t1", "pretrained", [score], ckpt=f"/c{i}",
                             ppl=ppl))
        if i < 2:
            rows.append(_summary(tmp_path, f"c{i}t2", "t2", "pretrained", [0.0], ckpt=f"/c{i}",
                                 ppl=ppl))
    text = table_correlation(rows, tmp_path)
    want = stats.pearsonr(*zip(*points)).statistic
    assert f"r = {want:.3f}" in text and "the 1 task(s) they all have (t1)" in text


# --- report formats -------------------------------------------------------------------------------


def test_scientific_numbers_drop_the_exponents_sign_and_leading_zero():
    assert [sci(1.5e-5), sci(2.5e5), sci(3e10), sci(4e-12)] == ["1.50e-5", "2.50e5", "3.00e10",
                                                                "4.00e-12"]


def test_the_seed_icer_interval_is_back_transformed_from_log10():
    """A t interval of log10 ICER over seeds [1, 3] prints as ICERs 10 to 1000."""
    spread = SeedSpread("d", "P", [0, 1], [3.0, 3.2], t_interval([3.0, 3.2]),
                        {0: [(1.0, 3.0)], 1: [(1.0, 3.2)]})
    factor = SeedFactor("b", "model.num_layers", {0: 20.0, 1: 500.0}, 260.0,
                        {"mean": 2.0, "sd": 1.0, "n": 2, "low": 1.0, "high": 3.0})
    found = types.SimpleNamespace(seed_icer=[factor], shown_seed=0, seed_depth=[],
                                  seed_correlations=None)
    text = "\n".join(section_seeds([spread], [], False, found))
    row = re.search(r"\| 1 \| b \| model.num_layers \| ([^\n]+) \|", text).group(1)
    assert row.split(" | ")[-1] == f"[{sci(10.0)}, {sci(1000.0)}] (n = 2)"
