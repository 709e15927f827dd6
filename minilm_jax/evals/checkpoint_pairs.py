"""Minimal-pair accuracy of a pre-training run's checkpoint and of its random-init twin (the same
architecture, untrained), read pair by pair against each other: what
``python -m minilm_jax.evals`` runs and writes."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minilm_jax.errors import UserError
from minilm_jax.storage import atomic_write_bytes
from minilm_jax.tokenizer import Tokenizer, load_tokenizer

from .minimal_pairs import (CHANCE, ParadigmResult, compare_paired, score_paradigms, summarize)
from .scoring import RULES, TargetLogProbs, mlm_target_logprobs
from .suites import Paradigm


@dataclasses.dataclass
class ScoredModel:
    """One model's results under each rule."""

    init: str  # pretrained | random
    step: int
    results: dict[str, list[ParadigmResult]]
    seconds: float


def model_scorer(location: str | Path, which: str = "best", random_seed: int | None = None
                 ) -> tuple[Tokenizer, TargetLogProbs, dict[str, Any]]:
    """:func:`checkpoint_scorer` of a pre-training workdir, or the scorer of a local Hugging Face
    model folder (:func:`~minilm_jax.evals.hf_scorer.hugging_face_scorer`; ``which`` unused)."""
    from .hf_scorer import hugging_face_scorer, is_hugging_face_dir

    if is_hugging_face_dir(location):
        return hugging_face_scorer(location, random_seed)
    return checkpoint_scorer(location, which, random_seed)


def checkpoint_scorer(workdir: str | Path, which: str = "best", random_seed: int | None = None
                      ) -> tuple[Tokenizer, TargetLogProbs, dict[str, Any]]:
    """(tokenizer, scorer, description) of the run's checkpoint ``which``, or with
    ``random_seed`` of its architecture freshly initialised from that seed."""
    import jax
    from flax import nnx

    from minilm_jax.finetune.pretrained import PretrainedRun
    from minilm_jax.model.models import MaskedLM

    run = PretrainedRun.open(workdir, which)
    if not run.tokenizer_path or not Path(run.tokenizer_path).is_file():
        raise UserError(f"{workdir}: its tokenizer {run.tokenizer_path or '(none recorded)'} is "
                        "not found")
    tokenizer = load_tokenizer(run.tokenizer_path)
    run.check_tokenizer(tokenizer)
    model = MaskedLM(run.model, rngs=nnx.Rngs(params=int(random_seed or 0)))
    if random_seed is None:
        nnx.update(model, run.model_state())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.device_put((params, rest))
    info = {"workdir": str(workdir), "point": run.model.point,
            "step": 0 if random_seed is not None else run.step,
            "init": "random" if random_seed is not None else "pretrained",
            "validation_perplexity": None if random_seed is not None
            else run.validation_perplexity}
    return tokenizer, mlm_target_logprobs(graphdef, params, rest), info


def score_model(paradigms: Sequence[Paradigm], tokenizer: Tokenizer, fn: TargetLogProbs,
                rules: Sequence[str], word_list: Sequence[str] | None = None,
                batch_rows: int = 256) -> tuple[dict[str, list[ParadigmResult]], float]:
    """Every rule's results and the seconds they took."""
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise UserError(f"unknown scoring rule(s) {', '.join(unknown)}; rules: {', '.join(RULES)}")
    start = time.perf_counter()
    out = {rule: score_paradigms(paradigms, tokenizer, fn, rule, word_list, batch_rows)
           for rule in rules}
    return out, time.perf_counter() - start


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def report_lines(models: Sequence[ScoredModel], title: str) -> list[str]:
    """Markdown: per rule, accuracy per phenomenon and overall of each model (pooled over pairs,
    95% Wilson interval; macro = mean of paradigm accuracies) and, with a random-init twin, the
    pre-trained minus random difference paired over pairs (95% interval, McNemar p)."""
    lines = [f"# {title}", "", (f"Chance: {CHANCE:.0f}%. Accuracy in % of scored pairs (a tie is "
                                "wrong); 95% Wilson intervals; macro = the mean of the "
                                "paradigms' accuracies."), ""]
    by_init = {m.init: m for m in models}
    for rule in models[0].results:
        lines += [f"## Rule `{rule}`", "",
                  "| phenomenon | paradigms | pairs scored | skipped (unk / vocab) | "
                  + " | ".join(f"{m.init} (step {m.step})" for m in models)
                  + (" | pre-trained − random (paired) | p (McNemar) |" if len(by_init) == 2
                     else " |"),
                  "|---|---|---|---|" + "---|" * len(models) + ("---|---|" if len(by_init) == 2
                                                                else "")]
        first = models[0].results[rule]
        groups = sorted({r.phenomenon for r in first}) + ["overall"]
        for group in groups:
            cells = []
            chosen = {}
            for m in models:
                members = [r for r in m.results[rule]
                           if group == "overall" or r.phenomenon == group]
                chosen[m.init] = members
                s = summarize(members)[0]
                cells.append(f"{_pct(s.pooled)} [{_pct(s.low)}, {_pct(s.high)}] "
                             f"(macro {_pct(s.macro)})")
            mine = chosen[models[0].init]
            row = (f"| {'**overall**' if group == 'overall' else group} | {len(mine)} | "
                   f"{sum(r.scored for r in mine)} | {sum(r.skipped_unk for r in mine)} / "
                   f"{sum(r.skipped_vocab for r in mine)} | " + " | ".join(cells) + " |")
            if len(by_init) == 2:
                c = compare_paired(chosen["pretrained"], chosen["random"])
                row += (f" {c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] (n = {c.n}) | "
                        f"{c.p_value:.2g} |")
            lines.append(row)
        lines.append("")
    for m in models:
        pairs = sum(r.pairs for r in next(iter(m.results.values())))
        lines.append(f"- {m.init}: {len(m.results)} rule(s) over {pairs:,} pairs in "
                     f"{m.seconds:.1f} s ({len(m.results) * pairs / max(m.seconds, 1e-9):,.0f} "
                     "pairs/s)")
    return lines


def write_outputs(out: Path, models: Sequence[ScoredModel], info: dict[str, Any],
                  title: str) -> Path:
    """``minimal_pairs.jsonl`` (one row per model, rule and paradigm) and ``minimal_pairs.md``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row(run=info["workdir"], point=info["point"], init=m.init, step=m.step,
                  validation_perplexity=info["validation_perplexity"] if m.init == "pretrained"
                  else None)
            for m in models for results in m.results.values() for r in results]
    atomic_write_bytes(out / "minimal_pairs.jsonl",
                       "".join(json.dumps(row) + "\n" for row in rows).encode())
    path = out / "minimal_pairs.md"
    atomic_write_bytes(path, "\n".join(report_lines(models, title)).encode() + b"\n")
    return path
