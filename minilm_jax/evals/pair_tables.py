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


def _pct(value: float | None, sign: str = "") -> str:
    return "—" if value is None or math.isnan(value) else f"{value:{sign}.1f}"


def accuracy_cell(rows: Sequence[Row]) -> str:
    """``pooled [low, high] (macro m)`` of a group of paradigm rows."""
    s = summarize(rows)
    return f"{_pct(s.pooled)} [{_pct(s.low)}, {_pct(s.high)}] (macro {_pct(s.macro)})"


def paired_cell(pretrained: Sequence[Row], random: Sequence[Row]) -> str:
    """``difference [low, high] (n) | p`` of pre-trained minus random on the same pairs."""
    c = compare_paired(pretrained, random)
    p = "—" if math.isnan(c.p_value) else f"{c.p_value:.2g}"
    return (f"{_pct(c.difference, '+')} [{_pct(c.low, '+')}, {_pct(c.high, '+')}] "
            f"(n = {c.n:,}) | {p}")


def chance_line() -> str:
    return (f"Chance: {CHANCE:.0f}%. Accuracy in % of scored pairs (a tie, good and bad scored "
            "exactly equal, is wrong: strict >, as BLiMP and Zorro score; ties are counted); 95% "
            "Wilson intervals; macro = the mean of the paradigms' accuracies; paradigms = those "
            "with a scored pair; pre-trained − random is paired over pairs (95% t interval, "
            "McNemar's exact p).")


def _paradigms_cell(rows: Sequence[Row]) -> str:
    s = summarize(rows)
    return f"{s.paradigms}" + (f" ({s.empty} with no scored pair)" if s.empty else "")


def tie_note(pretrained: Sequence[Row], random: Sequence[Row] = ()) -> str | None:
    """A line saying how many pairs tied (None: none did)."""
    mine, twin = summarize(pretrained).ties, summarize(random).ties if random else 0
    if not mine and not twin:
        return None
    counts = f"{mine:,} pair{'s' * (mine != 1)} tied for the pre-trained model"
    counts += f", {twin:,} for the random init" if random else ""
    return (f"Note: {counts} (good and bad scored exactly equal: identical sentences, or ones the "
            "tokenizer encodes alike); a tie is counted as wrong.")


def model_table(pretrained: Sequence[Row], random: Sequence[Row] = ()) -> list[str]:
    """One rule of one suite: per phenomenon and overall, the model (and its random twin, with
    the paired difference)."""
    head = ("| phenomenon | paradigms | pairs scored | ties | skipped (unk / word list / too long) "
            "| pre-trained |")
    rule = "|---|---|---|---|---|---|"
    if random:
        head += " random init | pre-trained − random | p (McNemar) |"
        rule += "---|---|---|"
    lines = [head, rule]
    for group in sorted({r["phenomenon"] for r in pretrained}) + ["overall"]:
        mine = [r for r in pretrained if group == "overall" or r["phenomenon"] == group]
        row = (f"| {'**overall**' if group == 'overall' else group} | {_paradigms_cell(mine)} | "
               f"{sum(r['scored'] for r in mine):,} | {summarize(mine).ties:,} | "
               f"{sum(r['skipped_unk'] for r in mine)} / "
               f"{sum(r['skipped_vocab'] for r in mine)} / "
               f"{sum(r.get('skipped_long', 0) for r in mine)} | {accuracy_cell(mine)} |")
        if random:
            twin = [r for r in random if group == "overall" or r["phenomenon"] == group]
            row += f" {accuracy_cell(twin)} | {paired_cell(mine, twin)} |"
        lines.append(row)
    return lines


def arch_text(rows: Sequence[Row]) -> str:
    """``model.arch `a` `` of rows scored from a user's variant (their ``arch``), else "" (a
    built-in encoder's rows name theirs too, and the table says nothing of it)."""
    from minilm_jax.model.registry import is_library_encoder

    archs = sorted({str(r["arch"]) for r in rows
                    if r.get("arch") and not is_library_encoder(str(r["arch"]))})
    return f"model.arch {', '.join(f'`{a}`' for a in archs)}" if archs else ""


def code_change_line(rows: Sequence[Row]) -> str | None:
    """A line naming the encoder code changes accepted for the scored model (None: none)."""
    changes = sorted({str(c) for r in rows for c in (r.get("code_changes") or ())})
    if not changes:
        return None
    return ("Note: scored with encoder code changed since the checkpoint was trained (accepted "
            f"with MINILM_ACCEPT_CODE_CHANGE=1): {'; '.join(changes)}.")


def report_lines(rows: Sequence[Row], title: str) -> list[str]:
    """Markdown for one model's rows (``init = pretrained``) and its twin's (``random``); a user's
    variant is named (its ``arch``) in the title and each section's heading."""
    arch = arch_text(rows)
    lines = [f"# {title}" + (f", {arch}" if arch else ""), "", chance_line(), ""]
    changed = code_change_line(rows)
    lines += [changed, ""] if changed else []
    for suite in sorted({r["suite"] for r in rows}):
        for rule in sorted({r["rule"] for r in rows if r["suite"] == suite}):
            mine = [r for r in rows if (r["suite"], r["rule"]) == (suite, rule)]
            pre = [r for r in mine if r["init"] == "pretrained"]
            rand = [r for r in mine if r["init"] == "random"]
            step = pre[0]["step"] if pre else None
            model = arch_text(pre)
            lines += [f"## {suite}, rule `{rule}` (step {step}{', ' + model if model else ''})",
                      "", *model_table(pre, rand), ""]
            note = tie_note(pre, rand)
            lines += [note, ""] if note else []
    return lines


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside lists and dicts) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_outputs(out: Path, rows: Sequence[Row], title: str) -> Path:
    """``minimal_pairs.jsonl`` (the rows, strict JSON: a NaN or infinity is written null) and
    ``minimal_pairs.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "minimal_pairs.jsonl", "".join(
        json.dumps(strict_json(dict(r)), allow_nan=False) + "\n" for r in rows).encode())
    path = out / "minimal_pairs.md"
    atomic_write_bytes(path, "\n".join(report_lines(rows, title)).encode() + b"\n")
    return path
