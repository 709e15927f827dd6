"""The report's section on encoder variants against the built-in encoder
(:mod:`minilm_jax.analysis.variants`)."""

from __future__ import annotations

from collections.abc import Sequence

from minilm_jax.analysis.variants import VariantComparison


def section_variants(comparisons: Sequence[VariantComparison]) -> list[str]:
    """The report's Markdown section (nothing when there is no variant to compare)."""
    if not comparisons:
        return []
    lines = ["## Encoder variants against the built-in encoder", "",
             "Final validation perplexity, mean ± sample sd over pre-training seeds (the unit of "
             "replication); gap = variant − built-in, paired by pre-training seed (95% t interval "
             "and p; Welch where seeds do not pair). FLOPs per step: the variant's declared counts, "
             "checked against its built tree and traced matmuls (docs/models.md), so the "
             "frontier above places its runs at their true compute.", "",
             "| variant | point (group) | built-in | variant | gap | FLOPs per step vs built-in |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in comparisons:
        ratio = f"{c.flops_ratio:.3f}x" if c.flops_ratio else "—"
        lines.append(f"| `{c.arch}` | {c.point} ({c.group}) | {c.baseline.text(2)} | "
                     f"{c.variant.text(2)} | {c.gap.text(2)} | {ratio} |")
    lines.append("")
    return lines
