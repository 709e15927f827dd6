"""The report's zero-shot section: minimal-pair accuracy of each run's final checkpoint against
its random-init twin, per phenomenon, over pre-training seeds, against validation perplexity, and
along training (:mod:`minilm_jax.analysis.zero_shot`); with several pre-training seeds per design
place, A1, A2 and the phenomena over seeds (:mod:`minilm_jax.analysis.zero_shot_seeds`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.analysis.stats import format_p
from minilm_jax.analysis.variants import BUILT_IN
from minilm_jax.analysis.zero_shot import ZeroShot
from minilm_jax.analysis.zero_shot_seeds import ZeroShotSeeds
from minilm_jax.evals.minimal_pairs import CHANCE, PairedComparison, Summary

from .fmt import cell, effect, interval, num

ZERO_SHOT_PLOT = "zero_shot_{index}.png"


def _acc(s: Summary | None) -> str:
    if s is None or s.scored == 0:
        return "—"
    return f"{s.pooled:.1f} [{s.low:.1f}, {s.high:.1f}]"


def _paired(c: PairedComparison | None) -> str:
    if c is None or c.n < 2:
        return "— | —"
    return (f"{c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] (n = {c.n:,}) | "
            f"{format_p(c.p_value)}")


def plot_zero_shot(found: ZeroShot, path: Path) -> Any:
    """Accuracy along training per run (log steps) with 95% Wilson intervals over pairs, each
    run's random-init twin as a dotted level in the run's colour, and chance (50%) dashed; the
    Figure, or None (no file) when no run has two scored steps."""
    if not any(len(r.curve) >= 2 for r in found.runs):
        return None
    from .plots import _figure, _save

    fig, axes = _figure(9.0, 4.8)
    ax = axes[0, 0]
    twins = False
    for k, r in enumerate(found.runs):  # runs side by side at a step: dodged a little in x
        dodge = 1.0 + 0.025 * (k - (len(found.runs) - 1) / 2)
        steps = dodge * np.asarray([s for s, _, _ in r.curve], dtype=float)
        acc = np.asarray([a for _, a, _ in r.curve], dtype=float)
        if len(r.curve_ci) == len(r.curve):
            low, high = np.asarray(r.curve_ci, dtype=float).reshape(-1, 2).T
            yerr = np.stack([acc - low, high - acc])
        else:
            yerr = None
        container = ax.errorbar(steps, acc, yerr=yerr, marker="o", ms=4, capsize=3, lw=1.2,
                                label=r.run)
        if r.random is not None:
            twins = True
            ax.axhline(r.random.pooled, color=container.lines[0].get_color(), ls=":", lw=1.2,
                       gid="random twin")
    ax.axhline(CHANCE, color="black", ls="--", lw=1.0, gid="chance",
               label=f"chance ({CHANCE:.0f}%)")
    if twins:
        ax.plot([], [], color="0.3", ls=":", lw=1.2, label="random-init twin (run's colour)")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training step (log scale)")
    ax.set_ylabel("accuracy (% of scored pairs)")
    ax.set_title(f"{found.evaluation}: {found.suite}, rule {found.rule}\n"
                 "accuracy pooled over pairs; bars: 95% Wilson interval over pairs", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return fig


def section_zero_shot(analyses: Sequence[ZeroShot], plotted: Sequence[str]) -> list[str]:
    """Markdown of every (evaluation, suite, rule); ``plotted`` the plot file of each (or "")."""
    if not analyses:
        return []
    lines = ["## Zero-shot minimal pairs", "",
             (f"Chance is {CHANCE:.0f}%. Accuracy in % of scored pairs pooled over the suite's "
              "paradigms (a tie is wrong) with a 95% Wilson interval (Zorro's and BLiMP's papers "
              "report the macro mean of paradigm accuracies; `minimal_pairs.md` of the command "
              "shows both); a pair the tokenizer can only encode with <unk> (or, with a word list, "
              "one with another word) is skipped and counted. Each run's final checkpoint is "
              "compared with its random-init twin (same architecture, the run's seed) pair by "
              "pair: the difference with a 95% t interval over pairs and McNemar's exact p. Pairs "
              "of a paradigm share templates, so these per-run p-values treat dependent pairs as "
              "independent and overstate the evidence; the inference is over pre-training seeds "
              "(the unit of replication, paired t over each seed's run and its twin)."), ""]
    for found, plot in zip(analyses, plotted):
        variants = any(r.arch != BUILT_IN for r in found.runs)  # name each run's architecture
        lines += [f"### {cell(found.evaluation)}: {found.suite}, rule `{found.rule}`", "",
                  "| run | " + ("architecture | " if variants else "") + "step | pre-trained | "
                  "random init | pre-trained − random | p (McNemar) | pairs scored / skipped |",
                  "|---|---|---|---|---|---|---|" + ("---|" if variants else "")]
        for r in found.runs:
            lines.append(f"| {cell(r.run)} | " + (f"`{r.arch}` | " if variants else "")
                         + f"{r.final_step} | {_acc(r.final)} | "
                         f"{_acc(r.random)} | {_paired(r.paired)} | {r.final.scored:,} / "
                         f"{r.skipped:,} |")
        lines.append("")
        if found.seed_gaps:
            lines.append("Over pre-training seeds (the seed as the unit: each seed's run against "
                         "its own twin, paired t), pre-trained − random accuracy:")
            lines += [f"- {cell(design)}: {gap.text()} — {gap.verdict()}"
                      for design, gap in found.seed_gaps.items()]
            lines.append("")
        lines += ["Per phenomenon, final checkpoints of all runs pooled (descriptive: pairs "
                  "repeat across runs, so no test here):", "",
                  "| phenomenon | pre-trained | random init |", "|---|---|---|"]
        for phenomenon, (pre, rand) in found.phenomena.items():
            lines.append(f"| {cell(phenomenon)} | {_acc(pre)} | {_acc(rand)} |")
        lines += ["", ("Accuracy vs validation perplexity over every scored checkpoint (a run's "
                       "checkpoints are not independent): " + found.correlation.text())]
        if found.pooling is not None:
            lines += found.pooling.lines("perplexity", "accuracy", -1)
        lines.append("")
        if plot:
            lines += [f"![zero-shot accuracy along training]({plot})", ""]
    return lines


def _per_seed(values: dict, digits: int = 1) -> str:
    return ", ".join(f"{k}: {v:+.{digits}f}" for k, v in values.items())


def section_zero_shot_seeds(analyses: Sequence[ZeroShotSeeds]) -> list[str]:
    """Markdown of A1, A2 and the phenomena over pre-training seeds, per (evaluation, suite,
    rule) with a multi-seed design place."""
    if not analyses:
        return []
    lines = ["## Zero-shot minimal pairs over pre-training seeds", "",
             (f"Unit of replication: the pre-training seed. Each seed's run is compared with its "
              f"own random-init twin (the same architecture initialised with that run's seed): "
              f"one gap per seed, final-checkpoint accuracy minus own-twin accuracy in points. "
              f"Chance is {CHANCE:.0f}% (a minimal pair: the model picks one of two sentences). "
              "Intervals are 95% t intervals over seeds (sample sd, ddof = 1); p is the two-sided "
              "one-sample t-test of the gaps against 0. Pooled rows count each pre-training run "
              "(design place x seed) once: n = runs, and the design places' differences are part "
              "of their spread."), ""]
    for found in analyses:
        lines += [f"### {cell(found.evaluation)}: {found.suite}, rule `{found.rule}`, over "
                  "pre-training seeds", "",
                  f"A1, pre-trained minus own random twin (chance {found.chance:.0f}%):", "",
                  "| design | n | final accuracy | own twin | final − own twin [95% CI] | sd | p | "
                  "per seed |", "|---|---|---|---|---|---|---|---|"]
        for design, e in found.a1.items():
            lines.append(f"| {cell(design)} | {e.n} | {interval(found.final_accuracy[design])} | "
                         f"{interval(found.twin_accuracy[design])} | {effect(e)} | "
                         f"{num(e.sd, 1)} | {format_p(e.p)} | {_per_seed(e.values)} |")
        pooled = found.a1_pooled
        lines += [f"| pooled over design places (unit: {pooled.unit}) | {pooled.n} | — | — | "
                  f"{effect(pooled)} | "
                  f"{num(pooled.sd, 1)} | {format_p(pooled.p)} | — |", "",
                  "- Verdict per design place: " + "; ".join(
                      f"{cell(d)} {e.verdict('pre-trained better', 'random better')}"
                      for d, e in found.a1.items())
                  + f"; pooled: {pooled.verdict('pre-trained better', 'random better')}.", ""]
        lines += [("A2, accuracy vs validation perplexity within each pre-training seed (one "
                   "point per scored checkpoint of that seed's runs, every design place and "
                   "snapshot; Pearson r, 95% Fisher-z CI, permutation p):"), "",
                  "| pre-training seed | n checkpoints | r | 95% CI | p (permutation) |",
                  "|---|---|---|---|---|"]
        for seed, r in found.a2.per_seed.items():
            if not r.defined:
                lines.append(f"| {seed} | {r.n} | undefined ({cell(r.undefined)}) | — | — |")
                continue
            lines.append(f"| {seed} | {r.n} | {num(r.r, 3)} | [{num(r.low, 3)}, "
                         f"{num(r.high, 3)}] | {format_p(r.p_permutation)} |")
        lines += ["", f"- Over pre-training seeds: {found.a2.text()}."]
        if found.a2.within is not None:
            lines.append("- Within architectures, per pre-training seed: " + "; ".join(
                f"{seed}: {w.text()}" for seed, w in found.a2.within.per_seed.items()) + ".")
        lines.append("")
        if found.snapshot_change:
            lines += ["Accuracy from each seed's earliest scored snapshot to its final "
                      "checkpoint (points, over seeds):", "",
                      "| design | n | final − earliest snapshot [95% CI] | p | per seed |",
                      "|---|---|---|---|---|"]
            lines += [f"| {cell(d)} | {e.n} | {effect(e)} | {format_p(e.p)} | "
                      f"{_per_seed(e.values)} |" for d, e in found.snapshot_change.items()]
            lines.append("")
        lines += [("Per phenomenon, final checkpoint minus own twin (points), largest moves "
                   "first; pooled over runs (each once) and per design place over its seeds:"),
                  "", "| phenomenon | own twin | final | final − own twin, pooled [95% CI] | n | p "
                  "| per design place |", "|---|---|---|---|---|---|---|"]
        ranked = sorted(found.phenomena.values(),
                        key=lambda ph: -abs(ph.pooled.mean) if ph.pooled.n else 0.0)
        for ph in ranked:
            per = "; ".join(f"{cell(d)} {effect(e)}" for d, e in ph.by_design.items())
            lines.append(f"| {cell(ph.phenomenon)} | {interval(ph.twin)} | {interval(ph.final)} "
                         f"| {effect(ph.pooled)} | {ph.pooled.n} | {format_p(ph.pooled.p)} | "
                         f"{per} |")
        lines.append("")
    return lines


def section_perplexity_evaluations(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown of the ``perplexity`` rows of a sweep's evaluations: each scored model (the
    snapshots, the final checkpoint and the random twin) on its split."""
    found = [r for r in rows if r["kind"] == "perplexity"]
    if not found:
        return []
    lines = ["## Evaluations: masked-LM perplexity", "",
             ("The run's own evaluation (fixed masks, its masking recipe) of every scored model "
              "on the named split; the random twin's is the untrained baseline."), "",
             "| evaluation | run | model | step | split | loss | perplexity | sequences |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(found, key=lambda r: (r["evaluation"], r["run"], r["init"] != "random",
                                          int(r["step"]))):
        lines.append(f"| {cell(r['evaluation'])} | {cell(r['run'])} | {r['init']} | {r['step']} "
                     f"| {r['split']} | {r['loss']:.4f} | {r['perplexity']:.2f} | "
                     f"{int(r.get('sequences') or 0):,} |")
    return lines + [""]
