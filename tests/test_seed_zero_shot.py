"""Zero-shot minimal pairs with the pre-training seed as the unit (issue 40), on synthetic
``minimal_pairs`` rows of 5 seeds x 3 sizes with known accuracies: A1 per size and pooled, each
run against its own seed's twin; A2 within and over seeds; per-phenomenon gaps; the report
section; the power analysis that fixed the ``childes`` sweep's seeds; and the sweep's declaration
(expansion only, nothing trained)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import REPO
from minilm_jax.analysis.power import (detectable_effect, one_sample_t_power, power_table,
                                       replicates_for_power)
from minilm_jax.analysis.replication import correlation_over_seeds, seed_effect
from minilm_jax.analysis.zero_shot_seeds import zero_shot_seed_analyses
from minilm_jax.report.zero_shot import section_zero_shot_seeds
from minilm_jax.sweep.evals_stage import twin_seed
from minilm_jax.sweep.spec import expand

sys.path.insert(0, str(REPO / "configs"))
import sweep as sweep_configs  # noqa: E402

SIZES = ("tiny", "ffn", "wide")
SEEDS = (1, 2, 3, 4, 5)
PAIRS = 1000  # per paradigm; accuracies below are multiples of 0.1 points
PHENOMENA = ("quantifiers", "case")
# the seed's own draw, shared by its final checkpoint and its twin: pairing a run with another
# seed's twin adds this spread to the gaps
SHIFT = {1: -6.0, 2: 4.0, 3: 0.0, 4: 8.0, 5: -3.0}
GAP = {"tiny": 7.0, "ffn": 3.0, "wide": 9.0}  # mean final - twin per size
NOISE = {1: 0.4, 2: -0.8, 3: 1.2, 4: 0.0, 5: -0.6}
PH_OFFSET = {"quantifiers": 12.0, "case": -12.0}  # phenomenon moves, beyond the size's gap


def accuracies(size, seed):
    """(twin, snapshot at 50%, final) pooled accuracy of one run; each phenomenon of the final
    checkpoint moves by PH_OFFSET against the twin."""
    twin = 50.0 + SHIFT[seed] / 2
    final = twin + GAP[size] + NOISE[seed]
    return twin, (twin + final) / 2, final


def _row(size, seed, init, step, phenomenon, accuracy, ppl=None):
    return {"kind": "minimal_pairs", "evaluation": "zorro", "suite": "zorro", "rule": "holistic",
            "run": f"{size}__seed={seed}", "design": size, "pretrain_seed": seed,
            "point": f"P-{size}", "init": init, "step": step, "paradigm": f"{phenomenon}-p",
            "phenomenon": phenomenon, "pairs": PAIRS, "scored": PAIRS,
            "correct": int(round(accuracy * PAIRS / 100)), "validation_perplexity": ppl}


def rows(sizes=SIZES, seeds=SEEDS):
    out = []
    for size in sizes:
        for seed in seeds:
            twin, half, final = accuracies(size, seed)
            ppl = {1000: 300.0 - 10 * GAP[size] + seed, 2000: 150.0 - 8 * GAP[size] - seed}
            for ph in PHENOMENA:  # the phenomena's offsets cancel in the pooled accuracy
                sign = 1 if ph == "quantifiers" else -1
                out.append(_row(size, seed, "random", 0, ph, twin + sign * 5.0))
                out.append(_row(size, seed, "pretrained", 1000, ph, half + sign * 5.0, ppl[1000]))
                out.append(_row(size, seed, "pretrained", 2000, ph,
                                final + sign * 5.0 + PH_OFFSET[ph], ppl[2000]))
    return out


def own_gap(size, seed):
    twin, _, final = accuracies(size, seed)
    return final - twin


def _acc(rows_, **match):
    mine = [r for r in rows_ if all(r[k] == v for k, v in match.items())]
    return 100.0 * sum(r["correct"] for r in mine) / sum(r["scored"] for r in mine)


def check_effect(effect, values):
    x = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    assert effect.n == x.size
    assert effect.mean == pytest.approx(x.mean(), abs=1e-9)
    assert effect.sd == pytest.approx(x.std(ddof=1), abs=1e-9)
    assert (effect.low, effect.high) == pytest.approx((low, high), abs=1e-9)
    assert effect.p == pytest.approx(stats.ttest_1samp(x, 0.0).pvalue, rel=1e-9)


def test_a1_per_size_pairs_each_seed_with_its_own_twin():
    [found] = zero_shot_seed_analyses(rows())
    assert (found.evaluation, found.suite, found.rule, found.chance) == ("zorro", "zorro",
                                                                         "holistic", 50.0)
    assert list(found.a1) == sorted(SIZES)
    data = rows()
    for size in SIZES:
        effect = found.a1[size]
        expected = {s: _acc(data, run=f"{size}__seed={s}", step=2000)
                    - _acc(data, run=f"{size}__seed={s}", init="random") for s in SEEDS}
        assert effect.values == pytest.approx(expected, abs=1e-9)
        assert effect.unit == "pre-training seed"
        check_effect(effect, list(expected.values()))
        # own-seed pairing removes the seed's shared draw: the gaps' sd is the noise's (~0.8),
        # pairing with another seed's twin would leave SHIFT's spread (sd ~2.7) in it
        assert effect.sd < 1.0
        assert effect.values == pytest.approx({s: own_gap(size, s) for s in SEEDS}, abs=0.11)
        crossed = [own_gap(size, s) + (SHIFT[s] - SHIFT[SEEDS[(i + 1) % len(SEEDS)]]) / 2
                   for i, s in enumerate(SEEDS)]
        assert np.std(crossed, ddof=1) > 2 * effect.sd
        assert effect.verdict("pre-trained better") == "pre-trained better"


def test_a_twin_from_another_seed_would_change_the_gap():
    """Swapping two seeds' twin rows changes exactly those two seeds' gaps (the twin is read from
    the run's own rows, never matched by position or design)."""
    data = rows(sizes=("tiny",))
    swapped = []
    for r in data:
        if r["init"] == "random" and r["pretrain_seed"] in (1, 2):
            other = 2 if r["pretrain_seed"] == 1 else 1
            r = {**r, "run": f"tiny__seed={other}", "pretrain_seed": other}
        swapped.append(r)
    [ours] = zero_shot_seed_analyses(data)
    [theirs] = zero_shot_seed_analyses(swapped)
    a, b = ours.a1["tiny"].values, theirs.a1["tiny"].values
    assert a[3] == b[3] and a[4] == b[4] and a[5] == b[5]
    assert b[1] == pytest.approx(a[1] + (SHIFT[1] - SHIFT[2]) / 2, abs=0.11)
    assert b[2] == pytest.approx(a[2] - (SHIFT[1] - SHIFT[2]) / 2, abs=0.11)


def test_pooled_a1_counts_each_run_once():
    data = rows()
    # the same run again under a further group must not count twice: rows of run@group are not
    # minimal_pairs rows of their own (the sweep writes evaluations once per run), and an extra
    # single-seed design place is left out of the over-seeds analysis
    data += [{**r, "run": "solo", "design": "solo", "pretrain_seed": 0}
             for r in rows(sizes=("tiny",), seeds=(1,))]
    [found] = zero_shot_seed_analyses(data)
    pooled = found.a1_pooled
    assert pooled.n == len(SIZES) * len(SEEDS) == len(set(pooled.values))
    assert "solo" not in pooled.values and "solo" not in found.a1
    assert pooled.unit.startswith("pre-training run")
    check_effect(pooled, [found.a1[size].values[s] for size in SIZES for s in SEEDS])


def test_a2_within_each_seed_and_over_seeds():
    data = rows()
    [found] = zero_shot_seed_analyses(data)
    assert sorted(found.a2.per_seed) == list(SEEDS)
    rs = []
    for seed in SEEDS:
        mine = [r for r in data if r["pretrain_seed"] == seed and r["init"] == "pretrained"]
        points = sorted({(r["run"], r["step"]): (r["validation_perplexity"],
                                                 _acc(mine, run=r["run"], step=r["step"]))
                         for r in mine}.values())
        assert len(points) == 2 * len(SIZES)
        expected = stats.pearsonr([p for p, _ in points], [a for _, a in points])
        result = found.a2.per_seed[seed]
        assert result.n == 6 and result.r == pytest.approx(expected.statistic, abs=1e-9)
        rs.append(result.r)
    z = np.arctanh(rs)
    low, high = stats.t.interval(0.95, len(z) - 1, loc=z.mean(), scale=stats.sem(z))
    assert found.a2.n == len(SEEDS)
    assert found.a2.mean_r == pytest.approx(math.tanh(z.mean()), abs=1e-9)
    assert (found.a2.low, found.a2.high) == pytest.approx((math.tanh(low), math.tanh(high)),
                                                          abs=1e-9)
    assert found.a2.mean_r < 0  # accuracy rises as perplexity falls
    for size in SIZES:  # final minus the 50% snapshot, per seed
        change = found.snapshot_change[size]
        check_effect(change, [_acc(data, run=f"{size}__seed={s}", step=2000)
                              - _acc(data, run=f"{size}__seed={s}", step=1000) for s in SEEDS])


def test_per_phenomenon_gaps_have_intervals_over_seeds():
    data = rows()
    [found] = zero_shot_seed_analyses(data)
    assert sorted(found.phenomena) == sorted(PHENOMENA)
    for ph in PHENOMENA:
        result = found.phenomena[ph]
        per_run = {(size, s): _acc(data, run=f"{size}__seed={s}", step=2000, phenomenon=ph)
                   - _acc(data, run=f"{size}__seed={s}", init="random", phenomenon=ph)
                   for size in SIZES for s in SEEDS}
        check_effect(result.pooled, list(per_run.values()))
        for size in SIZES:
            check_effect(result.by_design[size], [per_run[(size, s)] for s in SEEDS])
        twins = [_acc(data, run=f"{size}__seed={s}", init="random", phenomenon=ph)
                 for size in SIZES for s in SEEDS]
        assert result.twin["mean"] == pytest.approx(np.mean(twins), abs=1e-9)
        assert result.twin["n"] == 15
    # quantifiers move up by ~GAP + 12, case by ~GAP - 12: both intervals exclude 0
    assert found.phenomena["quantifiers"].pooled.low > 0
    assert found.phenomena["case"].pooled.mean < found.phenomena["quantifiers"].pooled.mean


def test_one_seed_per_design_gives_no_over_seeds_analysis():
    assert zero_shot_seed_analyses(rows(seeds=(1,))) == []
    assert section_zero_shot_seeds([]) == []


def test_report_section_states_unit_chance_n_interval_and_p():
    found = zero_shot_seed_analyses(rows())
    text = "\n".join(section_zero_shot_seeds(found))
    assert "## Zero-shot minimal pairs over pre-training seeds" in text
    assert "Unit of replication: the pre-training seed" in text
    assert "Chance is 50%" in text and "chance 50%" in text
    tiny = found[0].a1["tiny"]
    assert "| tiny | 5 |" in text
    assert f"{tiny.mean:+.1f} [{tiny.low:+.1f}, {tiny.high:+.1f}]" in text
    assert "| pooled over design places (unit: pre-training run) | 15 |" in text
    assert "Over pre-training seeds: mean r = " in text and "n = 5 pre-training seeds" in text
    assert text.index("| quantifiers |") < text.index("| case |")  # largest move first


def test_seed_effect_edge_cases():
    same = seed_effect("x", {1: 2.0, 2: 2.0})  # zero spread: no interval, no p
    assert same.sd == 0.0 and same.mean == 2.0 and not same.defined
    assert math.isnan(same.low) and math.isnan(same.high) and math.isnan(same.p)
    one = seed_effect("x", {1: 2.0})
    assert one.n == 1 and not one.defined and math.isnan(one.p)
    empty = seed_effect("x", {})
    assert empty.n == 0 and empty.text() == "— (n = 0)"
    few = correlation_over_seeds({0: [(1, 2), (2, 3), (3, 5)]})
    assert few.n == 0 and not few.per_seed[0].defined


# ------------------------------------------------------------------ the power analysis
def test_power_matches_known_values_of_the_one_sample_t_test():
    # G*Power 3.1, one-sample t, two-tailed, alpha 0.05: d = 0.5 needs n = 34 (actual power
    # 0.8077775), d = 0.8 needs n = 15 (0.8213105)
    assert one_sample_t_power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert one_sample_t_power(0.8, 1.0, 15) == pytest.approx(0.8213105, abs=1e-6)
    assert replicates_for_power(0.5, 1.0) == 34 and replicates_for_power(0.8, 1.0) == 15
    assert replicates_for_power(5.0, 10.0) == 34  # only d = effect / sd matters
    assert one_sample_t_power(-0.5, 1.0, 34) == one_sample_t_power(0.5, 1.0, 34)
    assert one_sample_t_power(8.0, 1.0, 30) == 1.0  # no NaN from the far tail
    # power equals the simulated rejection rate of scipy's t-test
    rng = np.random.default_rng(0)
    x = rng.normal(0.9, 1.0, size=(20_000, 8))
    rate = np.mean(stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05)
    assert rate == pytest.approx(one_sample_t_power(0.9, 1.0, 8), abs=0.01)
    effect = detectable_effect(1.0, 34)
    assert effect == pytest.approx(0.5, abs=0.005) and one_sample_t_power(effect, 1.0, 34) >= 0.8
    with pytest.raises(ValueError):
        one_sample_t_power(1.0, 0.0, 5)


def test_childes_seed_count_is_the_power_analysis_of_run_3():
    """The docstring's numbers: run 3's per-size Zorro gaps, their sd as the seed-to-seed sd,
    80% power at alpha 0.05 for the mean gap under both rules -> 5 seeds per size."""
    run3 = {"holistic": [7.2, 3.3, 9.2], "pll": [6.1, 1.5, 4.7]}
    needed = {}
    for rule, gaps in run3.items():
        mean, sd = float(np.mean(gaps)), float(np.std(gaps, ddof=1))
        [row] = power_table({rule: mean}, sd, n=5)
        needed[rule] = row.n_for_target
        assert row.power >= 0.8
    assert needed == {"holistic": 4, "pll": 5}
    assert one_sample_t_power(6.5667, 3.0006, 5) == pytest.approx(0.948, abs=5e-4)
    assert one_sample_t_power(4.1, 2.3580, 5) == pytest.approx(0.824, abs=5e-4)
    assert one_sample_t_power(3.3, 3.0006, 5) == pytest.approx(0.465, abs=5e-4)  # ffn's own gap
    assert replicates_for_power(1.5, 2.3580) == 22
    assert len(sweep_configs.CHILDES_PRETRAIN_SEEDS) == max(needed.values())
    doc = sweep_configs.childes.__doc__
    for text in ("0.95 (n = 5)", "0.82 (n = 5)", "n = 5 per size, 15 pooled", "0.47 and 0.20",
                 "9 and 22 seeds"):
        assert text in " ".join(doc.split()), text


# ------------------------------------------------------------------ the childes sweep's declaration
def test_childes_declares_five_seeds_per_size_packed_with_a_twin_per_seed(tmp_path):
    from minilm_jax.sweep.layout import finetune_jobs
    from minilm_jax.sweep.population_packing import packs

    sweep = sweep_configs.childes()
    sweep.finetune_data_dir = str(tmp_path / "glue")
    assert len(sweep.pretrain_seeds) >= 5 and 0 not in sweep.pretrain_seeds
    runs = expand(sweep)
    assert {r.design for r in runs} == set(SIZES)
    for size in SIZES:
        mine = [r for r in runs if r.design == size]
        assert sorted(r.pretrain_seed for r in mine) == sorted(sweep.pretrain_seeds)
        # each run's Zorro twin is initialised with its own seed: one twin per seed
        assert [twin_seed(r) for r in mine] == [int(r.config.seed) for r in mine]
        assert len({twin_seed(r) for r in mine}) == len(sweep.pretrain_seeds)
        # the seeds of a size train as one population
        assert {tuple(p.name for p in packs(runs, sweep.pack)[r.name]) for r in mine} == {
            tuple(r.name for r in mine)}
        # GLUE as before: both snapshots and the size's shared random twin, 3 tasks
        jobs = [finetune_jobs(sweep, r, tmp_path) for r in mine]
        assert all(len(j) == 3 * (2 + 1) for j in jobs)
        twins = {job.workdir for j in jobs for job in j if job.init == "random"}
        assert len(twins) == 3  # one per task, shared by the size's seeds
    assert set(sweep.evals["zorro"]["rules"].split(",")) == {"holistic", "pll"}
    assert tuple(sweep.finetune_checkpoints) == (0.5, 1.0)


def test_the_report_command_shows_the_over_seeds_section(tmp_path):
    import json

    from minilm_jax.report import ReportOptions, build_report

    data = rows()
    runs = sorted({(r["run"], r["design"], r["pretrain_seed"]) for r in data})
    for run, design, seed in runs:  # a validation curve per run, so the report has its sections
        for step in (1000, 2000):
            loss = 6.0 - step / 1000 + 0.01 * seed
            data.append({"kind": "validation", "run": run, "workdir": f"runs/{run}",
                         "point": f"P-{design}", "group": "base", "base": design, "factor": "",
                         "factor_value": None, "params_total": 1000,
                         "params_non_embedding": 100, "design": design, "pretrain_seed": seed,
                         "step": step, "sequences_seen": 32 * step,
                         "flops_paper": 1e9 * step * (1 + SIZES.index(design)),
                         "flops_complete": 2e9 * step * (1 + SIZES.index(design)), "loss": loss,
                         "perplexity": math.exp(loss)})
    for r in data:
        if r["kind"] == "minimal_pairs":
            r.update({k: v for k, v in next(x for x in data if x["kind"] == "validation"
                                            and x["run"] == r["run"]).items()
                      if k in ("workdir", "group", "base", "factor", "factor_value",
                               "params_total", "params_non_embedding")})
            r.update(outcomes="1" * r["correct"] + "0" * (r["scored"] - r["correct"]),
                     sequences_seen=32 * r["step"], flops_paper=1e9 * r["step"],
                     flops_complete=2e9 * r["step"], checkpoint_fraction=r["step"] / 2000,
                     skipped_unk=0, skipped_vocab=0)
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in data))
    text = build_report(results, tmp_path / "report", ReportOptions(bootstrap=20)).read_text()
    part = text[text.index("## Zero-shot minimal pairs over pre-training seeds"):]
    assert "Chance is 50%" in part and "| pooled over design places" in part
    assert "| tiny | 5 |" in part
