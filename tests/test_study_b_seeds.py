"""Study B's B1-B4 with the pre-training seed as the unit (issue 40), on synthetic rows shaped like
:func:`minilm_jax.analysis.study_b.gap_rows` and :func:`~minilm_jax.analysis.study_b.committee`:
each seed's gap is its fine-tuning seeds' mean pre-trained minus random score; checked against
scipy directly. Also the study B sweeps' declarations (expansion only, nothing trained) and the
report's Markdown on the synthetic result."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import REPO
from minilm_jax.analysis import study_b as sb
from minilm_jax.analysis.stats import mean_sd, paired_gap, t_interval
from minilm_jax.analysis.study_b_seeds import (committee_over_seeds, gaps_over_seeds,
                                               overlap_over_seeds, seed_gap, size_over_seeds)

sys.path.insert(0, str(REPO / "configs"))
import sweep as sweep_configs  # noqa: E402

TASKS = ("ag_news", "dbpedia14")
SUBSETS = (750, 1500, 3000)
SEEDS = (0, 1, 2)
FT = (0, 1, 2)
SEED_SHIFT = {0: 0.0, 1: 3.0, 2: -2.0}  # a pre-training seed's own effect
FT_NOISE = {0: 0.5, 1: -1.0, 2: 0.5}
BASE = {"ag_news": 40.0, "dbpedia14": 20.0}
SLOPE = {"ag_news": 6.0, "dbpedia14": 2.0}  # points per decade of subset size
RANDOM = {"ag_news": 33.0, "dbpedia14": 15.0}


def pretrained(task, model, subset, seed, ft):
    level = BASE[task] + SLOPE[task] * math.log10(subset / 750) + SEED_SHIFT[seed] * (1 + seed / 10)
    if model == "l6":
        level -= 4.0 + seed
    level += 1.5 * math.sin(3 * seed + subset / 500 + len(task))  # each seed's own shape
    return level + FT_NOISE[ft] * (1 + 0.1 * subset / 750)


def gap_rows():
    rows = []
    for task in TASKS:
        cells = [("l1", n) for n in SUBSETS] + [("l6", SUBSETS[-1])]
        for model, subset in cells:
            rnd = {f: RANDOM[task] + (1.0 if model == "l6" else 0.0) - FT_NOISE[f] for f in FT}
            for seed in SEEDS:
                pre = {f: pretrained(task, model, subset, seed, f) for f in FT}
                rows.append({"task": task, "model": model, "subset": subset, "seed": seed,
                             "run": f"{model}__n{subset}__seed={seed}",
                             "pretrained": mean_sd(list(pre.values())),
                             "random": mean_sd(list(rnd.values())), "majority": 25.0,
                             "gap": paired_gap(pre, rnd), "pretrained_by_seed": pre,
                             "random_by_seed": rnd, "random_workdir": f"random/{model}/{task}"})
    return rows


def expected_gap(task, model, subset, seed):
    pre = np.mean([pretrained(task, model, subset, seed, f) for f in FT])
    rnd = np.mean([RANDOM[task] + (1.0 if model == "l6" else 0.0) - FT_NOISE[f] for f in FT])
    return pre - rnd


def check_effect(effect, values):
    x = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    assert effect.n == x.size
    assert effect.mean == pytest.approx(x.mean(), abs=1e-9)
    assert effect.sd == pytest.approx(x.std(ddof=1), abs=1e-9)
    assert (effect.low, effect.high) == pytest.approx((low, high), abs=1e-9)
    assert effect.p == pytest.approx(stats.ttest_1samp(x, 0.0).pvalue, rel=1e-9)


def test_b1_one_gap_per_pretraining_seed_against_the_shared_twin_counted_once():
    """The seeds' gaps are shown one per seed; the interval and p are Welch's t between the seeds'
    mean pre-trained scores and the one shared twin's fine-tuning seeds (scipy's, independently);
    rows whose seeds each have their own twin get the one-sample t over the gaps."""
    rows = gap_rows()
    found = gaps_over_seeds(rows)
    assert [(g.task, g.model, g.subset) for g in found] == [
        (t, m, n) for t in TASKS for m, n in [("l1", 750), ("l1", 1500), ("l1", 3000),
                                              ("l6", 3000)]]
    for g in found:
        values = [expected_gap(g.task, g.model, g.subset, s) for s in SEEDS]
        assert g.gap.values == pytest.approx(dict(zip(SEEDS, values)), abs=1e-9)
        assert g.gap.unit == "pre-training seed" and g.gap.n == len(SEEDS)
        means = [np.mean([pretrained(g.task, g.model, g.subset, s, f) for f in FT]) for s in SEEDS]
        twin = [RANDOM[g.task] + (1.0 if g.model == "l6" else 0.0) - FT_NOISE[f] for f in FT]
        welch = stats.ttest_ind(means, twin, equal_var=False)
        assert g.gap.mean == pytest.approx(np.mean(values), abs=1e-9)
        assert g.gap.sd == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        assert (g.gap.low, g.gap.high) == pytest.approx(tuple(welch.confidence_interval(0.95)),
                                                        abs=1e-9)
        assert g.gap.p == pytest.approx(welch.pvalue, rel=1e-9)
        assert g.gap.method == "Welch t vs a shared twin (3 fine-tuning seeds)"
        assert g.random["sd"] == pytest.approx(0.0)  # one shared twin per architecture
        assert g.pretrained["n"] == 3 and g.majority == 25.0
    own = [{**r, "random_workdir": f"{r['random_workdir']}/seed{r['seed']}"} for r in rows]
    for g in gaps_over_seeds(own):
        check_effect(g.gap, [expected_gap(g.task, g.model, g.subset, s) for s in SEEDS])
        assert g.gap.method == "t"
    with pytest.raises(ValueError, match="two rows"):
        gaps_over_seeds(rows + rows[:1])


def test_a_seeds_gap_averages_its_finetuning_seeds_over_those_both_sides_have():
    row = {"pretrained_by_seed": {0: 50.0, 1: 60.0, 2: 70.0}, "random_by_seed": {0: 40.0, 1: 44.0}}
    assert seed_gap(row) == pytest.approx(55.0 - 42.0)


def test_b2_size_change_paired_by_seed_and_correlation_within_each_seed():
    rows = gap_rows()
    found = size_over_seeds(rows)
    assert (found.smallest, found.largest) == (750, 3000)
    for task in TASKS:
        check_effect(found.per_task[task], [expected_gap(task, "l1", 3000, s)
                                            - expected_gap(task, "l1", 750, s) for s in SEEDS])
    rs = []
    for seed in SEEDS:
        x = [math.log10(n) for t in TASKS for n in SUBSETS]
        y = [expected_gap(t, "l1", n, seed) for t in TASKS for n in SUBSETS]
        r = found.correlation.per_seed[seed]
        assert r.n == 6 and r.r == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
        rs.append(r.r)
    assert found.correlation.n == 3
    assert found.correlation.mean_r == pytest.approx(math.tanh(np.mean(np.arctanh(rs))), abs=1e-9)


def test_b3_overlap_correlation_within_each_seed():
    rows = gap_rows()
    overlap = [{"task": t, "subset": n, "type_share": 0.8 + 0.05 * i,
                "occurrence_share": 0.9 + 0.03 * i + (0.01 if t == "ag_news" else 0)}
               for t in TASKS for i, n in enumerate(SUBSETS)]
    found = overlap_over_seeds(rows, overlap)
    share = {(p["task"], p["subset"]): p for p in overlap}
    for measure in ("occurrence_share", "type_share"):
        for seed in SEEDS:
            x = [share[(t, n)][measure] for t in TASKS for n in SUBSETS]
            y = [expected_gap(t, "l1", n, seed) for t in TASKS for n in SUBSETS]
            assert found[measure].per_seed[seed].r == pytest.approx(stats.pearsonr(x, y).statistic,
                                                                   abs=1e-9)
        z = np.arctanh([r.r for r in found[measure].per_seed.values()])
        low, high = stats.t.interval(0.95, 2, loc=z.mean(), scale=stats.sem(z))
        assert (found[measure].low, found[measure].high) == pytest.approx(
            (math.tanh(low), math.tanh(high)), abs=1e-9)


def committee_result():
    members = {s: {f: 60.0 + 2 * s + FT_NOISE[f] for f in FT} for s in SEEDS}
    deep = {s: {f: 55.0 + 3 * s - FT_NOISE[f] for f in FT} for s in SEEDS}
    largest = {f: 66.0 + FT_NOISE[f] for f in FT}
    return {"task": "ag_news", "method": "prob", "members": 3, "member_seeds": list(SEEDS),
            "largest_by_seed": largest, "members_by_seed": members, "deep_by_seed": deep}


def test_b4_committee_against_each_deep_seed_and_members_paired_by_seed():
    result = committee_result()
    for c in (committee_over_seeds(result), committee_over_seeds(json.loads(json.dumps(result)))):
        assert (c.task, c.method, c.members) == ("ag_news", "prob", 3)
        largest = np.mean(list(result["largest_by_seed"].values()))
        assert c.committee == pytest.approx(largest)
        deep_means = [np.mean(list(result["deep_by_seed"][s].values())) for s in SEEDS]
        assert c.largest_minus_deep.unit == "6-layer pre-training seed"
        # the one committee against the 6-layer seeds: Welch's t, the committee counted once
        effect = c.largest_minus_deep
        assert effect.values == pytest.approx({s: largest - d for s, d in zip(SEEDS, deep_means)})
        welch = stats.ttest_ind(list(result["largest_by_seed"].values()), deep_means,
                                equal_var=False)
        assert (effect.mean, effect.n) == (pytest.approx(largest - np.mean(deep_means)), 3)
        assert (effect.low, effect.high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
        assert effect.p == pytest.approx(welch.pvalue)
        assert effect.method == "Welch t vs the one committee (3 fine-tuning seeds)"
        # member of seed s against the 6-layer model of seed s: 5 - s points
        check_effect(c.single_minus_deep, [5.0 - s for s in SEEDS])
        assert c.single_minus_deep.values == pytest.approx({0: 5.0, 1: 4.0, 2: 3.0})
        assert c.deep["n"] == 3 and c.single["n"] == 3


# ------------------------------------------------------------------ the sweeps' declarations
def _design(config):
    config.data_root, config.finetune_data_dir = "/prepared", "/shared"
    return sb.Design.of(config, Path("/unused"))


@pytest.mark.parametrize("name,seeds,subsets", [
    ("study_b", (0, 1, 2), (750, 1500, 3000)), ("study_b_smoke", (0, 1), (100, 300)),
    ("study_b_full", (0, 1, 2), (20000, 40000, 90000))])
def test_study_b_sweeps_declare_seeds_for_every_point(name, seeds, subsets):
    from minilm_jax.sweep.evals_stage import twin_seed
    from minilm_jax.sweep.population_packing import packs

    config = sweep_configs.get_config(name)
    assert tuple(config.pretrain_seeds) == seeds
    design = _design(config)
    assert sorted(design.cells) == sorted([("l1", n) for n in subsets] + [("l6", subsets[-1])])
    for cell, by_seed in design.cells.items():
        assert tuple(by_seed) == seeds, cell
        runs = [design.runs[r] for r in by_seed.values()]
        assert [twin_seed(r) for r in runs] == list(seeds)  # a random twin per seed
        assert {tuple(p.name for p in packs(list(design.runs.values()), "auto")[r.name])
                for r in runs} == {tuple(by_seed.values())}  # the seeds train as one population
    # the committee: one member per pre-training seed, on the largest subset
    assert [design.seed_of(m) for m in design.members] == list(seeds)
    assert all(design.runs[m].config.data.shards.endswith(f"n{subsets[-1]}")
               for m in design.members)
    assert sorted(design.deep) == list(seeds) and design.largest == subsets[-1]
    assert design.subsets == {n: list(design.cells[("l1", n)].values()) for n in subsets}


def test_protocol_v2_runs_without_pretrain_seeds_are_read_the_same_way():
    config = sweep_configs.study_b()
    config.pretrain_seeds = ()
    config.ofat = config.ofat + ("l1:seed=1,2",)
    design = _design(config)
    assert design.members == ["l1", "l1__seed=1", "l1__seed=2"]
    assert design.deep == {0: "l6"}
    assert design.cells[("l1", 750)] == {0: "l1__shards=n750"}


# ------------------------------------------------------------------ the report
def test_report_markdown_states_the_unit_n_interval_and_p(tmp_path):
    from minilm_jax.report import study_b_markdown as report

    rows = gap_rows()
    for r in rows:  # the design names gap_rows gives
        r["run"] = (f"l6__seed={r['seed']}" if r["model"] == "l6" else
                    f"l1__seed={r['seed']}" if r["subset"] == 3000 else
                    f"l1__shards=n{r['subset']}__seed={r['seed']}")
    overlap = [{"task": t, "subset": n, "occurrence_share": 0.9 + 0.03 * i,
                "type_share": 0.8 + 0.05 * i} for t in TASKS for i, n in enumerate(SUBSETS)]
    size = {"smallest": 750, "largest": 3000, "per_task": {
        t: {s: paired_gap(*(next(r for r in rows if (r["task"], r["model"], r["subset"], r["seed"])
                                 == (t, "l1", n, s))["pretrained_by_seed"] for n in (3000, 750)))
            for s in SEEDS} for t in TASKS}}
    committees = {}
    for task in TASKS:
        c = {**committee_result(), "task": task}
        deep = c["deep_by_seed"][0]
        by_k = {k: {**t_interval([60.0 + k, 61.0 + k, 62.0]), "member_subsets": 1,
                    "sd_over_subsets": 0.0} for k in (1, 2, 3)}
        committees[task] = {m: {**c, "method": m, "by_k": by_k, "deep_seed": 0,
                                "deep": t_interval(list(deep.values())),
                                "largest_minus_deep": paired_gap(c["largest_by_seed"], deep),
                                "single_minus_deep": paired_gap(c["members_by_seed"][0], deep)}
                            for m in ("prob", "logit")}
    seeds = {"gaps": gaps_over_seeds(rows), "size": size_over_seeds(rows),
             "overlap": overlap_over_seeds(rows, overlap),
             "committees": {t: {m: committee_over_seeds(c) for m, c in by.items()}
                            for t, by in committees.items()}}
    result = {"pretraining": [], "gaps": rows, "size": size, "overlap": overlap,
              "committees": committees, "seeds": seeds, "members": ["a", "b", "c"],
              "deep": {0: "l6__seed=0"}, "subsets": {n: [] for n in SUBSETS},
              "latency": {"environment": {"device": "cpu", "jax": "0"}, "seq_len": 64,
                          "weights": "w", "rows": []}}
    text = report.markdown(result, sweep_configs.study_b())
    for heading in ("## Pre-training", "## 1. Pre-trained vs random init",
                    "## 2. Gap vs pre-training subset size", "## 3. Gap vs token overlap",
                    "## 4. Soft committee", "## Latency"):
        assert heading in text
    assert "Over pre-training seeds (the unit of replication)" in text
    first = seeds["gaps"][0].gap
    assert f"{first.mean:+.1f} [{first.low:+.1f}, {first.high:+.1f}]" in text
    assert "majority class is the chance baseline" in text
    assert "n = 3 pre-training seeds" in text  # the correlations' summaries
    assert "unit: the 6-layer model's pre-training seed" in text
    report.plots(result, tmp_path)
    assert (tmp_path / "gaps.png").stat().st_size > 0
    saved = json.loads(json.dumps(report.jsonable(result)))
    assert saved["seeds"]["gaps"][0]["gap"]["n"] == 3


def test_the_study_b_analyses_read_a_seeded_sweep_root(tmp_path, monkeypatch):
    """study_b_smoke's layout (2 pre-training seeds per point): per-run gap rows, the size trend
    per seed and the committee read from the sweep's folders (scores and predictions stubbed),
    then B1-B4 over seeds."""
    from minilm_jax.analysis.study_b_seeds import committee_over_seeds

    config = sweep_configs.study_b_smoke()
    config.data_root, config.finetune_data_dir = "/prepared", "/shared"
    design = sb.Design.of(config, tmp_path)

    def fake_read(cls, workdir):
        text = str(Path(workdir).relative_to(tmp_path))
        seed = int(text.split("__seed=")[1][0]) if "__seed=" in text else -1
        level = 30.0 if "random" in text else 40.0 + 2 * seed + ("n100" not in text) * 3
        return cls(Path(workdir), {0: level + 0.5, 1: level - 0.5}, 25.0)

    monkeypatch.setattr(sb.Scores, "read", classmethod(fake_read))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=40)
    for member in design.members:
        for task in config.finetune_tasks:
            folder = design.workdir(member, task, "pretrained") / "predictions"
            folder.mkdir(parents=True)
            logits = rng.normal(size=(2, 40, 4))
            logits[:, np.arange(40), labels] += 1.0 + design.seed_of(member)
            np.save(folder / "test.selected.npy", logits)
            np.save(folder / "test.labels.npy", labels)
    rows = sb.gap_rows(design)
    assert len(rows) == 2 * 3 * 2  # tasks x (2 subsets + the deeper model) x pre-training seeds
    assert {(r["model"], r["subset"], r["seed"]) for r in rows} == {
        (m, n, s) for m, n in (("l1", 100), ("l1", 300), ("l6", 300)) for s in (0, 1)}
    found = gaps_over_seeds(rows)
    big = next(g for g in found if (g.task, g.model, g.subset) == ("ag_news", "l1", 300))
    assert big.gap.values == pytest.approx({0: 13.0, 1: 15.0})  # 40 + 2s + 3 - 30
    size = sb.size_trend(design, rows)
    assert {s: g.mean for s, g in size["per_task"]["fewrel"].items()} == pytest.approx(
        {0: 3.0, 1: 3.0})
    assert size_over_seeds(rows).per_task["fewrel"].values == pytest.approx({0: 3.0, 1: 3.0})
    c = sb.committee(design, "ag_news")
    assert c["members"] == 2 and c["member_seeds"] == [0, 1] and sorted(c["by_k"]) == [1, 2]
    for seed, by_ft in c["members_by_seed"].items():  # each member alone, from its own logits
        logits = np.load(design.workdir(design.members[seed], "ag_news", "pretrained")
                         / "predictions" / "test.selected.npy")
        assert by_ft == pytest.approx({f: 100 * np.mean(logits[f].argmax(-1) == labels)
                                       for f in (0, 1)})
    assert c["deep_by_seed"] == {0: {0: 43.5, 1: 42.5}, 1: {0: 45.5, 1: 44.5}}
    over = committee_over_seeds(c)
    largest = np.mean(list(c["largest_by_seed"].values()))
    assert over.largest_minus_deep.values == pytest.approx({0: largest - 43.0, 1: largest - 45.0})
