"""Audit of how the reports write their numbers, by mutation testing: each test pins one number a
writer prints or draws where a plausible one-line bug wrote another correct-looking one. Tiny
hand-made rows and summaries, each written number checked against one worked out here (numpy,
scipy or by hand): the fine-tuning table's columns, selected-epoch spreads, GLUE row and verdict
on a worse pre-trained score; study B's intervals, counts, largest committee, overlap gaps and
latency columns; the sweep report's fit table, break counts, baseline split, BIC, frontier rows,
summary counts, per-run FLOPs and test perplexity; the plots' baseline line, fitted slope, seed
counts and seed band; the seed spread's range, the correlation table and the baselines read."""

from __future__ import annotations

import math
import re
import types

import numpy as np
import pytest
from scipy import stats

from minilm_jax.analysis import downstream as downstream_analysis
from minilm_jax.analysis.finetune_tables import tables
from minilm_jax.analysis.results import baselines
from minilm_jax.analysis.seeds import SeedSpread
from minilm_jax.analysis.stats import mean_sd, paired_gap, t_interval
from minilm_jax.report import plots, study_b_markdown
from minilm_jax.report.analyses import analyse
from minilm_jax.report.downstream import (DownstreamAnalysis, analyse_downstream,
                                          section_correlation)
from minilm_jax.report.fmt import num, sci
from minilm_jax.report.markdown import (baseline_lines, section_curves, section_runs,
                                        section_summary)
from minilm_jax.report.options import ReportOptions
from minilm_jax.report.seeds import plot_seed_bands, section_seeds
from test_audit_analysis import _checkpoint, _summary
from test_report_plots import _identity, downstream_row, validation_rows


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _row(text: str, first: str) -> list[str]:
    (line,) = [x for x in text.splitlines() if x.startswith(f"| {first}")]
    return _cells(line)


def _paper_section(text: str) -> str:
    return text.split("### FLOPs: paper")[1].split("### FLOPs: complete")[0]


def _cell(scores) -> str:
    x = np.asarray(scores, dtype=float)
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f} (n = {x.size})"


# --- the fine-tuning results table ---------------------------------------------------------------


def _table_pair(tmp_path, pre_final, pre_selected, rnd_final, rnd_selected):
    pre = _summary(tmp_path, "p", "sst2", "pretrained", pre_final, selected=pre_selected)
    rnd = _summary(tmp_path, "r", "sst2", "random", rnd_final, selected=rnd_selected)
    return pre, rnd


def test_the_table_writes_each_inits_final_and_selected_scores_in_its_column(tmp_path):
    """Pre-trained then random init, final epochs; then selected epochs (each with its own sample
    sd) as pre-trained / random; the GLUE row averages the final epochs."""
    pf, ps, rf, rs = [80.0, 84.0, 83.0], [90.0, 91.0, 96.0], [70.0, 72.0, 75.0], [60.0, 80.0, 71.0]
    pre, rnd = _table_pair(tmp_path, pf, ps, rf, rs)
    pre["final_metrics"], pre["best_metrics"] = {"accuracy": 82.0}, {"accuracy": 92.0}
    markdown, payload = tables([pre, rnd])
    cells = _row(markdown, "sst2")
    assert cells[0].endswith("<br>accuracy 82.0")
    assert cells[1:3] == [_cell(pf), _cell(rf)]
    assert cells[4] == f"{_cell(ps)} / {_cell(rs)}"
    glue = _row(markdown, "**GLUE average**")
    assert glue[1:3] == [f"**{np.mean(pf):.1f}**", f"**{np.mean(rf):.1f}**"]
    assert payload["checkpoints"][0]["glue_average"]["pretrained"] == pytest.approx(np.mean(pf))


