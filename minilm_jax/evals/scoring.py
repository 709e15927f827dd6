"""Scoring sentences with a masked LM, three rules, batched on device.

A sentence is ``<s> w_1 .. w_n </s>`` (the tokenizer's ids and word starts,
``Tokenizer.encode_words``: a SentencePiece entry starting with ``▁`` or a WordPiece entry not
starting with ``##`` starts a word; a Hugging Face tokenizer's own word ids). Its score (higher = more acceptable) under each rule:

- ``holistic``: minus the mean cross-entropy of the tokens ``w_i`` read off the *unmasked*
  sentence in one pass (BabyBERTa-style; BabyBERTa's own average also counts ``<s>`` and
  ``</s>``, ours the sentence's tokens only);
- ``pll``: pseudo-log-likelihood, the sum over ``i`` of ``log p(w_i | sentence with w_i masked)``
  (Salazar et al., 2020);
- ``pll_word_l2r``: as ``pll``, but when scoring ``w_i`` the sub-tokens of the same word to its
  right are masked too (Kauf & Ivanova, 2023), so a multi-piece word is not scored from its own
  later pieces.

Every masked copy of a sentence goes into the same batch; batches have a fixed number of rows and
a length rounded up to a power of two, so a suite compiles one program per length (``holistic``
asks for the log-probabilities of the real tokens only, a multiple of 4 positions per row).
``TargetLogProbs`` is what a model supplies: ``fn(tokens [C, T], positions [C, P], targets [C, P])
-> log p(target) [C, P]`` (our checkpoints: :func:`mlm_target_logprobs`; a Hugging Face model can
supply its own).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from minilm_jax.errors import UserError
from minilm_jax.tokenizer import Tokenizer

RULES = ("holistic", "pll", "pll_word_l2r")
TargetLogProbs = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def provenance(info: Mapping[str, Any]) -> dict[str, Any]:
    """What a scored model's rows carry beside its step: its encoder's ``arch``, the encoder
    code changes accepted when it was trained or read (``code_changes``) and the library
    versions changed since its run was written (``library_version_changes``)."""
    return {k: info[k] for k in ("arch", "code_changes", "library_version_changes")
            if info.get(k)}


@dataclasses.dataclass(frozen=True)
class ScoringModel:
    """A masked LM ready to score: its tokenizer, log-probabilities and what it is (``workdir``,
    ``point``, ``step``, ``init`` = pretrained | random, ``validation_perplexity``); for one of
    our models also its state ``(graphdef, params, rest)`` and its run's flattened config."""

    tokenizer: Tokenizer
    logprobs: TargetLogProbs
    info: dict[str, Any]
    state: tuple[Any, Any, Any] | None = None
    run_config: dict[str, Any] | None = None
    max_len: int | None = None  # the longest input (special tokens included) the model takes


@dataclasses.dataclass(frozen=True)
class EncodedSentence:
    """A sentence's token ids (no special tokens) and which of them start a word."""

    ids: tuple[int, ...]
    word_starts: tuple[bool, ...]


def encode_sentence(tokenizer: Tokenizer, text: str) -> EncodedSentence:
    """Ids and word starts of ``text`` (the tokenizer's own normalisation applies)."""
    ids, starts = tokenizer.encode_words(text)
    return EncodedSentence(tuple(ids), tuple(starts))


def masked_rows(sentence: EncodedSentence, rule: str) -> list[tuple[int, ...]]:
    """For ``pll`` / ``pll_word_l2r``: per scored token ``i`` (0-based, specials excluded), the
    token indices masked in its copy (``i`` first)."""
    n = len(sentence.ids)
    if rule == "pll":
        return [(i,) for i in range(n)]
    if rule != "pll_word_l2r":
        raise ValueError(f"rule {rule!r} has no masked copies")
    out = []
    for i in range(n):
        end = i + 1
        while end < n and not sentence.word_starts[end]:
            end += 1
        out.append(tuple(range(i, end)))
    return out


def bucket(length: int, minimum: int = 8) -> int:
    """The padded length of a batch: the next power of two (at least ``minimum``)."""
    size = minimum
    while size < length:
        size *= 2
    return size


