"""The report's pre-training-seed section: per multi-seed design place the final validation loss
over seeds (a band on the loss-vs-FLOPs plot), the pre-trained-minus-random gap per pre-training
seed, ICER and depth within each seed, and perplexity vs downstream score within each seed
(:mod:`minilm_jax.analysis.seeds`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minilm_jax.analysis.seeds import SeedCorrelations, SeedGap, SeedSpread
from minilm_jax.analysis.stats import format_p

from .analyses import Analyses
from .downstream import within_lines
from .fmt import cell, num, sci

SEED_PLOT = "seed_bands.png"


def plot_seed_bands(spreads: Sequence[SeedSpread], path: Path) -> bool:
    """Each multi-seed design's validation loss vs FLOPs: the mean over seeds and the band from
    the lowest to the highest seed at each evaluation; False (no file) when there is none."""
    if not spreads:
        return False
    from .plots import _figure, _save

    fig, axes = _figure(10.0, 5.0)
    ax = axes[0, 0]
    for spread in spreads:
        curves = list(spread.curves.values())
        length = min(len(c) for c in curves)
        flops = np.asarray([p[0] for p in curves[0][:length]])
        losses = np.asarray([[p[1] for p in c[:length]] for c in curves])
        line, = ax.plot(flops, losses.mean(axis=0), label=f"{spread.design} (n = {len(curves)})")
        ax.fill_between(flops, losses.min(axis=0), losses.max(axis=0), alpha=0.2,
                        color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (nats)")
    ax.set_title("validation loss over pre-training seeds: mean, band = lowest to highest seed")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _bounds(interval: dict[str, float], digits: int) -> str:
    return f"[{num(interval['low'], digits)}, {num(interval['high'], digits)}]"


def section_seeds(spreads: Sequence[SeedSpread], gaps: Sequence[SeedGap], plotted: bool,
                  analyses: Analyses | None = None) -> list[str]:
    """Markdown: the seed spread table, the band plot, the per-seed gap table, and ICER and the
    iso groups over seeds (from ``analyses``)."""
    if not spreads:
        return []
    lines = ["## Pre-training seeds", "",
             "Unit of replication: the pre-training seed (each run counted once; fine-tuning seeds "
             "are averaged inside each pre-training seed). Intervals are 95% t intervals over "
             "seeds (sample sd, ddof = 1).", "",
             "| design | point | seeds | final validation loss | sd | 95% CI | range |",
             "|---|---|---|---|---|---|---|"]
    for s in spreads:
        i = s.interval
        lines.append(f"| {cell(s.design)} | {cell(s.point)} | {i['n']} | {num(i['mean'], 4)} | "
                     f"{num(i['sd'], 4)} | {_bounds(i, 4)} | "
                     f"{num(min(s.losses), 4)} to {num(max(s.losses), 4)} |")
    lines.append("")
    if plotted:
        lines += [f"![validation loss over pre-training seeds]({SEED_PLOT})", ""]
    if gaps:
        lines += ["Pre-trained minus random-init score, one value per pre-training seed (n = "
                  "seeds). Where the seeds share one random-init twin (one run), the interval and "
                  "p are Welch's t between the seeds' pre-trained scores and the twin's "
                  "fine-tuning seeds, so the twin's own spread counts; where each seed has its "
                  "own twin, a one-sample t over the gaps:", "",
                  "| design | task | n | gap | 95% CI | p | test | per seed |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in gaps:
            i = g.interval
            lines.append(f"| {cell(g.design)} | {cell(g.task)} | {i['n']} | {num(i['mean'], 2)} | "
                         f"{_bounds(i, 2)} | {format_p(g.p_value)} | "
                         f"{'one-sample t' if g.method == 't' else cell(g.method)} | "
                         f"{', '.join(num(x, 2) for x in g.gaps)} |")
        lines.append("")
    if analyses is not None and analyses.seed_icer:
        lines += [f"ICER within each pre-training seed (the ICER section above shows seed "
                  f"{analyses.shown_seed}); a factor's median ICER per seed, the median over "
                  "seeds and a 95% t interval of log10 ICER over the seeds where a step helped:",
                  "", "| rank | base | factor | per seed | median over seeds | 95% CI |",
                  "|---|---|---|---|---|---|"]
        for rank, f in enumerate(analyses.seed_icer, start=1):
            i = f.log10_interval
            ci = (f"[{sci(10 ** i['low'])}, {sci(10 ** i['high'])}] (n = {i['n']})"
                  if i.get("n", 0) >= 2 else f"— (n = {i.get('n', 0)})")
            per = ", ".join(f"{seed}: {sci(v)}" for seed, v in f.per_seed.items())
            lines.append(f"| {rank} | {cell(f.base)} | {cell(f.factor)} | {per} | "
                         f"{sci(f.median)} | {ci} |")
        lines.append("")
    if analyses is not None and analyses.seed_depth:
        lines += ["Depth vs width within each pre-training seed: best validation perplexity "
                  "over seeds and the seeds each design won:", "",
                  "| group | design | n | best perplexity | 95% CI | seeds won |",
                  "|---|---|---|---|---|---|"]
        for g in analyses.seed_depth:
            for design, i in g.perplexity.items():
                lines.append(f"| {cell(g.group)} | {cell(design)} | {i['n']} | "
                             f"{num(i['mean'], 2)} | {_bounds(i, 2)} | {g.wins.get(design, 0)} |")
        lines.append("")
    if analyses is not None and analyses.seed_correlations is not None:
        lines += correlation_lines(analyses.seed_correlations)
    return lines


def correlation_lines(found: SeedCorrelations) -> list[str]:
    """Markdown: perplexity vs mean downstream score within each pre-training seed, and over
    seeds."""
    lines = [("Perplexity vs downstream score within each pre-training seed: one point per "
              "checkpoint (pre-training run and step) of that seed's runs, its validation "
              "perplexity against the mean pre-trained score over the task(s) every checkpoint "
              f"has ({', '.join(found.tasks)}); n = checkpoints of the seed. Pearson r with a 95% "
              "Fisher-z interval and a permutation p-value:"), "",
             "| pre-training seed | n | r | 95% CI | p (permutation) |", "|---|---|---|---|---|"]
    for seed, c in found.per_seed.items():
        r = c.result
        if r is None or not r.defined:
            why = r.undefined if r is not None else "no correlation"
            lines.append(f"| {seed} | {len(c.points)} | undefined ({cell(why)}) | — | — |")
            continue
        lines.append(f"| {seed} | {r.n} | {num(r.r, 3)} | [{num(r.low, 3)}, {num(r.high, 3)}] | "
                     f"{format_p(r.p_permutation)} |")
    lines.append("")
    for seed, c in found.per_seed.items():  # a seed's checkpoints of several architectures
        if c.within is not None:
            lines += [f"Pre-training seed {seed}:"] + within_lines(c) + [""]
    pooled = found.pooled.result
    within = found.pooled.within
    pooled_text = (f" Pooled over all {pooled.n} checkpoints (section 5): r = {num(pooled.r, 3)}"
                   + (f" ({found.pooled.pooled_text()}; within architectures r = "
                      f"{num(within.r, 3)})" if within is not None else "") + "."
                   if pooled is not None and pooled.defined else "")
    if found.n_defined:
        lines += [(f"- Over pre-training seeds (n = {found.n_defined} seeds with a defined r, "
                   f"the seed as the unit): mean r = {num(found.mean_r, 3)} (Fisher z averaged, "
                   f"then back-transformed); range {num(found.r_min, 3)} to "
                   f"{num(found.r_max, 3)}.{pooled_text}"), ""]
    else:
        lines += [f"- No pre-training seed has a defined r.{pooled_text}", ""]
    return lines
