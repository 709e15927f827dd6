"""Text normalisation shared by every stage that turns text into words or tokens (bottom layer).

One rule set, used by the corpus filter's vocabulary check (``corpus/words.py``), the downstream
vocabulary filter (``tasks/vocab_filter.py``) and, through the tokenizer's own normaliser, by tokenizer
training, shard encoding and task encoding:

- **case**: text is lowercased. The corpus filter keeps lowercased text; SentencePiece tokenizers are
  trained with the ``nmt_nfkc_cf`` rule (NFKC + case folding, stored inside the ``.model`` file), so
  every later ``encode`` -- shards, fine-tuning, export -- lowercases its input the same way.
- **contractions**: an apostrophe between two word characters is deleted (``doesn't`` -> ``doesnt``,
  ``it's`` -> ``its``), matching the AO-CHILDES vocabulary (``dont``, ``doesnt``, ``cant``); stubs
  left by pre-tokenized text (``do n't`` -> ``nt``, ``'s``, ``'re``, ``'ll``, ``'d``) are ignored.
- **hyphens** separate words (``well-known`` -> ``well known``).

Digits are the one documented difference between the two filters, as in the paper's code: the corpus
check maps digit runs to the word ``number`` (SPEC A1), the task filter deletes digits (SPEC A6).
"""

from __future__ import annotations

import re

SENTENCEPIECE_NORMALIZATION = "nmt_nfkc_cf"  # NFKC + case folding, applied by the model at encode time
CONTRACTION_STUBS = frozenset({"nt", "s", "re", "t", "d", "ll"})
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['\u2019](?=\w)")


def join_contractions(text: str) -> str:
    """Delete apostrophes between word characters (``doesn't`` -> ``doesnt``); spaces unchanged."""
    if "'" not in text and "\u2019" not in text:
        return text
    return _INNER_APOSTROPHE.sub("", text)


def normalize(text: str) -> str:
    """Model-text normalisation applied before a vocabulary check: lowercase, joined contractions."""
    return join_contractions(text.lower())
