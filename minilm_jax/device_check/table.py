"""The target table: a row per target (both sides' values, the target, met) and its text."""

from __future__ import annotations

from typing import Callable

from minilm_jax.device_check.targets import Figure, Sweep
from minilm_jax.device_check.trees import Side


def target_rows(figs: list[Figure], values: dict[tuple[str, str], dict[str, float]]) -> list[dict]:
    """A row per figure's target: both sides' values, the target, whether this tree meets it
    (a value with no target: target and met None)."""
    rows = []
    for fig in figs:
        for t in fig.targets:
            now, base = (values.get((fig.name, s), {}).get(t.key) for s in ("now", "baseline"))
            rows.append({"figure": fig.name, "what": t.what, "key": t.key, "target": t.limit,
                         "at_least": t.at_least, "baseline": base, "now": now,
                         "sides": list(fig.sides),
                         "met": None if now is None or t.limit is None else
                         (now >= t.limit if t.at_least else now <= t.limit)})
    return rows


def sweep_row(measured: dict[str, list[tuple[str, float]]], total: int, sweep: Sweep) -> dict:
    """Each side's hours over the points both sides measured; met is known once every point was
    measured, or when those already exceed the target."""
    now, base = dict(measured.get("now", [])), dict(measured.get("baseline", []))
    shared = [p for p in now if p in base]
    hours = {side: sum(rows[p] for p in shared) if shared else None
             for side, rows in (("now", now), ("baseline", base))}
    limit = sweep.target.limit
    known = hours["now"] is not None and (len(shared) == total or hours["now"] > limit)
    return {"figure": sweep.name, "key": "hours",
            "what": f"{sweep.target.what} ({len(shared)} of {total} points)", "target": limit,
            "at_least": False, **hours, "met": hours["now"] <= limit if known else None,
            "points": {"total": total, "both": len(shared), "now": len(now),
                       "baseline": len(base)}}


def table(rows: list[dict], shows: dict[str, Callable[[float], str]], sides: list[Side]) -> str:
    """The target table: figure, baseline, now, target, met (of this tree; "-" for a value
    with no target)."""
    lines = [["figure", *(f"{s.name} ({s.label})" for s in sides), "target", "met"]]
    for r in rows:
        show = shows[r["key"]]
        lines.append([f"{r['figure']}: {r['what']}",
                      *(show(r[s.name]) if r[s.name] is not None else
                        "not measured" if s.name in r.get("sides", (s.name,)) else "n/a"
                        for s in sides),
                      *(("-", "-") if r["target"] is None else (
                          f"{'>=' if r['at_least'] else '<='} {show(r['target'])}",
                          {True: "yes", False: "no", None: "not known"}[r["met"]]))])
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
