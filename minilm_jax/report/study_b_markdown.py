"""Study B's report text, plots and JSON from the analyses' result (the command
``python -m minilm_jax.report.study_b`` builds the result and writes them): per pre-training run
and over pre-training seeds (:mod:`minilm_jax.analysis.study_b`,
:mod:`minilm_jax.analysis.study_b_seeds`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from minilm_jax.analysis.stats import format_p
from minilm_jax.report import fmt


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:.1f} [{d['low']:.1f}, {d['high']:.1f}] (sd {d['sd']:.1f}, n={d['n']})"


def _pearson(r) -> str:
    if r.undefined:
        return f"undefined ({r.undefined})"
    return (f"r = {r.r:+.2f} [{r.low:+.2f}, {r.high:+.2f}], n = {r.n}, p = {r.p_parametric:.3g} "
            f"(permutation p = {r.p_permutation:.3g})")


def jsonable(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _effect_row(e, digits: int = 1) -> str:
    """``mean [CI] | sd | n | p | per seed`` cells of a SeedEffect."""
    per = ", ".join(f"{k}: {v:+.{digits}f}" for k, v in e.values.items())
    return (f"{fmt.effect(e, digits)} | {fmt.num(e.sd, digits)} | {e.n} | {format_p(e.p)} | "
            f"{per}")


def markdown(result: dict[str, Any], sweep) -> str:
    seeds = result["seeds"]
    lines = [f"# Study B ({sweep.name})", "",
             "Scores: test accuracy (%) of each fine-tuning seed's epoch selected on validation. "
             "Per pre-training run: 95% t intervals over fine-tuning seeds, gaps paired by "
             "fine-tuning seed. Over pre-training seeds (the unit of replication): one value per "
             "pre-training seed (its fine-tuning seeds averaged inside; the random-init twin is "
             "shared by the runs of an architecture), 95% t intervals (sample sd, ddof = 1) and "
             "two-sided one-sample t p-values, except B1's gaps to the shared twin: Welch's t "
             "between the seeds' pre-trained means and the twin's fine-tuning seeds (the twin is "
             "one run: its spread counts, once); correlations within each seed, summarised by the "
             "mean Fisher z over seeds.", "",
             "## Pre-training", "",
             "| run | point | subset | seed | updates | validation ppl | unigram ppl | bigram ppl |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['point']} | {r['subset']} | {r['seed']} | {r['steps']} | "
              f"{r['perplexity']:.1f} | {r['unigram']:.1f} | {r['bigram']:.1f} |"
              for r in result["pretraining"]]
    lines += ["", "## 1. Pre-trained vs random init", "",
              "Over pre-training seeds (B1; majority class is the chance baseline):", "",
              "| task | model | subset | pre-trained | random | majority | gap [95% CI] | sd | n "
              "seeds | p | per seed |", "| --- | --- | ---: | --- | --- | ---: | --- | ---: | ---: "
              "| --- | --- |"]
    for g in seeds["gaps"]:
        lines.append(f"| {g.task} | {g.model} | {g.subset} | {fmt.interval(g.pretrained)} | "
                     f"{fmt.interval(g.random)} | {fmt.num(g.majority, 1)} | "
                     f"{_effect_row(g.gap)} |")
    excluding = [g for g in seeds["gaps"] if g.gap.defined and (g.gap.low > 0 or g.gap.high < 0)]
    lines += ["", f"{len(excluding)} of {len(seeds['gaps'])} intervals exclude 0 "
              f"({sum(g.gap.low > 0 for g in excluding)} above).", "",
              "Per pre-training run (fine-tuning seeds as the unit):", "",
              "| task | model | subset | seed | pre-trained | random | majority | pre-trained - random |",
              "| --- | --- | ---: | ---: | --- | --- | ---: | --- |"]
    for r in result["gaps"]:
        g = r["gap"]
        lines.append(f"| {r['task']} | {r['model']} | {r['subset']} | {r['seed']} | "
                     f"{r['pretrained'].text(1)} | {r['random'].text(1)} | "
                     f"{fmt.num(r['majority'], 1)} | {g.text(1)} |")
    size, over = result["size"], seeds["size"]
    lines += ["", f"## 2. Gap vs pre-training subset size ({size['smallest']} -> {size['largest']} "
              "paragraphs, 1-layer models)", "",
              "Over pre-training seeds (B2): each seed's gap on the largest minus the smallest "
              "subset (the same seed initialises both):", "",
              "| task | largest - smallest [95% CI] | sd | n seeds | p | per seed |",
              "| --- | --- | ---: | ---: | --- | --- |"]
    lines += [f"| {task} | {_effect_row(e)} |" for task, e in over.per_task.items()]
    lines += ["", "Gap vs log10(subset size) within each pre-training seed (its (task, subset) "
              "points): " + "; ".join(f"seed {s}: {_pearson(r)}"
                                      for s, r in over.correlation.per_seed.items()) + ".",
              f"Over pre-training seeds: {over.correlation.text()}.", "",
              "Per pre-training run, pre-trained score largest - smallest subset, paired by "
              "fine-tuning seed:", "", "| task | seed | largest - smallest [95% CI] |",
              "| --- | ---: | --- |"]
    lines += [f"| {task} | {seed} | {gap.text(1)} |" for task, by_seed in size["per_task"].items()
              for seed, gap in by_seed.items()]
    mean_gap = {(g.task, g.subset): g.gap.mean for g in seeds["gaps"] if g.model == "l1"}
    lines += ["", "## 3. Gap vs token overlap (1-layer models)", "",
              "Overlap: the share of the task's token occurrences (train, validation and test texts "
              "as sampled) whose token occurs in the subset's pre-training text (occurrence share), "
              "and the share of the task's token types that do (type share).", "",
              "| task | subset | occurrence share | type share | gap, mean over seeds |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {p['task']} | {p['subset']} | {p['occurrence_share']:.3f} | {p['type_share']:.3f} | "
              f"{mean_gap.get((p['task'], p['subset']), float('nan')):+.1f} |"
              for p in result["overlap"]]
    lines.append("")
    for measure, name in (("occurrence_share", "Occurrence share"), ("type_share", "Type share")):
        corr = seeds["overlap"][measure]
        lines.append(f"{name}, within each pre-training seed: " + "; ".join(
            f"seed {s}: {_pearson(r)}" for s, r in corr.per_seed.items())
            + f". Over pre-training seeds: {corr.text()}.")
    lines += ["Within a task overlap rises with subset size, so (2) and (3) are not separable here.",
              "", f"## 4. Soft committee of {len(result['members'])} independently pre-trained "
              "1-layer members (one per pre-training seed) vs the 6-layer model", "",
              "Over pre-training seeds (B4): the largest committee minus each 6-layer seed "
              "(unit: the 6-layer model's pre-training seed; the committee holds every member "
              "seed and is one model, so its interval and p are Welch's t between the "
              "committee's fine-tuning seeds and the 6-layer seeds' means), and one member minus "
              "the 6-layer model of the same pre-training seed (one-sample t):", "",
              "| task | rule | committee | 6-layer over seeds | committee - 6-layer [95% CI] | sd | "
              "n | p | per seed | member - 6-layer [95% CI] | sd | n | p | per seed |",
              "| --- | --- | ---: | --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: | --- "
              "| --- |"]
    for task, by_method in seeds["committees"].items():
        for method, c in by_method.items():
            lines.append(f"| {task} | {method} | {c.committee:.1f} | {fmt.interval(c.deep)} | "
                         f"{_effect_row(c.largest_minus_deep)} | "
                         f"{_effect_row(c.single_minus_deep)} |")
    lines += ["", "Per fine-tuning seed (against the 6-layer model of the lowest pre-training "
              "seed):", ""]
    for task, by_method in result["committees"].items():
        for method, c in by_method.items():
            ks = " · ".join(f"K={k}: {_ci(v)} over {v['member_subsets']} member subset(s), "
                            f"sd {v['sd_over_subsets']:.1f} between them" for k, v in c["by_k"].items())
            lines.append(f"- **{task}**, {method} averaging: {ks}; 6-layer (seed "
                         f"{c['deep_seed']}): {_ci(c['deep'])}; "
                         f"K={max(c['by_k'])} minus 6-layer: {c['largest_minus_deep'].text(1)}; "
                         f"one member minus 6-layer: {c['single_minus_deep'].text(1)}")
    t = result["latency"]
    env = t["environment"]
    lines += ["", f"## Latency ({env['device']}, jax {env['jax']}, seq {t['seq_len']}, "
              f"{t['weights']})", "", "| row | batch | median ms | p90 ms | params | vs 6-layer |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['name']} ({r['description']}) | {r['batch']} | {r['median_ms']:.2f} | "
              f"{r['p90_ms']:.2f} | {r['params']:,} | {r.get('vs_deep', float('nan')):.2f} |"
              for r in t["rows"]]
    return "\n".join(lines) + "\n"


def plots(result: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    shallow = [g for g in result["seeds"]["gaps"] if g.model == "l1"]
    share = {(p["task"], p["subset"]): p["occurrence_share"] for p in result["overlap"]}
    for task in sorted({g.task for g in shallow}):
        cells = sorted((g for g in shallow if g.task == task), key=lambda g: g.subset)
        means = [g.gap.mean for g in cells]
        yerr = [[g.gap.mean - g.gap.low if g.gap.defined else 0.0 for g in cells],
                [g.gap.high - g.gap.mean if g.gap.defined else 0.0 for g in cells]]
        axes[0].errorbar([g.subset for g in cells], means, yerr=yerr, marker="o", capsize=3,
                         label=task)
        axes[1].errorbar([share.get((task, g.subset), float("nan")) for g in cells], means,
                         yerr=yerr, marker="o", capsize=3, label=task)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("pre-training subset (paragraphs)")
    axes[0].set_ylabel("pre-trained - random (points)\\nmean, 95% CI over pre-training seeds")
    axes[1].set_xlabel("token overlap (occurrence share)")
    for ax in axes:
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "gaps.png", dpi=110)
    plt.close(fig)
    tasks = list(result["committees"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        c = result["committees"][task]["prob"]
        deep = result["seeds"]["committees"][task]["prob"].deep
        ks = sorted(c["by_k"])
        ax.errorbar(ks, [c["by_k"][k]["mean"] for k in ks],
                    yerr=[c["by_k"][k]["mean"] - c["by_k"][k]["low"] for k in ks], marker="o",
                    capsize=3, label="committee")
        ax.axhline(deep["mean"], color="gray", linestyle="--", label="6-layer (mean of seeds)")
        ax.set_title(task)
        ax.set_xlabel("members K")
        ax.set_xticks(ks)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "committee.png", dpi=110)
    plt.close(fig)
