"""The report's zero-shot section: minimal-pair accuracy of each run's final checkpoint against
its random-init twin, per phenomenon, over pre-training seeds, against validation perplexity, and
along training (:mod:`minilm_jax.analysis.zero_shot`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.analysis.stats import format_p
from minilm_jax.analysis.zero_shot import ZeroShot
from minilm_jax.evals.minimal_pairs import CHANCE, PairedComparison, Summary

from .fmt import cell

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
        lines += [f"### {cell(found.evaluation)}: {found.suite}, rule `{found.rule}`", "",
                  "| run | step | pre-trained | random init | pre-trained − random | "
                  "p (McNemar) | pairs scored / skipped |", "|---|---|---|---|---|---|---|"]
        for r in found.runs:
            lines.append(f"| {cell(r.run)} | {r.final_step} | {_acc(r.final)} | "
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
                       "checkpoints are not independent): " + found.correlation.text()), ""]
        if plot:
            lines += [f"![zero-shot accuracy along training]({plot})", ""]
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
