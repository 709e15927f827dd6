"""A perplexity-vs-downstream correlation over checkpoints of several architectures says what it
pools and gives the correlation within architectures beside it: a synthetic variant sweep whose
variant has both a lower perplexity and a higher score than the built-in encoder, with no relation
inside either architecture (the pooled r strongly negative, the within-architecture r near 0),
checked against numpy / scipy."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from minilm_jax.analysis.downstream import finetune_runs, perplexity_correlation
from minilm_jax.analysis.seeds import correlation_over_seeds
from minilm_jax.report import ReportOptions, build_report
from minilm_jax.report.downstream import analyse_downstream, section_correlation, summary_lines
from minilm_jax.report.seeds import correlation_lines

from test_seed_analyses import _curve

VARIANT = "my_lab.encoders:GatedEncoder"
LEVELS = {"built-in": (40.0, 50.0), VARIANT: (20.0, 70.0)}  # (perplexity, score) of each
SEEDS = (0, 1)
DESIGNS = 4


def variant_sweep(archs=("built-in", VARIANT)) -> list[dict]:
    """Per architecture, DESIGNS design places x SEEDS pre-training seeds, one fine-tuned
    checkpoint each: perplexity and score at the architecture's level plus noise drawn apart."""
    rng = np.random.default_rng(4)
    rows = []
    for a, arch in enumerate(archs):
        ppl_level, score_level = LEVELS[arch]
        for k in range(DESIGNS):
            for s in SEEDS:
                run = f"{'v' if arch == VARIANT else 'b'}{k}__seed={s}"
                extra = {"arch": arch} if arch != "built-in" else {}
                curve = [r | extra for r in _curve(run, k, 0.01 * a, f"{run[:2]}", s)]
                ppl = ppl_level + float(rng.normal(0, 2.0))
                for task in ("t1", "t2"):
                    score = score_level + float(rng.normal(0, 2.0))
                    last = curve[-1]
                    rows.append({key: last[key] for key in (
                        "run", "workdir", "point", "group", "base", "factor", "factor_value",
                        "params_total", "params_non_embedding", "design", "pretrain_seed",
                        "flops_paper", "flops_complete")} | extra | {
                        "kind": "downstream", "task": task, "init": "pretrained", "score": score,
                        "seeds": [0], "member_scores": [score], "checkpoint_step": last["step"],
                        "final_validation_perplexity": ppl,
                        "finetune_workdir": f"{last['workdir']}/ft/{task}"})
                rows += curve
    return rows


