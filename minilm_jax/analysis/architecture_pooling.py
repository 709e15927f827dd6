"""What a correlation pooled over points of several architectures pools (a variant sweep's
checkpoints: the ``arch`` of a user's variant, a built-in encoder's rows one architecture), and the
correlation within architectures beside it (each architecture's means removed,
:func:`~minilm_jax.analysis.stats.pearson_within_groups`): a pooled r also measures which
architecture a point has when the architectures' levels differ. The words are those of the
downstream section (:mod:`minilm_jax.report.downstream`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minilm_jax.analysis import result_rows
from minilm_jax.analysis.stats import WithinGroups, pearson_within_groups
from minilm_jax.analysis.variants import BUILT_IN


def row_arch(row: Mapping[str, Any]) -> str:
    """The architecture of a results row: a user's variant's ``arch``, else :data:`BUILT_IN`
    (:func:`minilm_jax.analysis.result_rows.row_arch`)."""
    return result_rows.row_arch(row)


@dataclass(frozen=True)
class ArchitecturePooling:
    """Points per architecture (two or more) and the correlation within architectures."""

    counts: dict[str, int]  # architecture -> points, in name order
    within: WithinGroups
    unit: str = "checkpoint"

    def pooled_text(self) -> str:
        """``pools K architectures: `a` (n checkpoints), `b` (m checkpoints)``."""
        return (f"pools {len(self.counts)} architectures: "
                + ", ".join(f"`{a}` ({n} {self.unit}{'s' if n != 1 else ''})"
                            for a, n in self.counts.items()))

    def lines(self, x_name: str, y_name: str, expected_sign: int, what: str = "The r above"
              ) -> list[str]:
        """Markdown bullets: what ``what`` pools and the correlation within architectures."""
        return [f"- {what} {self.pooled_text()}: it also measures which architecture a "
                f"{self.unit} has (their levels of {x_name} and {y_name} differ). Within "
                f"architectures (each architecture's mean {x_name} and mean {y_name} removed: the "
                "pooled-within correlation; a t-test with n - K - 1 degrees of freedom): Pearson "
                f"{self.within.text()} — {self.within.agreement(expected_sign)}."]


def architecture_pooling(x: Sequence[float], y: Sequence[float], archs: Sequence[str],
                         unit: str = "checkpoint", confidence: float = 0.95
                         ) -> ArchitecturePooling | None:
    """The pooling of points ``(x, y)`` of architectures ``archs`` (one per point), or None when
    they are all of one architecture (nothing is pooled)."""
    counts = Counter(archs)
    if len(counts) < 2:
        return None
    return ArchitecturePooling(dict(sorted(counts.items())),
                               pearson_within_groups(x, y, list(archs), confidence), unit)
