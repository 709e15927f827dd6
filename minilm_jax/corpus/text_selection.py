"""Tokenizer selection: word split ratio, ESMS, tokens per sequence, unknown-token rate; a recommended size.

Measures (study A, section A2), per tokenizer:

* **word split ratio**: mean number of sub-tokens per whitespace word, each word tokenized on its own
  (as in the authors' ``calculate_split_ratio``), over sampled corpus sequences;
* **ESMS** (exact sub-token matching score): for each word of a reference list of morpheme segmentations,
  the number of its sub-tokens (markers ``▁``/``##`` removed) that equal one of its reference morphemes,
  each morpheme matched at most once; a word kept whole or split into single characters scores 0. ESMS
  is the total matched over the total number of reference morphemes (the authors' normalisation);
* **tokens per sequence**: mean length of a sampled sequence tokenized as a whole (no special tokens);
* **unknown-token rate** on downstream texts: share of tokens that are ``<unk>``, and share of texts
  containing at least one.

Recommendation rule (per model type): among the sizes whose split ratio is within ``tolerance`` (5%) of
the lowest split ratio of the grid, the size with the highest ESMS; ties go to the smaller size.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.tokenizer import Tokenizer

MORPHEMES_RESOURCE = "morphemes.tsv"


def load_morphemes(path: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """Reference segmentations ``word<TAB>m1 m2 ...``; the project-made list by default.

    Every row must have two or more morphemes that concatenate to the word.
    """
    if path is None:
        text = resources.files("minilm_jax.corpus").joinpath(MORPHEMES_RESOURCE).read_text(encoding="utf-8")
        where = MORPHEMES_RESOURCE
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CorpusError(f"morpheme list not found: {path}") from None
        where = str(path)
    table: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        word, tab, segs = line.partition("\t")
        parts = tuple(segs.split())
        if not tab or len(parts) < 2 or "".join(parts) != word.strip():
            raise CorpusError(f"{where}:{lineno}: expected 'word<TAB>m1 m2 ...' with 2+ morphemes "
                              f"spelling the word, got {line!r}")
        table[word.strip()] = parts
    if not table:
        raise CorpusError(f"morpheme list {where} is empty")
    return table


def word_esms(pieces: Sequence[str], morphemes: Sequence[str]) -> int:
    """Morphemes of one word reproduced exactly by its sub-tokens (0 if kept whole or all single characters)."""
    pieces = [p for p in pieces if p]
    if len(pieces) <= 1 or all(len(p) == 1 for p in pieces):
        return 0
    return sum((Counter(pieces) & Counter(morphemes)).values())


def esms(tokenizer: Tokenizer, morphemes: dict[str, tuple[str, ...]]) -> float:
    """Exact sub-token matching score over a reference list (see the module docstring)."""
    matched = sum(word_esms(tokenizer.pieces(word), parts) for word, parts in morphemes.items())
    return matched / sum(len(parts) for parts in morphemes.values())


def word_split_ratio(tokenizer: Tokenizer, texts: Iterable[str], batch: int = 8192) -> float:
    """Mean sub-tokens per whitespace word, each word tokenized on its own."""
    n_words = n_tokens = 0
    words: list[str] = []
    for text in texts:
        words.extend(text.split())
        if len(words) >= batch:
            n_tokens += sum(map(len, tokenizer.encode_batch(words)))
            n_words += len(words)
            words = []
    if words:
        n_tokens += sum(map(len, tokenizer.encode_batch(words)))
        n_words += len(words)
    return n_tokens / n_words if n_words else math.nan


def tokens_per_sequence(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """Mean number of tokens of a text tokenized as a whole."""
    lengths = [len(ids) for ids in tokenizer.encode_batch(list(texts))]
    return sum(lengths) / len(lengths) if lengths else math.nan


def unk_rates(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, float]:
    """Share of unknown tokens, and of texts with at least one, among ``texts``."""
    n_tokens = n_unk = n_texts_unk = 0
    for ids in tokenizer.encode_batch(list(texts)):
        unk = sum(1 for i in ids if i == tokenizer.unk_id)
        n_tokens += len(ids)
        n_unk += unk
        n_texts_unk += unk > 0
    return {"unk_token_rate": n_unk / n_tokens if n_tokens else math.nan,
            "unk_text_rate": n_texts_unk / len(texts) if texts else math.nan}


def recommend(rows: list[dict[str, Any]], tolerance: float = 0.05) -> dict[str, int]:
    """Recommended vocabulary size per model type (rule in the module docstring)."""
    out: dict[str, int] = {}
    for model_type in sorted({r["model_type"] for r in rows}):
        group = [r for r in rows if r["model_type"] == model_type and not math.isnan(r["split_ratio"])]
        if not group:
            continue
        best_split = min(r["split_ratio"] for r in group)
        candidates = [r for r in group if r["split_ratio"] <= best_split * (1 + tolerance)]
        chosen = min(candidates, key=lambda r: (-round(r["esms"], 9), r["vocab_size"]))
        out[model_type] = int(chosen["vocab_size"])
    return out


def evaluate_tokenizer(tokenizer: Tokenizer, sample: Sequence[str], morphemes: dict[str, tuple[str, ...]],
                       downstream: dict[str, list[str]]) -> dict[str, Any]:
    """Every measure for one tokenizer."""
    row: dict[str, Any] = {
        "split_ratio": word_split_ratio(tokenizer, sample),
        "esms": esms(tokenizer, morphemes),
        "tokens_per_sequence": tokens_per_sequence(tokenizer, sample),
        "unk": {name: unk_rates(tokenizer, texts) for name, texts in downstream.items()},
    }
    all_texts = [t for texts in downstream.values() for t in texts]
    row.update(unk_rates(tokenizer, all_texts) if all_texts else {"unk_token_rate": math.nan,
                                                                  "unk_text_rate": math.nan})
    return row


def markdown_table(rows: list[dict[str, Any]], recommended: dict[str, int]) -> str:
    """The selection report as a Markdown table."""
    head = ("| tokenizer | type | vocab size | split ratio | ESMS | tokens/sequence | unk token rate "
            "| texts with unk | recommended |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        mark = "**yes**" if recommended.get(r["model_type"]) == r["vocab_size"] else ""
        lines.append(f"| {r['name']} | {r['model_type']} | {r['vocab_size']} | {r['split_ratio']:.4f} | "
                     f"{r['esms']:.4f} | {r['tokens_per_sequence']:.2f} | {_fmt(r['unk_token_rate'])} | "
                     f"{_fmt(r['unk_text_rate'])} | {mark} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4%}"


def plot(rows: list[dict[str, Any]], recommended: dict[str, int], path: Path) -> None:
    """Split ratio, ESMS and unknown-token rate against vocabulary size, one line per model type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("split_ratio", "word split ratio"), ("esms", "ESMS"), ("unk_token_rate", "unk token rate")]
    for ax, (key, label) in zip(axes, panels):
        for model_type in sorted({r["model_type"] for r in rows}):
            group = sorted((r for r in rows if r["model_type"] == model_type), key=lambda r: r["vocab_size"])
            xs = [r["vocab_size"] for r in group]
            line, = ax.plot(xs, [r[key] for r in group], marker="o", label=model_type)
            if model_type in recommended:
                rec = next(r for r in group if r["vocab_size"] == recommended[model_type])
                ax.scatter([rec["vocab_size"]], [rec[key]], s=160, facecolors="none",
                           edgecolors=line.get_color(), linewidths=2)
        ax.set_xlabel("vocabulary size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(title="circled: recommended")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def json_safe(obj: Any) -> Any:
    """Replace NaN by None for strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def dump_json(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, sort_keys=True)
