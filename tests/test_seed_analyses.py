"""The break of the frontier and the perplexity-vs-downstream correlation with the pre-training seed
as the unit of replication, on synthetic multi-seed results rows."""

import json
import math

import numpy as np
import pytest

from minilm_jax.analysis.downstream import finetune_runs, perplexity_correlation
from minilm_jax.analysis.fits import bootstrap_break, fit_two_segments
from minilm_jax.analysis.frontier import compute_frontier
from minilm_jax.analysis.seed_frontier import seed_break
from minilm_jax.analysis.seeds import correlation_over_seeds, fisher_mean, multi_seed_designs
from minilm_jax.analysis.stats import pearson_fisher
from minilm_jax.report import ReportOptions, build_report

BREAK = 1e15  # the true break of the synthetic frontier
DESIGNS = 12
TASKS = ("t1", "t2")


def law(flops: float) -> float:
    """Two power laws, slope -0.05 below BREAK and -0.15 above, the loss 5% lower past it."""
    if flops < BREAK:
        return 10 * flops ** -0.05
    return 10 * BREAK ** -0.05 * math.exp(-0.05) * (flops / BREAK) ** -0.15


def _common(run, design=None, seed=None):
    return {"run": run, "workdir": f"runs/{run}", "point": "E32-H32-I128-L1-A2", "group": "base",
            "base": "d0", "factor": "", "factor_value": None, "params_total": 1000,
            "params_non_embedding": 100, "design": design, "pretrain_seed": seed}


def _curve(run, k, shift, design=None, seed=None, start=13.0):
    """Four validation points of one run, FLOPs 10^(start + 0.35 k) and up, loss shifted by
    ``shift`` nats."""
    rows = []
    for j in range(4):
        flops = 10 ** (start + 0.35 * k + 0.09 * j)
        loss = law(flops) + shift
        rows.append(_common(run, design, seed) | {
            "kind": "validation", "step": j + 1, "flops_paper": flops,
            "flops_complete": 1.3 * flops, "loss": loss, "perplexity": math.exp(loss)})
    return rows


def _downstream(curve, rng):
    """Pre-trained rows on both tasks for a run's last checkpoint: score falls with perplexity."""
    last = curve[-1]
    keep = ("run", "workdir", "point", "group", "base", "factor", "factor_value", "params_total",
            "params_non_embedding", "design", "pretrain_seed", "flops_paper", "flops_complete")
    rows = []
    for task in TASKS:
        score = 80.0 - 2.0 * last["perplexity"] + float(rng.normal(0, 1.0))
        rows.append({k: last[k] for k in keep} | {
            "kind": "downstream", "task": task, "init": "pretrained", "score": score,
            "seeds": [0], "member_scores": [score], "checkpoint_step": last["step"],
            "final_validation_perplexity": last["perplexity"],
            "finetune_workdir": f"{last['workdir']}/ft/{task}"})
    return rows


