"""A task's examples for a fine-tuning config: the registry entry's loader, the SPEC A6 vocabulary
filter, per-class sampling and subsetting, then the validation split carved from train."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import ml_collections

from minilm_jax.corpus.vocab import load_word_list, obtain_aochildes_vocab
from minilm_jax.errors import UserError
from minilm_jax.tokenizer import Tokenizer

from .base import Example, TaskDataError
from .loaders import TaskData
from .registry import get_task
from .sampling import sample_per_class, split_off_fraction
from .vocab_filter import filter_examples


def load_vocabulary(spec: str) -> frozenset[str] | None:
    """The word list of ``data.vocab_filter`` ("" -> no filter, "aochildes", or a file path)."""
    if not spec:
        return None
    path = obtain_aochildes_vocab() if spec == "aochildes" else spec
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.vocab_filter: vocabulary file not found: {path}")
    return load_word_list(path)


def validation_split(examples: Sequence[Example], fraction: float, seed: int, regression: bool
                     ) -> tuple[list[Example], list[Example]]:
    """Seeded ``(train, validation)`` split of the training examples for model selection: per class
    (every class keeps at least one training example) or, for regression, a plain seeded share."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"data.validation_fraction must be in (0, 1), got {fraction}")
    if len(examples) < 2:
        raise UserError(f"{len(examples)} training example(s) cannot be split into train and "
                        "validation")
    return split_off_fraction(examples, fraction, seed, stratified=not regression)


def _subsample(examples: list[Example], limit: int, seed: int) -> list[Example]:
    if limit <= 0 or len(examples) <= limit:
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [ex for i, ex in enumerate(examples) if i in keep]


def load_task_data(config: ml_collections.ConfigDict, vocabulary: frozenset[str] | None = None
                   ) -> TaskData:
    """Examples of ``config.task`` after vocabulary filtering, per-class sampling and subsetting, with
    the validation split (``data.validation_fraction`` of train, seeded) carved out last."""
    task, data = config.task, config.data
    entry = get_task(task)
    try:
        result = entry.load(task, data)
    except (TaskDataError, KeyError, ValueError) as err:
        if isinstance(err, UserError) and not isinstance(err, TaskDataError):
            raise
        raise UserError(f"task {task}: {err}") from err
    # the vocabulary filter first: sample sizes count examples the model will see
    if vocabulary is not None:
        own = {"validation": result.validation} if result.validation else {}
        kept, report = filter_examples({"train": result.train, **own, **result.evals}, vocabulary)
        result.train = kept.pop("train")
        result.validation = kept.pop("validation", [])
        result.evals = kept
        result.filter_report = report
    if not entry.splits_per_class:  # the loader drew per-class train / test itself
        if data.train_per_class > 0:
            result.train = sample_per_class(result.train, data.train_per_class, data.sample_seed,
                                            allow_fewer=True)
        if data.eval_per_class > 0:
            result.evals = {s: sample_per_class(v, data.eval_per_class, data.sample_seed,
                                                allow_fewer=True) for s, v in result.evals.items()}
    result.train = _subsample(result.train, data.max_train_examples, data.sample_seed)
    result.evals = {s: _subsample(v, data.max_eval_examples, data.sample_seed)
                    for s, v in result.evals.items()}
    if not result.validation:  # no labelled validation split of its own: carve one from train
        result.train, result.validation = validation_split(
            result.train, data.validation_fraction, data.validation_seed, result.spec.is_regression)
    for split, examples in {"train": result.train, "validation": result.validation,
                            **result.evals}.items():
        if not examples:
            raise UserError(f"task {task}: the {split} split is empty after sampling/filtering")
        if any(ex.label is None for ex in examples):
            raise UserError(f"task {task}: the {split} split has unlabelled examples "
                            "(test splits of GLUE carry no labels; evaluate on dev)")
    return result


def unknown_punctuation(tokenizer: Tokenizer, texts: Sequence[str]) -> list[str]:
    """The punctuation and symbols of ``texts`` that ``tokenizer`` can only encode as ``<unk>``.
    Letters and digits are never listed (removing one would make another word of the rest)."""
    return [c for c in tokenizer.unknown_chars(texts) if not c.isalnum()]


def without_chars(text: str, chars: Sequence[str]) -> str:
    """``text`` with ``chars`` removed and its whitespace collapsed."""
    return " ".join(text.translate(str.maketrans("", "", "".join(chars))).split())


def drop_unknown_chars(data: TaskData, tokenizer: Tokenizer) -> list[str]:
    """Remove from every text of ``data`` (in place) the punctuation and symbols ``tokenizer`` can
    only encode as ``<unk>`` (:func:`unknown_punctuation`); the removed characters. Letters and
    digits stay: they remain ``<unk>`` and count in the summary's rate."""
    splits = {"train": data.train, "validation": data.validation, **data.evals}
    texts = [t for examples in splits.values() for ex in examples
             for t in (ex.text_a, ex.text_b) if t]
    unknown = unknown_punctuation(tokenizer, texts)
    if unknown:
        def clean(ex: Example) -> Example:
            return dataclasses.replace(ex, text_a=without_chars(ex.text_a, unknown),
                                       text_b=None if ex.text_b is None else
                                       without_chars(ex.text_b, unknown))

        data.train = [clean(ex) for ex in data.train]
        data.validation = [clean(ex) for ex in data.validation]
        data.evals = {split: [clean(ex) for ex in examples] for split, examples in data.evals.items()}
        print(f"data.drop_unknown_chars: removed {''.join(unknown)!r} (punctuation the tokenizer "
              "encodes only as <unk>) from the task's texts", flush=True)
    return unknown
