"""The report's section on encoder variants against the built-in encoder
(:mod:`minilm_jax.analysis.variants`)."""

from __future__ import annotations

from collections.abc import Sequence

from minilm_jax.analysis.variants import DownstreamComparison, VariantComparison


def section_variants(comparisons: Sequence[VariantComparison],
                     downstream: Sequence[DownstreamComparison] = ()) -> list[str]:
    """The report's Markdown section (nothing when there is no variant to compare)."""
    if not comparisons and not downstream:
        return []
    lines = ["## Encoder variants against the built-in encoder", "",
             "Final validation perplexity, mean ± sample sd over pre-training seeds (the unit of "
             "replication); gap = variant − built-in, paired by pre-training seed (95% t interval "
             "and p; Welch where seeds do not pair). FLOPs per step: the variant's declared counts, "
             "checked against its built tree and traced matmuls (docs/models.md), so the "
             "frontier above places its runs at their true compute.", "",
             "| variant | fields | point (group) | built-in | variant | gap | "
             "FLOPs per step vs built-in |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in comparisons:
        ratio = f"{c.flops_ratio:.3f}x" if c.flops_ratio else "—"
        lines.append(f"| `{c.arch}` | {_fields(c.fields)} | {c.point} ({c.group}) | "
                     f"{c.baseline.text(2)} | "
                     f"{c.variant.text(2)} | {c.gap.text(2)} | {ratio} |")
    lines.append("")
    if downstream:
        lines += ["Downstream, pre-trained init: each pre-training run's score (x100, the mean over "
                  "its fine-tuning seeds, at its latest fine-tuned checkpoint), mean ± sample sd "
                  "over pre-training seeds; gap = variant − built-in, paired by pre-training seed.",
                  "", "| variant | fields | point (group) | task | built-in | variant | gap | "
                  "fine-tuning seeds per run |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for d in downstream:
            lines.append(f"| `{d.arch}` | {_fields(d.fields)} | {d.point} ({d.group}) | "
                         f"`{d.task}` | "
                         f"{d.baseline.text(1)} | {d.variant.text(1)} | {d.gap.text(1)} | "
                         f"{d.finetune_seeds} |")
        lines.append("")
    return lines


def _fields(text: str) -> str:
    """A variant's field values as a table cell (— where its rows record none)."""
    return f"`{text}`" if text else "—"