def test_a_worse_pretrained_score_within_its_interval_is_not_settled(tmp_path):
    """Gaps -10, +14, -10: mean -2 and an interval reaching above 0 (checked with scipy)."""
    pre, rnd = _table_pair(tmp_path, [60.0, 75.0, 62.0], None, [70.0, 61.0, 72.0], None)
    d = np.array([-10.0, 14.0, -10.0])
    low, high = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert low < 0 < high
    markdown, _ = tables([pre, rnd])
    assert "on sst2 (within the interval: no difference shown)" in markdown
    assert "(the interval excludes 0)" not in markdown


# --- study B's markdown ---------------------------------------------------------------------------


def _effect(values: dict[int, float]):
    """A SeedEffect-like record of per-seed values, worked out with scipy."""
    x = np.asarray(list(values.values()), dtype=float)
    low, high = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    return types.SimpleNamespace(n=x.size, mean=float(x.mean()), low=low, high=high,
                                 sd=float(x.std(ddof=1)), p=stats.ttest_1samp(x, 0.0).pvalue,
                                 values=values, defined=True, zero_spread=False)


def _correlation():
    return types.SimpleNamespace(per_seed={}, text=lambda: "r = 0")


def _study_b_result():
    """Three B1 cells (a 6-layer one shares the largest subset), a committee, two latency rows."""
    gaps = [types.SimpleNamespace(task="t", model=m, subset=n, pretrained=t_interval([60, 62]),
                                  random=t_interval([50, 51]), majority=25.0, gap=_effect(v))
            for m, n, v in (("l1", 100, {0: 3.0, 1: 4.0, 2: 4.5}),  # interval above 0
                            ("l1", 200, {0: 1.0, 1: -4.0, 2: 6.0}),  # straddles 0
                            ("l6", 200, {0: -9.0, 1: -8.0, 2: -9.5}))]  # below 0
    by_k = {k: {**t_interval([60.0 + k, 61.0 + 2 * k, 62.0]), "member_subsets": 1,
                "sd_over_subsets": 0.0} for k in (1, 2, 3)}
    deep, largest = {0: 50.0, 1: 54.0}, {0: 63.0, 1: 64.0}
    committee = {"by_k": by_k, "deep_seed": 0, "deep": t_interval([50.0, 54.0]),
                 "largest_minus_deep": paired_gap(largest, deep),
                 "single_minus_deep": paired_gap({0: 55.0, 1: 53.0}, deep)}
    seeds = {"gaps": gaps,
             "size": types.SimpleNamespace(per_task={}, correlation=_correlation()),
             "overlap": {"occurrence_share": _correlation(), "type_share": _correlation()},
             "committees": {}}
    latency = {"environment": {"device": "cpu", "jax": "0"}, "seq_len": 64, "weights": "w",
               "rows": [{"name": "deep", "description": "6-layer", "batch": 8, "median_ms": 1.25,
                         "p90_ms": 3.5, "params": 1000, "vs_deep": 1.0}]}
    overlap = [{"task": "t", "subset": n, "occurrence_share": 0.9, "type_share": 0.4}
               for n in (100, 200)]
    run_row = {"task": "t", "model": "l1", "subset": 100, "seed": 0,
               "pretrained": mean_sd([60.0, 62.0]), "random": mean_sd([50.0, 53.0]),
               "majority": 25.0, "gap": paired_gap({0: 60.0, 1: 62.0}, {0: 50.0, 1: 53.0})}
    return {"pretraining": [], "gaps": [run_row], "size": {"smallest": 100, "largest": 200,
                                                    "per_task": {}},
            "overlap": overlap, "committees": {"t": {"prob": committee}}, "seeds": seeds,
            "members": ["a", "b", "c"], "latency": latency}, gaps, committee


@pytest.fixture(scope="module")
def study_b():
    result, gaps, committee = _study_b_result()
    return study_b_markdown.markdown(result, types.SimpleNamespace(name="b")), gaps, committee


def test_study_b_counts_the_b1_intervals_that_exclude_0_and_those_above(study_b):
    """Means +3.8 (above 0), +1.0 (straddles 0), -8.8 (below 0): 2 of 3, 1 above."""
    assert "2 of 3 intervals exclude 0 (1 above)." in study_b[0]