def sweep(seeds=(0, 1, 2), offset_sd=0.08, rng_seed=3, downstream=True, extra=True):
    """DESIGNS design places x ``seeds``: each run's loss is the law shifted by its own offset
    (seeds disagree), plus one run without a seed beyond the last place."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for k in range(DESIGNS):
        for s in seeds:
            curve = _curve(f"d{k}__seed={s}", k, float(rng.normal(0, offset_sd)), f"d{k}", s)
            rows += curve + (_downstream(curve, rng) if downstream else [])
    if extra:
        rows += _curve("extra", DESIGNS, 0.0)
    return rows


def _frontier(rows, runs):
    points = [r for r in rows if r["kind"] == "validation" and r["run"] in runs]
    return compute_frontier([r["flops_paper"] for r in points], [r["loss"] for r in points])


def _validation(rows):
    return [r for r in rows if r["kind"] == "validation"]


def test_seed_interval_holds_the_true_break_and_is_wider_than_the_point_bootstrap():
    rows = sweep()
    pooled_frontier = _frontier(rows, {r["run"] for r in rows})
    pooled = bootstrap_break(pooled_frontier.flops, pooled_frontier.loss, 3, 200, seed=0)
    found = seed_break(_validation(rows), multi_seed_designs(rows), n_resamples=200, seed=0)
    interval = found.interval
    assert interval.n_resamples == 200 and interval.n_valid == 200
    assert interval.low <= BREAK <= interval.high
    assert math.log(interval.high / interval.low) >= math.log(pooled.high / pooled.low)
    assert found.seeds_per_design == {f"d{k}": 3 for k in range(DESIGNS)}
    assert found.n_fixed_runs == 1  # the run without a seed is in every resample
    again = seed_break(_validation(rows), multi_seed_designs(rows), n_resamples=200, seed=0)
    assert again == found  # seeded: deterministic


def test_each_seeds_break_is_the_fit_of_that_seeds_frontier():
    rows = sweep()
    found = seed_break(_validation(rows), multi_seed_designs(rows), n_resamples=0)
    assert found.interval is None and sorted(found.per_seed) == [0, 1, 2]
    for s, two in found.per_seed.items():
        frontier = _frontier(rows, {f"d{k}__seed={s}" for k in range(DESIGNS)} | {"extra"})
        assert two == fit_two_segments(frontier.flops, frontier.loss, 3)
    breaks = {two.break_flops for two in found.per_seed.values()}
    assert len(breaks) > 1  # the seeds disagree


def test_a_seed_missing_from_one_place_has_no_own_break():
    rows = [r for r in sweep(downstream=False) if r["run"] != "d4__seed=2"]
    found = seed_break(_validation(rows), multi_seed_designs(rows), n_resamples=20)
    assert sorted(found.per_seed) == [0, 1] and found.seeds_per_design["d4"] == 2
    one_seed = sweep(seeds=(0,), downstream=False)
    assert seed_break(_validation(one_seed), multi_seed_designs(one_seed)) is None


def test_each_seeds_correlation_is_pearson_on_that_seeds_checkpoints():
    rows = sweep()
    found = correlation_over_seeds(rows)
    assert found.tasks == list(TASKS) and sorted(found.per_seed) == [0, 1, 2]
    for s, c in found.per_seed.items():
        mine = [r for r in rows if r["kind"] == "downstream" and r["pretrain_seed"] == s]
        by_run: dict[str, list[float]] = {}
        ppl = {}
        for r in mine:
            by_run.setdefault(r["run"], []).append(r["score"])
            ppl[r["run"]] = r["final_validation_perplexity"]
        runs = sorted(by_run)
        expected = pearson_fisher([ppl[r] for r in runs], [np.mean(by_run[r]) for r in runs])
        assert c.result.n == DESIGNS
        assert c.result.r == pytest.approx(expected.r)
        assert (c.result.low, c.result.high) == pytest.approx((expected.low, expected.high))
        assert c.result.p_permutation == pytest.approx(expected.p_permutation)
    rs = [c.result.r for c in found.per_seed.values()]
    assert found.n_defined == 3 and (found.r_min, found.r_max) == (min(rs), max(rs))
    assert found.mean_r == pytest.approx(math.tanh(np.mean(np.arctanh(rs))))
    assert found.pooled.result.n == 3 * DESIGNS
    assert found.pooled.result.r == perplexity_correlation(finetune_runs(rows)).result.r
    assert fisher_mean([1.0, 1.0]) == pytest.approx(1.0) and math.isnan(fisher_mean([]))
    assert correlation_over_seeds(sweep(seeds=(0,))) is None


def _report(tmp_path, rows, name):
    results = tmp_path / f"{name}.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_report(results, tmp_path / name, ReportOptions(bootstrap=30)).read_text()


def test_report_shows_both_for_several_seeds_and_neither_for_one(tmp_path):
    text = _report(tmp_path, sweep(), "multi")
    assert "bootstrap interval of the break:" in text  # the point bootstrap stays
    line = next(x for x in text.splitlines()
                if "interval over pre-training seeds and frontier points:" in x)
    assert "3 seeds per design place, 12 places" in line and "of 30 resamples" in line
    assert "Break on each pre-training seed's own frontier" in text and "seed 2: " in text
    seeds_part = text[text.index("## Pre-training seeds"):]
    assert "Perplexity vs downstream score within each pre-training seed" in seeds_part
    rows = [x for x in seeds_part.splitlines() if x.startswith(("| 0 | 12 |", "| 1 | 12 |",
                                                                "| 2 | 12 |"))]
    assert len(rows) == 3
    assert "n = 3 seeds with a defined r" in seeds_part
    single = _report(tmp_path, sweep(seeds=(0,)), "single")
    assert "bootstrap interval of the break:" in single
    assert "over pre-training seeds" not in single and "own frontier" not in single
    assert "within each pre-training seed" not in single


def test_a_run_listed_under_a_further_group_is_one_design_place():
    from minilm_jax.analysis.seeds import multi_seed_designs

    def row(run: str, design: str, seed: int) -> dict:
        return {"kind": "validation", "run": run, "design": design, "pretrain_seed": seed,
                "step": 10, "loss": 6.0}

    rows = [row(f"a__seed={s}", "a", s) for s in (0, 1)]
    rows += [row(f"a__seed={s}@iso_param:g", "a@iso_param:g", s) for s in (0, 1)]
    assert multi_seed_designs(rows) == {"a": {0: "a__seed=0", 1: "a__seed=1"}}
