"""The masked-LM rule that ties ``mlm.max_predictions`` to ``mlm.mask_prob``: the per-sequence cap
on predicted positions (a static shape) may not lower the asked masking rate without a word.
Measured as the expected share of the selected positions the cap drops, in a sequence whose
``model.max_len`` positions are all maskable (the worst case): the derived cap
(``mlm.max_predictions=0``) drops at most :data:`MASK_CAP_TAIL` of them; an explicit cap that drops
more than :data:`MASK_CAP_TOLERANCE` is refused before a run starts."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any


MASK_CAP_TAIL = 1e-4


MASK_CAP_TOLERANCE = 5e-3


@functools.lru_cache(maxsize=256)
def _cap_losses(mask_prob: float, max_len: int) -> tuple[tuple[float, float], ...]:
    """For every cap P in 0 .. max_len: (expected share of the selected positions past P, the
    probability that more than P are selected), from the Binomial(max_len, mask_prob) counts in
    float64 (``lgamma``; every sum adds positive terms, largest count first)."""
    n, p = int(max_len), float(mask_prob)
    log_p, log_q = math.log(p), math.log1p(-p)
    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * log_p + (n - k) * log_q) for k in range(n + 1)]
    out = [(0.0, 0.0)] * (n + 1)
    lost, above = 0.0, 0.0  # E[(X - P)+] and P(X > P), P going down from n
    for cap in range(n, -1, -1):
        out[cap] = (lost / (n * p), above)
        above += pmf[cap]  # P(X > cap - 1)
        lost += above  # E[(X - (cap - 1))+] = E[(X - cap)+] + P(X >= cap)
    return tuple(out)


def cap_loss(mask_prob: float, max_len: int, cap: int) -> tuple[float, float]:
    """(expected share of the selected positions a per-sequence ``cap`` drops, the probability
    that it binds) for ``max_len`` maskable positions each selected with ``mask_prob``."""
    return _cap_losses(float(mask_prob), int(max_len))[min(int(cap), int(max_len))]


def derived_max_predictions(mask_prob: float, max_len: int) -> int:
    """The smallest cap that drops at most :data:`MASK_CAP_TAIL` of the selected positions
    (``mlm.max_predictions=0``)."""
    losses = _cap_losses(float(mask_prob), int(max_len))
    return next(cap for cap, (lost, _) in enumerate(losses) if lost <= MASK_CAP_TAIL)


def effective_max_predictions(mlm: Any, max_len: int) -> int:
    """The positions predicted per sequence at most: ``mlm.max_predictions``, or where it is 0 the
    value derived from ``mlm.mask_prob`` at ``max_len`` tokens."""
    explicit = int(mlm.max_predictions)
    return explicit or derived_max_predictions(float(mlm.mask_prob), int(max_len))


def mask_cap_problems(fields: Mapping[str, Any]) -> list[str]:
    """One line per mask probability (``mlm.mask_prob`` and each of ``population.mask_prob``)
    whose selected positions an explicit ``mlm.max_predictions`` cuts by more than
    :data:`MASK_CAP_TOLERANCE` (fields out of range are left to their own rules)."""
    cap, max_len = fields.get("mlm.max_predictions"), fields.get("model.max_len")
    if (not isinstance(cap, int) or isinstance(cap, bool) or not isinstance(max_len, int)
            or not 1 <= cap <= max_len):
        return []
    members = list(fields.get("population.mask_prob") or ())  # a population's replace the run's
    problems = []
    for prob in members or [fields.get("mlm.mask_prob")]:
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < prob < 1.0:
            continue
        lost, binds = cap_loss(prob, max_len, cap)
        if lost <= MASK_CAP_TOLERANCE:
            continue
        accepted = next(c for c in range(cap, max_len + 1)
                        if cap_loss(prob, max_len, c)[0] <= MASK_CAP_TOLERANCE)
        what = (f"mlm.max_predictions={cap} caps mlm.mask_prob={prob}" if not members else
                f"population.mask_prob={tuple(members)!r}: mlm.max_predictions={cap} caps the "
                f"member's mask_prob={prob}")
        problems.append(
            f"{what} at model.max_len={max_len} to an expected "
            f"{100 * prob * (1 - lost):.2f}% (the cap binds in {100 * binds:.3g}% of sequences; "
            f"allowed: {100 * MASK_CAP_TOLERANCE:g}% of the asked rate lost): pass "
            f"--config.mlm.max_predictions=0 (derived: "
            f"{derived_max_predictions(prob, max_len)}) or >= {accepted}")
    return problems
