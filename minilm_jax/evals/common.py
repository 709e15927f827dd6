"""The evaluation seam: an evaluator is built from a config entry and maps a scoring model (a
checkpoint, its random-init twin, or a Hugging Face model) to result rows.

A config entry names its ``type`` and that type's fields, e.g. in a sweep::

    c.evals = {"zorro": {"type": "minimal_pairs", "suite": "zorro", "rules": "holistic,pll"}}

Adding an evaluation is one module with a class that has ``name``, ``FIELDS``, ``from_config``,
``check()`` and ``rows(model)``, plus a line in :data:`EVALUATORS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from minilm_jax.errors import UserError

from .perplexity import PerplexityEvaluator
from .scoring import RULES, ScoringModel, provenance


class Evaluator(Protocol):
    """Maps a scoring model to result rows (each a dict with a ``kind``); ``check`` reaches the
    evaluator's data (downloads, files) so a sweep fails before training, not after."""

    name: str

    def check(self) -> None: ...

    def rows(self, model: ScoringModel) -> list[dict[str, Any]]: ...


@dataclasses.dataclass
class MinimalPairsEvaluator:
    """Zero-shot minimal-pair accuracy per paradigm and rule (:mod:`.minimal_pairs`)."""

    name: str
    suite: str = "zorro"
    rules: tuple[str, ...] = ("holistic", "pll")
    paradigms: tuple[str, ...] = ()
    word_list: str = ""  # aochildes or a word-list file: pairs with other words are counted out
    batch_rows: int = 256
    drop_unknown_chars: bool = False  # remove punctuation the tokenizer only knows as <unk>

    FIELDS = ("suite", "rules", "paradigms", "word_list", "batch_rows", "drop_unknown_chars")

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> MinimalPairsEvaluator:
        def names(value: Any) -> tuple[str, ...]:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())

        out = cls(name, suite=str(entry.get("suite", "zorro")),
                  rules=names(entry.get("rules", "holistic,pll")),
                  paradigms=names(entry.get("paradigms", ())),
                  word_list=str(entry.get("word_list", "")),
                  batch_rows=int(entry.get("batch_rows", 256)),
                  drop_unknown_chars=bool(entry.get("drop_unknown_chars", False)))
        unknown = [r for r in out.rules if r not in RULES]
        if unknown or not out.rules:
            raise UserError(f"evals.{name}.rules: {', '.join(unknown) or '(none)'}: rules are "
                            f"{', '.join(RULES)}")
        if out.batch_rows < 1:
            raise UserError(f"evals.{name}.batch_rows={out.batch_rows}: must be >= 1")
        return out

    def check(self) -> None:
        """Open the suite and word list now (fetching a suite into the cache), so a bad entry
        fails before any training."""
        self._paradigms()
        self._words()

    def _paradigms(self):
        from .suites import open_suite

        return open_suite(self.suite, paradigms=self.paradigms)

    def _words(self) -> frozenset[str] | None:
        from minilm_jax.tasks.task_data import load_vocabulary

        return load_vocabulary(self.word_list)

    def rows(self, model: ScoringModel) -> list[dict[str, Any]]:
        from .minimal_pairs import score_paradigms

        paradigms, words = self._paradigms(), self._words()
        info = model.info
        out = []
        for rule in self.rules:
            for result in score_paradigms(paradigms, model.tokenizer, model.logprobs, rule, words,
                                          self.batch_rows, self.drop_unknown_chars,
                                          model.max_len):
                out.append(result.row(evaluation=self.name, init=info["init"],
                                      step=info["step"], point=info["point"],
                                      validation_perplexity=info.get("validation_perplexity"),
                                      **provenance(info)))
        return out


EVALUATORS = {"minimal_pairs": MinimalPairsEvaluator, "perplexity": PerplexityEvaluator}


def from_config(name: str, entry: Mapping[str, Any]) -> Evaluator:
    """The evaluator of config entry ``name`` (its ``type`` picks the class)."""
    kind = entry.get("type", "")
    if kind not in EVALUATORS:
        raise UserError(f"evals.{name}.type={kind!r}: known types: {', '.join(EVALUATORS)}")
    allowed = {"type", *EVALUATORS[kind].FIELDS}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise UserError(f"evals.{name}: unknown field(s) {', '.join(extra)}; {kind} takes "
                        f"{', '.join(sorted(allowed))}")
    return EVALUATORS[kind].from_config(name, entry)


def evaluators_from_config(entries: Mapping[str, Mapping[str, Any]] | None) -> list[Evaluator]:
    """Every evaluator of a config's ``evals`` section, in name order."""
    return [from_config(name, dict(entries[name])) for name in sorted(entries or {})]