def test_study_b_overlap_table_writes_shares_and_the_1_layer_models_gap(study_b):
    """Subset 200 has a 1-layer and a 6-layer cell: the overlap row shows the 1-layer gap."""
    text, gaps, _ = study_b
    assert _row(text, "t | 200 |")[2:] == ["0.900", "0.400", f"{gaps[1].gap.mean:+.1f}"]


def test_study_b_per_run_row_writes_pretrained_then_random(study_b):
    assert _row(study_b[0], "t | l1 | 100 | 0 |")[4:6] == [_cell([60.0, 62.0]),
                                                           _cell([50.0, 53.0])]


def test_study_b_committee_writes_each_k_interval_and_the_largest_k_minus_deep(study_b):
    """Per-K t intervals (low before high, checked with scipy) and K = 3, the largest."""
    text, _, committee = study_b
    x = np.array([63.0, 67.0, 62.0])
    low, high = stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x))
    assert f"K=3: {x.mean():.1f} [{low:.1f}, {high:.1f}]" in text
    assert f"K=3 minus 6-layer: {committee['largest_minus_deep'].text(1)}" in text


def test_study_b_latency_writes_the_median_then_the_90th_percentile(study_b):
    assert _row(study_b[0], "deep (6-layer)")[1:4] == ["8", "1.25", "3.50"]


# --- the sweep report -----------------------------------------------------------------------------


POINTS = [f"E32-H{h}-I128-L2-A2-V19010" for h in (16, 32, 64, 128)]


def _sweep_rows():
    """Four runs' curves; baselines of three splits (validation's own levels); one test row
    per run at two steps (the later one is the run's)."""
    rows = []
    for split, uni, bi in (("train", 7.0, 6.0), ("validation", 6.4, 5.1), ("test", 6.0, 4.0)):
        rows += [{"kind": "baseline", "name": name, "split": split, "loss": loss,
                  "perplexity": math.exp(loss), "shards": "d"}
                 for name, loss in (("unigram", uni), ("bigram", bi))]
    for k, point in enumerate(POINTS):
        run = f"small-h{point.split('-')[1][1:]}"
        rows += validation_rows(run, point)
        rows += [{**_identity(run, point), "kind": "test", "step": step, "loss": 1.0,
                  "perplexity": ppl} for step, ppl in ((8000, 30.0 + k), (4000, 90.0))]
    return rows


@pytest.fixture(scope="module")
def sweep():
    return analyse(_sweep_rows(), ReportOptions(bootstrap=0))


def _frontier_fit(sweep):
    """The paper frontier's flops, loss and scipy's one-line fit's predictions."""
    curve = sweep.curves["paper"]
    flops, loss = curve.frontier.flops, curve.frontier.loss
    fit = stats.linregress(np.log(flops), np.log(loss))
    return curve, flops, loss, np.exp(fit.intercept) * flops ** fit.slope, fit.rvalue ** 2


def test_the_fit_table_writes_r2_log_then_r2_linear(sweep):
    """R² (log) is scipy's r² of ln L on ln C; R² (linear) is of a·C^b against L."""
    _, flops, loss, pred, r2_log = _frontier_fit(sweep)
    r2_linear = 1 - np.sum((loss - pred) ** 2) / np.sum((loss - loss.mean()) ** 2)
    text = "\n".join(section_curves(sweep, ReportOptions(bootstrap=0)))
    cells = _row(_paper_section(text), "one line")
    assert cells[5:8] == [num(r2_log), num(r2_linear), str(flops.size)]


def test_the_break_line_counts_the_frontier_points_on_each_side(sweep):
    curve, flops, *_ = _frontier_fit(sweep)
    text = "\n".join(section_curves(sweep, ReportOptions(bootstrap=0)))
    below = int(np.sum(flops < curve.comparison.two.break_flops))
    assert 0 < below < flops.size
    assert f"{below} points below, {flops.size - below} above" in text


