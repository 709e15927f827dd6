"""Power of a one-sample (or paired) t-test, and the number of replicates it calls for: what a
sweep's protocol uses to fix its number of pre-training seeds before the run (``configs/sweep.py``:
the ``childes`` sweep's docstring).

The test: H0 mean = 0 against a two-sided alternative at level ``alpha``, n replicates (one
difference each: e.g. a pre-training seed's final checkpoint minus its own random twin). With a
true standardised effect d = mean / sd, the t statistic follows a noncentral t with n - 1 degrees
of freedom and noncentrality d * sqrt(n); power is its mass beyond the critical values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minilm_jax.deferred_import import Deferred

stats = Deferred("scipy.stats")  # imported at first use, not with the commands


def one_sample_t_power(effect: float, sd: float, n: int, alpha: float = 0.05,
                       two_sided: bool = True) -> float:
    """Power of the one-sample t-test of n values with true mean ``effect`` and sd ``sd``."""
    if n < 2:
        raise ValueError(f"a t-test needs at least 2 values (n = {n})")
    if not sd > 0:
        raise ValueError(f"sd must be positive (sd = {sd})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1) (alpha = {alpha})")
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    if not two_sided:
        return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, nc))
    t = stats.t.ppf(1 - alpha / 2, df)
    # the far tail is ~0 for a large effect, where scipy's cdf can return NaN
    far = float(np.nan_to_num(stats.nct.cdf(-t, df, nc), nan=0.0))
    return float(min(1.0, stats.nct.sf(t, df, nc) + far))


def replicates_for_power(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05,
                         n_max: int = 10_000) -> int:
    """The smallest n >= 2 whose two-sided one-sample t-test reaches ``power``."""
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1) (power = {power})")
    for n in range(2, n_max + 1):
        if one_sample_t_power(effect, sd, n, alpha) >= power:
            return n
    raise ValueError(f"no n <= {n_max} reaches power {power} for effect {effect}, sd {sd}")


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean (same units as ``sd``) that n replicates detect with ``power``."""
    low, high = 0.0, sd
    while one_sample_t_power(high, sd, n, alpha) < power:
        high *= 2
    for _ in range(80):  # bisection: power grows with the effect
        mid = (low + high) / 2
        low, high = (mid, high) if one_sample_t_power(mid, sd, n, alpha) < power else (low, mid)
    return high


@dataclass(frozen=True)
class PowerRow:
    """One planned test: its effect, the sd assumed, the power with ``n`` replicates and the n
    that reaches the target power."""

    label: str
    effect: float
    sd: float
    n: int
    power: float
    n_for_target: int


def power_table(effects: dict[str, float], sd: float, n: int, target: float = 0.8,
                alpha: float = 0.05) -> list[PowerRow]:
    """A :class:`PowerRow` per named effect, all with the same assumed sd."""
    return [PowerRow(label, effect, sd, n, one_sample_t_power(effect, sd, n, alpha),
                     replicates_for_power(effect, sd, target, alpha))
            for label, effect in effects.items()]