def _plan(lengths: Sequence[int], rows_per_sentence: Sequence[int], batch_rows: int,
          max_len: int | None = None) -> list[tuple[int, list[int]]]:
    """Batches of sentences as (padded length, sentence indices): sentences of one length bucket,
    whole (all rows of a sentence in one batch), at most ``batch_rows`` rows (a sentence with more
    rows than that gets a batch of its own)."""
    by_bucket: dict[int, list[int]] = {}
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        size = bucket(lengths[index] + 2)
        by_bucket.setdefault(min(size, max_len) if max_len else size, []).append(index)
    batches = []
    for size, indices in sorted(by_bucket.items()):
        current, rows = [], 0
        for index in indices:
            if current and rows + rows_per_sentence[index] > batch_rows:
                batches.append((size, current))
                current, rows = [], 0
            current.append(index)
            rows += rows_per_sentence[index]
        if current:
            batches.append((size, current))
    return batches


def score_sentences(sentences: Sequence[EncodedSentence], rule: str, fn: TargetLogProbs,
                    tokenizer: Tokenizer, batch_rows: int = 256, max_len: int | None = None
                    ) -> np.ndarray:
    """Each sentence's score under ``rule`` (float64 ``[N]``), computed in batches of
    ``batch_rows`` rows (masked copies for PLL rules, sentences for ``holistic``); padded
    lengths never exceed ``max_len`` (a longer sentence is the caller's to skip)."""
    if rule not in RULES:
        raise ValueError(f"unknown scoring rule {rule!r}; rules: {', '.join(RULES)}")
    if max_len and any(len(s.ids) + 2 > max_len for s in sentences):
        raise ValueError(f"a sentence is longer than the model's {max_len} tokens")
    scores = np.zeros(len(sentences), np.float64)
    lengths = [len(s.ids) for s in sentences]
    copies = ([[()] for _ in sentences] if rule == "holistic"
              else [masked_rows(s, rule) for s in sentences])
    for size, indices in _plan(lengths, [len(c) for c in copies], batch_rows, max_len):
        n_rows = sum(len(copies[i]) for i in indices)
        rows_total = max(batch_rows, n_rows)  # fixed shape; a long sentence's own bigger batch
        longest = max(lengths[i] for i in indices)
        # holistic: the real tokens' positions only (a multiple of 4: few compiled shapes)
        positions_p = -(-longest // 4) * 4 if rule == "holistic" else 1
        tokens = np.full((rows_total, size), tokenizer.pad_id, np.int32)
        positions = np.zeros((rows_total, positions_p), np.int32)
        targets = np.zeros((rows_total, positions_p), np.int32)
        weights = np.zeros((rows_total, positions_p), np.float64)
        owner = np.full(rows_total, -1)
        row = 0
        for index in indices:
            ids = sentences[index].ids
            full = np.asarray([tokenizer.bos_id, *ids, tokenizer.eos_id], np.int32)
            for masked in copies[index]:
                tokens[row, :len(full)] = full
                if rule == "holistic":
                    positions[row, :len(ids)] = np.arange(1, len(ids) + 1)
                    targets[row, :len(ids)] = ids
                    weights[row, :len(ids)] = 1.0 / max(len(ids), 1)
                else:
                    tokens[row, [m + 1 for m in masked]] = tokenizer.mask_id
                    positions[row, 0] = masked[0] + 1
                    targets[row, 0] = ids[masked[0]]
                    weights[row, 0] = 1.0
                owner[row] = index
                row += 1
        logp = np.asarray(fn(tokens, positions, targets), np.float64)
        per_row = np.sum(np.where(weights > 0, logp, 0.0) * weights, axis=1)
        np.add.at(scores, owner[:row], per_row[:row])
    bad = int(np.sum(~np.isfinite(scores)))
    if bad:
        raise UserError(f"the model's log-probabilities are not finite for {bad} of "
                        f"{len(scores)} sentences (its weights hold NaN or infinite values): "
                        "nothing is scored, no accuracy reported")
    return scores


@functools.lru_cache(maxsize=8)
def _jitted_logprobs(graphdef: Any) -> Callable:
    """One jitted program per model structure (checkpoints of one run share it)."""
    import jax
    from flax import nnx

    @jax.jit
    def logprobs(params, rest, tokens_ct, positions_cp, targets_cp):
        model = nnx.merge(graphdef, params, rest)
        return model.target_logprobs(tokens_ct, positions_cp, targets_cp)

    return logprobs


def mlm_target_logprobs(graphdef: Any, params: Any, rest: Any) -> TargetLogProbs:
    """:data:`TargetLogProbs` of one of our ``MaskedLM`` states (jitted, eval mode; one compiled
    program per batch shape)."""
    logprobs = _jitted_logprobs(graphdef)

    def fn(tokens: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.asarray(logprobs(params, rest, tokens, positions, targets))

    return fn
