"""Report settings and the names of its files."""

from __future__ import annotations

from dataclasses import dataclass

from minilm_jax.analysis.results import FLOPS_DEFINITIONS
from minilm_jax.errors import UserError

REPORT_NAME = "report.md"
LOSS_PLOT = "loss_vs_flops_{}.png"
ICER_PLOT = "icer.png"
DOWNSTREAM_PLOT = "downstream.png"


@dataclass(frozen=True)
class ReportOptions:
    """Settings of one report."""

    bins_per_decade: int = 11
    bootstrap: int = 1000
    flops: str = "paper"
    seed: int = 0
    min_points: int = 3
    confidence: float = 0.95

    def check(self) -> None:
        """Raise :class:`UserError` on a setting out of range."""
        if self.bins_per_decade < 1:
            raise UserError(f"--bins_per_decade must be >= 1, got {self.bins_per_decade}")
        if self.bootstrap < 0:
            raise UserError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if self.flops not in FLOPS_DEFINITIONS:
            raise UserError(f"--flops must be one of {', '.join(FLOPS_DEFINITIONS)}, "
                            f"got {self.flops!r}")
        if self.min_points < 2:
            raise UserError(f"--min_points must be >= 2, got {self.min_points}")
        if not 0.0 < self.confidence < 1.0:
            raise UserError(f"--confidence must lie in (0, 1), got {self.confidence}")


# ---------------------------------------------------------------------------------------------
# formatting