def test_the_summary_writes_the_one_line_bic_first(sweep):
    """BIC = n ln(SSE / n) + 2 ln n of the one line, before the two segments'."""
    curve, flops, loss, pred, _ = _frontier_fit(sweep)
    n = flops.size
    bic_single = n * math.log(np.sum((np.log(loss) - np.log(pred)) ** 2) / n) + 2 * math.log(n)
    assert bic_single != pytest.approx(curve.comparison.bic_two, abs=0.1)
    summary = "\n".join(section_summary(sweep, DownstreamAnalysis([], _empty_correlation()),
                                        ReportOptions(bootstrap=0)))
    assert f"({num(bic_single, 1)} vs {num(curve.comparison.bic_two, 1)}, " in summary


def _empty_correlation():
    return downstream_analysis.CheckpointCorrelation([], [], None, [])


def test_each_frontier_row_writes_the_lowest_loss_of_its_bin(sweep):
    curve = sweep.curves["paper"]
    text = "\n".join(section_curves(sweep, ReportOptions(bootstrap=0)))
    section = _paper_section(text).split("Frontier points")[1]
    rows = [_cells(x) for x in section.splitlines() if re.match(r"\| \d+ \|", x)]
    assert len(rows) == len(curve.frontier)
    points = [p for p in sweep.rows if p["kind"] == "validation"]
    for row, (low, high) in zip(rows, curve.frontier.edges):
        inside = [p for p in points if low <= p["flops_paper"] < high]
        best = min(inside, key=lambda p: p["loss"])
        assert row[2:4] == [sci(best["flops_paper"]), num(best["loss"], 4)]


def test_the_summary_counts_validation_then_test_rows(sweep):
    """Four runs of 8 validation points and 2 test rows each."""
    lines = section_summary(sweep, DownstreamAnalysis([], _empty_correlation()),
                            ReportOptions(bootstrap=0))
    assert "- 4 runs; 32 validation, 8 test and 0 downstream rows." in lines


def test_each_runs_best_perplexity_is_a_share_of_the_validation_splits_unigram(sweep):
    """The validation split's unigram (e^6.4) and bigram (e^5.1), not the test split's."""
    base = baseline_lines(sweep)
    uni, bi = math.exp(6.4), math.exp(5.1)
    assert f"unigram perplexity {num(uni, 1)}, interpolated left-context bigram {num(bi, 1)}" \
        in base[0]
    for run, s in sweep.runs.items():
        best = min(r["perplexity"] for r in sweep.rows
                   if r["kind"] == "validation" and r["run"] == run)
        assert f"`{run}`: best validation perplexity {num(best, 1)} = {best / uni:.0%} of" in \
            "\n".join(base)


def test_the_runs_appendix_writes_each_definitions_flops_and_the_last_test_perplexity(sweep):
    text = "\n".join(section_runs(sweep))
    for k, point in enumerate(POINTS):
        run = f"small-h{point.split('-')[1][1:]}"
        last = max((r for r in sweep.rows if r["kind"] == "validation" and r["run"] == run),
                   key=lambda r: r["step"])
        cells = _row(text, f"`{run}`")
        assert cells[8:10] == [sci(last["flops_paper"]), sci(last["flops_complete"])]
        assert cells[11] == num(30.0 + k, 2)  # the step-8000 test row, not step 4000's


def test_the_baselines_read_are_the_first_shard_sets():
    rows = [{"kind": "baseline", "name": "unigram", "split": "validation", "perplexity": p}
            for p in (500.0, 900.0)]
    assert baselines(rows) == {("unigram", "validation"): 500.0}


# --- plots ----------------------------------------------------------------------------------------


def test_the_loss_plot_draws_the_validation_splits_baselines(sweep, tmp_path):
    fig = plots.plot_loss_vs_flops(sweep, sweep.curves["paper"], tmp_path / "loss.png")
    drawn = {x.get_label().split(" ")[0]: x.get_ydata()[0] for x in fig.axes[0].lines
             if " baseline: " in x.get_label()}
    assert drawn == pytest.approx({"unigram": 6.4, "bigram": 5.1})