def points_of(rows, seed=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(perplexity, mean score over the two tasks, architecture) per run, by hand."""
    by_run: dict[str, list] = {}
    for r in rows:
        if r["kind"] == "downstream" and (seed is None or r["pretrain_seed"] == seed):
            entry = by_run.setdefault(r["run"], [r["final_validation_perplexity"], [],
                                                 r.get("arch", "built-in")])
            entry[1].append(r["score"])
    runs = sorted(by_run)
    return (np.asarray([by_run[r][0] for r in runs]),
            np.asarray([np.mean(by_run[r][1]) for r in runs]), [by_run[r][2] for r in runs])


def within_by_hand(x, y, groups) -> dict[str, float]:
    """Residuals from each group's means, their Pearson r, the partial correlation's t-test
    (n - K - 1 degrees of freedom) and Fisher-z interval (standard error 1 / sqrt(n - K - 2))."""
    labels = np.asarray(groups)
    xr, yr = x.astype(np.float64).copy(), y.astype(np.float64).copy()
    for g in set(groups):
        xr[labels == g] -= x[labels == g].mean()
        yr[labels == g] -= y[labels == g].mean()
    r = float(np.corrcoef(xr, yr)[0, 1])
    n, k = len(x), len(set(groups))
    df = n - k - 1
    half = stats.norm.ppf(0.975) / math.sqrt(n - k - 2)
    return {"r": r, "df": df, "p": 2 * stats.t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df),
            "low": math.tanh(math.atanh(r) - half), "high": math.tanh(math.atanh(r) + half)}


def test_pooled_r_over_two_architectures_beside_the_within_architecture_r():
    rows = variant_sweep()
    x, y, groups = points_of(rows)
    c = perplexity_correlation(finetune_runs(rows))
    assert c.architectures == {"built-in": DESIGNS * len(SEEDS), VARIANT: DESIGNS * len(SEEDS)}
    pooled = stats.pearsonr(x, y)
    assert c.result.r == pytest.approx(pooled.statistic, rel=1e-9) and pooled.statistic < -0.9
    want = within_by_hand(x, y, groups)
    assert abs(want["r"]) < 0.4 and want["low"] < 0 < want["high"]  # no relation inside
    w = c.within
    assert (w.n, w.groups, w.df) == (len(x), 2, len(x) - 3)
    for key in ("r", "p", "low", "high"):
        assert getattr(w, key) == pytest.approx(want[key], rel=1e-9), key
    for arch in (VARIANT, "built-in"):
        mine = [i for i, g in enumerate(groups) if g == arch]
        own = stats.pearsonr(x[mine], y[mine])
        assert c.per_arch[arch].r == pytest.approx(own.statistic, rel=1e-9)
        ci = own.confidence_interval(0.95)
        assert (c.per_arch[arch].low, c.per_arch[arch].high) == pytest.approx((ci.low, ci.high))
    # the headline says what it pools and prints the within figure (3 decimals) beside it
    analysis = analyse_downstream(rows)
    headline = next(line for line in summary_lines(analysis) if "Perplexity vs" in line)
    assert (f"pools 2 architectures: `built-in` ({len(x) // 2} checkpoints), `{VARIANT}` "
            f"({len(x) // 2} checkpoints)") in headline
    found = re.search(r"within architectures \(each architecture's means removed\): r = "
                      r"(-?\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\] .*df = (\d+); t-test p = "
                      r"([\d.e+-]+)\)", headline)
    assert found, headline
    r, low, high = (float(v) for v in found.groups()[:3])
    assert (r, low, high) == pytest.approx((want["r"], want["low"], want["high"]), abs=5e-4)
    assert int(found.group(4)) == want["df"]
    assert float(found.group(5)) == pytest.approx(want["p"], rel=0.05)
    section = "\n".join(section_correlation(analysis, plotted=False))
    for arch in (VARIANT, "built-in"):
        mine = [i for i, g in enumerate(groups) if g == arch]
        shown = re.search(rf"`{re.escape(arch)}`: r = (-?\d\.\d{{3}})", section)
        assert float(shown.group(1)) == pytest.approx(stats.pearsonr(x[mine], y[mine]).statistic,
                                                      abs=5e-4)
    assert "| `b0__seed=0` | `built-in` |" in section


def test_each_seeds_correlation_pooling_architectures_gives_its_within_figure():
    rows = variant_sweep()
    found = correlation_over_seeds(rows)
    text = "\n".join(correlation_lines(found))
    for seed in SEEDS:
        x, y, groups = points_of(rows, seed)
        want = within_by_hand(x, y, groups)
        assert found.per_seed[seed].within.r == pytest.approx(want["r"], rel=1e-9)
        part = text[text.index(f"Pre-training seed {seed}:"):]
        shown = re.search(r"Within architectures .*?Pearson r = (-?\d\.\d{3})", part)
        assert float(shown.group(1)) == pytest.approx(want["r"], abs=5e-4)
    x, y, groups = points_of(rows)
    pooled = re.search(r"pools 2 architectures: .*?; within architectures r = (-?\d\.\d{3})\)",
                       text)
    assert float(pooled.group(1)) == pytest.approx(within_by_hand(x, y, groups)["r"], abs=5e-4)


def test_one_architecture_pools_nothing_and_the_report_says_nothing_of_it(tmp_path):
    rows = variant_sweep(("built-in",))
    c = perplexity_correlation(finetune_runs(rows))
    assert c.within is None and c.per_arch == {} and c.pooled_text() == ""
    headline = next(line for line in summary_lines(analyse_downstream(rows))
                    if "Perplexity vs" in line)
    assert "pools" not in headline and "within architectures" not in headline
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in variant_sweep()))
    report = build_report(results, tmp_path / "report", ReportOptions(bootstrap=0)).read_text()
    summary = report[report.index("## Summary"):report.index("## 1.")]
    assert "pools 2 architectures" in summary and "within architectures" in summary
