"""The report's downstream sections: pre-trained vs random (gaps with intervals and p-values, the
majority-class baseline) and pre-training perplexity vs downstream score (Fisher-z, permutation p;
over several architectures, the correlation within architectures beside the pooled one), each
fine-tuning run counted once (see :mod:`minilm_jax.analysis.downstream`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from minilm_jax.analysis.downstream import (EXPECTED_SIGN, PER_ARCH_MIN, CheckpointCorrelation,
                                            GapRow, final_gap_rows, finetune_runs, gap_rows,
                                            perplexity_correlation)
from minilm_jax.analysis.stats import format_p

CORRELATION_PLOT = "perplexity_vs_downstream.png"


@dataclass
class DownstreamAnalysis:
    gaps: list[GapRow]
    correlation: CheckpointCorrelation


def analyse_downstream(rows: Sequence[Mapping[str, Any]]) -> DownstreamAnalysis:
    runs = finetune_runs(rows)
    return DownstreamAnalysis(gap_rows(runs), perplexity_correlation(runs))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _ckpt(g: GapRow) -> str:
    where = f"`{g.run}`"
    if g.step is not None:
        where += f" step {g.step}" + (f" ({g.fraction:.0%})" if g.fraction is not None else "")
    return where


def section_gaps(analysis: DownstreamAnalysis) -> list[str]:
    lines = ["## 4. Downstream: pre-trained vs random initialisation", ""]
    if not analysis.gaps:
        return lines + ["No downstream rows in the results: section skipped.", ""]
    lines += ["Scores (x100, the task's official metric) at the final fine-tuning epoch, mean ± "
              "sample std (ddof = 1) over seeds, n seeds. Gap = pre-trained − random, paired by "
              "seed: 95% t interval over the per-seed differences and a two-sided paired t-test p "
              "(Welch's t where the seeds differ). The random-init twin has the same architecture "
              "and fine-tuning recipe. *Majority* = always predicting the most frequent training "
              "label.", ""]
    rows = []
    for g in analysis.gaps:
        rows.append([_ckpt(g), f"`{g.task}`", g.pretrained.text(),
                     g.random.text() if g.random else "—",
                     g.gap.text() if g.gap else "no random twin",
                     g.gap.verdict() if g.gap else "—",
                     f"{g.majority:.1f}" if g.majority is not None else "—"])
    return lines + _table(["checkpoint", "task", "pre-trained", "random init", "gap (95% CI)",
                           "verdict", "majority"], rows)


def section_correlation(analysis: DownstreamAnalysis, plotted: bool) -> list[str]:
    c = analysis.correlation
    lines = ["## 5. Pre-training perplexity vs downstream score", ""]
    if c.points:
        lines += [f"One point per distinct checkpoint (pre-training run and step; each fine-tuning "
                  f"run counted once): its validation perplexity against the mean pre-trained score "
                  f"over the {len(c.tasks)} task(s) every checkpoint has ({', '.join(c.tasks)}). "
                  "Expected direction (the paper): negative — lower perplexity, higher score.", ""]
    for note in c.notes:
        lines += [f"- {note}"]
    if c.notes:
        lines += [""]
    if c.result is not None:
        pooled = c.pooled_text()
        lines += [f"- Pearson {c.result.text()}; parametric p = {format_p(c.result.p_parametric)}"
                  + (f"; it {pooled}." if pooled else "."),
                  f"- Direction: {c.result.agreement(EXPECTED_SIGN)}."]
        lines += within_lines(c) + [""]
        if plotted:
            lines += [f"![perplexity vs downstream]({CORRELATION_PLOT})", ""]
    if c.points and c.within is not None:
        lines += _table(["checkpoint", "architecture", "validation ppl", "mean pre-trained score"],
                        [[f"`{p.label}`", f"`{p.arch}`", f"{p.perplexity:.1f}", f"{p.score:.2f}"]
                         for p in c.points])
    elif c.points:
        lines += _table(["checkpoint", "validation ppl", "mean pre-trained score"],
                        [[f"`{p.label}`", f"{p.perplexity:.1f}", f"{p.score:.2f}"] for p in c.points])
    return lines


def within_lines(c: CheckpointCorrelation) -> list[str]:
    """Where ``c`` pools several architectures: what the pooled r pools, the correlation within
    architectures and each architecture's own r (those with enough checkpoints); else none."""
    if c.within is None:
        return []
    w = c.within
    lines = [f"- The r above {c.pooled_text()}: it also measures which architecture a "
             "checkpoint has (their levels of perplexity and score differ). Within architectures "
             "(each architecture's mean perplexity and mean score removed: the pooled-within "
             f"correlation; a t-test with n - K - 1 degrees of freedom): Pearson {w.text()} — "
             f"{w.agreement(EXPECTED_SIGN)}."]
    if c.per_arch:
        each = "; ".join(f"`{arch}`: {r.text()}" for arch, r in c.per_arch.items())
        lines.append(f"- Per architecture (those with at least {PER_ARCH_MIN} "
                     f"checkpoints): {each}.")
    return lines


def summary_lines(analysis: DownstreamAnalysis) -> list[str]:
    """Headline lines: final checkpoints vs random per task, and the correlation."""
    out = []
    finals = final_gap_rows(analysis.gaps)
    if finals and not any(g.gap for g in finals):  # nothing to pair with (no random twin)
        out.append(f"- Pre-trained vs random init: no random-init twin was fine-tuned for the "
                   f"{len(finals)} (run, task) pairs (fine-tuning init: pre-trained only).")
    elif finals:
        better = [g for g in finals if g.gap and g.gap.defined and g.gap.low > 0]
        out.append(f"- Pre-trained (each run's last checkpoint) vs random init: {len(better)} of "
                   f"{len(finals)} (run, task) pairs better with a 95% interval excluding 0.")
        for g in finals:
            if g.gap:
                out.append(f"  - {_ckpt(g)}, `{g.task}`: gap {g.gap.text()} — {g.gap.verdict()}.")
    c = analysis.correlation
    if c.result is not None:
        pooled = c.pooled_text()
        if not pooled:
            out.append(f"- Perplexity vs mean downstream score over {len(c.points)} checkpoints: "
                       f"Pearson {c.result.text()} — {c.result.agreement(EXPECTED_SIGN)}.")
        else:
            out.append(f"- Perplexity vs mean downstream score over {len(c.points)} checkpoints "
                       f"({pooled}): pooled Pearson {c.result.text()} — "
                       f"{c.result.agreement(EXPECTED_SIGN)}; within architectures (each "
                       f"architecture's means removed): {c.within.text()} — "
                       f"{c.within.agreement(EXPECTED_SIGN)}.")
    return out


def plot_correlation(analysis: DownstreamAnalysis, path: Path) -> Any:
    """Scatter of the correlation points with a least-squares line, r and its interval, and
    non-overlapping checkpoint labels; the Figure, or None (no file) when r is undefined."""
    from .plots import plot_perplexity_vs_downstream  # noqa: PLC0415

    return plot_perplexity_vs_downstream(analysis.correlation, path)
