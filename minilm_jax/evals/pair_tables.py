"""Minimal-pair tables from result rows: accuracy per phenomenon and overall of each model, and a
checkpoint against its random-init twin pair by pair. Used by ``python -m minilm_jax.evals`` and
by the sweep report."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from minilm_jax.storage import atomic_write_bytes

from .minimal_pairs import CHANCE, compare_paired, summarize

Row = Mapping[str, Any]


def _pct(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.1f}"


def accuracy_cell(rows: Sequence[Row]) -> str:
    """``pooled [low, high] (macro m)`` of a group of paradigm rows."""
    s = summarize(rows)
    return f"{_pct(s.pooled)} [{_pct(s.low)}, {_pct(s.high)}] (macro {_pct(s.macro)})"


def paired_cell(pretrained: Sequence[Row], random: Sequence[Row]) -> str:
    """``difference [low, high] (n) | p`` of pre-trained minus random on the same pairs."""
    c = compare_paired(pretrained, random)
    return (f"{c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] (n = {c.n:,}) | "
            f"{c.p_value:.2g}")


def chance_line() -> str:
    return (f"Chance: {CHANCE:.0f}%. Accuracy in % of scored pairs (a tie is wrong); 95% Wilson "
            "intervals; macro = the mean of the paradigms' accuracies; pre-trained − random is "
            "paired over pairs (95% t interval, McNemar's exact p).")


def model_table(pretrained: Sequence[Row], random: Sequence[Row] = ()) -> list[str]:
    """One rule of one suite: per phenomenon and overall, the model (and its random twin, with
    the paired difference)."""
    head = ("| phenomenon | paradigms | pairs scored | skipped (unk / word list / too long) | "
            "pre-trained |")
    rule = "|---|---|---|---|---|"
    if random:
        head += " random init | pre-trained − random | p (McNemar) |"
        rule += "---|---|---|"
    lines = [head, rule]
    for group in sorted({r["phenomenon"] for r in pretrained}) + ["overall"]:
        mine = [r for r in pretrained if group == "overall" or r["phenomenon"] == group]
        row = (f"| {'**overall**' if group == 'overall' else group} | {len(mine)} | "
               f"{sum(r['scored'] for r in mine):,} | {sum(r['skipped_unk'] for r in mine)} / "
               f"{sum(r['skipped_vocab'] for r in mine)} / "
               f"{sum(r.get('skipped_long', 0) for r in mine)} | {accuracy_cell(mine)} |")
        if random:
            twin = [r for r in random if group == "overall" or r["phenomenon"] == group]
            row += f" {accuracy_cell(twin)} | {paired_cell(mine, twin)} |"
        lines.append(row)
    return lines


def report_lines(rows: Sequence[Row], title: str) -> list[str]:
    """Markdown for one model's rows (``init = pretrained``) and its twin's (``random``)."""
    lines = [f"# {title}", "", chance_line(), ""]
    for suite in sorted({r["suite"] for r in rows}):
        for rule in sorted({r["rule"] for r in rows if r["suite"] == suite}):
            mine = [r for r in rows if (r["suite"], r["rule"]) == (suite, rule)]
            pre = [r for r in mine if r["init"] == "pretrained"]
            rand = [r for r in mine if r["init"] == "random"]
            step = pre[0]["step"] if pre else None
            lines += [f"## {suite}, rule `{rule}` (step {step})", "", *model_table(pre, rand), ""]
    return lines


def write_outputs(out: Path, rows: Sequence[Row], title: str) -> Path:
    """``minimal_pairs.jsonl`` (the rows) and ``minimal_pairs.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "minimal_pairs.jsonl",
                       "".join(json.dumps(dict(r)) + "\n" for r in rows).encode())
    path = out / "minimal_pairs.md"
    atomic_write_bytes(path, "\n".join(report_lines(rows, title)).encode() + b"\n")
    return path
