"""Number and Markdown-table formatting shared by the report's sections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def sci(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.2e}".replace("e+", "e").replace("e0", "e").replace("e-0", "e-")


def num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def code(text: Any) -> str:
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return cell(value)


# ---------------------------------------------------------------------------------------------
# analyses


def effect(e: Any, digits: int = 1) -> str:
    """A :class:`~minilm_jax.analysis.replication.SeedEffect` as ``mean [low, high]``."""
    if e.n == 0:
        return "—"
    if getattr(e, "zero_spread", False):
        return f"{e.mean:+.{digits}f} (all n = {e.n} equal: zero spread, no interval)"
    if not e.defined:
        return f"{e.mean:+.{digits}f} (no interval, n = {e.n})"
    return f"{e.mean:+.{digits}f} [{e.low:+.{digits}f}, {e.high:+.{digits}f}]"


def interval(i: dict[str, float], digits: int = 1) -> str:
    """A t interval dict (:func:`~minilm_jax.analysis.stats.t_interval`) as ``mean [low, high]``."""
    if not i or i.get("n", 0) == 0:
        return "—"
    if i["n"] < 2 or not math.isfinite(i["low"]):
        return f"{i['mean']:.{digits}f} (n = {i['n']})"
    if i.get("sd") == 0.0:  # a zero-width interval would read as certainty
        return f"{i['mean']:.{digits}f} (all n = {i['n']} equal: zero spread, no interval)"
    return f"{i['mean']:.{digits}f} [{i['low']:.{digits}f}, {i['high']:.{digits}f}]"