CHECKPOINTS = [(10.0, 80.0), (20.0, 75.0), (30.0, 77.0), (40.0, 70.0), (50.0, 64.0)]


def _correlation_of_checkpoints():
    runs = [_checkpoint("a", k, p, s) for k, (p, s) in enumerate(CHECKPOINTS)]
    return downstream_analysis.perplexity_correlation(runs)


def test_the_correlation_plot_draws_the_least_squares_line_of_score_on_perplexity(tmp_path):
    points, c = CHECKPOINTS, _correlation_of_checkpoints()
    fig = plots.plot_perplexity_vs_downstream(c, tmp_path / "c.png")
    fit = stats.linregress(*zip(*points))
    (line,) = [x for x in fig.axes[0].lines if x.get_label().startswith("least squares")]
    assert f"slope {fit.slope:.3g} points" in line.get_label()
    x = line.get_xdata()
    assert line.get_ydata() == pytest.approx(fit.intercept + fit.slope * x)


def test_the_correlation_table_writes_each_checkpoints_perplexity_then_score():
    points, c = CHECKPOINTS, _correlation_of_checkpoints()
    text = "\n".join(section_correlation(DownstreamAnalysis([], c), False))
    for k, (p, s) in enumerate(points):
        assert _row(text, f"`a{k}")[1:] == [f"{p:.1f}", f"{s:.2f}"]


def test_the_downstream_title_counts_the_seeds_of_both_inits(tmp_path):
    """Three pre-trained and two random-init fine-tuning seeds: 2–3."""
    point = POINTS[0]
    rows = [downstream_row("r", point, "sst2", "pretrained", [60.0, 62.0, 61.0], ppl=100.0),
            downstream_row("r", point, "sst2", "random", [50.0, 52.0])]
    fig = plots.plot_downstream(analyse_downstream(rows).gaps, tmp_path / "d.png")
    assert "mean over 2–3 fine-tuning seeds" in fig._suptitle.get_text()


# --- pre-training seeds -------------------------------------------------------------------------


def _spread():
    curves = {0: [(1.0, 5.0), (2.0, 4.0)], 1: [(1.0, 5.5), (2.0, 3.0)], 2: [(1.0, 8.0),
                                                                            (2.0, 3.6)]}
    losses = [4.0, 3.0, 3.6]
    return SeedSpread("d", "P", [0, 1, 2], losses, t_interval(losses), curves)


def test_the_seed_table_writes_the_range_of_the_seeds_losses():
    text = "\n".join(section_seeds([_spread()], [], False))
    assert _row(text, "d | P")[6] == f"{num(3.0, 4)} to {num(4.0, 4)}"


def test_the_seed_band_is_the_mean_over_seeds_between_the_lowest_and_highest(tmp_path,
                                                                              monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, layout=True: saved.append(fig))
    assert plot_seed_bands([_spread()], tmp_path / "s.png")
    (line,) = saved[0].axes[0].lines
    assert line.get_ydata() == pytest.approx([np.mean([5.0, 5.5, 8.0]), np.mean([4.0, 3.0, 3.6])])
    assert line.get_label() == "d (n = 3)"


def test_differing_majority_levels_are_labelled_from_lowest_to_highest_above_the_top_one(
        tmp_path):
    """Runs with majority 50.9 and 52.7: one label 'majority 50.9–52.7' set on the 52.7 line."""
    rows = []
    for run, majority in (("a", 50.9), ("b", 52.7)):
        rows += [downstream_row(run, POINTS[0], "sst2", "pretrained", [60.0, 62.0], majority,
                                ppl=100.0),
                 downstream_row(run, POINTS[0], "sst2", "random", [50.0, 52.0], majority)]
    fig = plots.plot_downstream(analyse_downstream(rows).gaps, tmp_path / "d.png")
    (label,) = [t for t in fig.axes[0].texts if t.get_text().startswith("majority")]
    assert label.get_text() == "majority 50.9–52.7" and label.xy[1] == pytest.approx(52.7)
