"""Compute-optimal frontier: the lowest loss within each log-spaced FLOPs bin (SPEC A5, Figure 1).

Bins are anchored at 10^0: with ``n`` bins per decade, bin ``k`` holds
``10^(k/n) <= C < 10^((k+1)/n)``, so the edges do not depend on the data. Points with non-finite values or ``C <= 0`` are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PAPER_BINS_PER_DECADE = 11


@dataclass(frozen=True)
class Frontier:
    """Frontier points (one per non-empty bin), sorted by FLOPs.

    ``indices`` point into the arrays given to :func:`compute_frontier`; ``bins`` are the bin
    numbers ``k`` and ``edges`` their ``[low, high)`` FLOPs bounds.
    """

    indices: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    bins: np.ndarray
    edges: np.ndarray
    bins_per_decade: int
    n_candidates: int

    def __len__(self) -> int:
        return int(self.indices.size)


def bin_index(flops: Any, bins_per_decade: int = PAPER_BINS_PER_DECADE) -> np.ndarray:
    """Bin number of each FLOPs value (rounded to 9 decimals in log space so exact edges land in
    the bin they open)."""
    if bins_per_decade < 1:
        raise ValueError(f"bins_per_decade must be >= 1, got {bins_per_decade}")
    scaled = np.log10(np.asarray(flops, dtype=np.float64)) * bins_per_decade
    return np.floor(np.round(scaled, 9)).astype(np.int64)


def bin_edges(bins: Any, bins_per_decade: int = PAPER_BINS_PER_DECADE) -> np.ndarray:
    """``[low, high)`` FLOPs bounds of bin numbers, shape ``[n, 2]``."""
    k = np.asarray(bins, dtype=np.float64).reshape(-1, 1)
    return 10.0 ** ((k + np.array([0.0, 1.0])) / bins_per_decade)


def compute_frontier(flops: Any, loss: Any, bins_per_decade: int = PAPER_BINS_PER_DECADE
                     ) -> Frontier:
    """Lowest-loss point per non-empty log-spaced FLOPs bin (ties: the smaller FLOPs, then the
    earlier index)."""
    flops = np.asarray(flops, dtype=np.float64).reshape(-1)
    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    if flops.shape != loss.shape:
        raise ValueError(f"{flops.size} FLOPs values but {loss.size} losses")
    usable = np.flatnonzero(np.isfinite(flops) & np.isfinite(loss) & (flops > 0))
    bins = bin_index(flops[usable], bins_per_decade)
    # Sort by (bin, loss, flops, index); the first entry of each bin is its frontier point.
    order = np.lexsort((usable, flops[usable], loss[usable], bins))
    first = np.ones(order.size, dtype=bool)
    first[1:] = bins[order][1:] != bins[order][:-1]
    chosen = usable[order[first]]
    chosen_bins = bins[order[first]]
    by_flops = np.argsort(flops[chosen], kind="stable")
    chosen, chosen_bins = chosen[by_flops], chosen_bins[by_flops]
    return Frontier(indices=chosen, flops=flops[chosen], loss=loss[chosen], bins=chosen_bins,
                    edges=bin_edges(chosen_bins, bins_per_decade).reshape(-1, 2),
                    bins_per_decade=bins_per_decade, n_candidates=int(usable.size))
