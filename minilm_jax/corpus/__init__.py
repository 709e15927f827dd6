"""Corpus and tokenizer pipeline: raw text -> constrained corpus -> tokenizers -> token shards.

Modules (each with one job):

* ``sources``: text sources (local files, AO-CHILDES, WikiText, stage outputs, TFDS), streamed;
* ``vocab`` / ``words``: reduced vocabularies (AO-CHILDES download + cache) and the check's word rules;
* ``constrained`` / ``sequence_packing`` / ``filter_stage``: study A's filter, packing and the
  ``filter`` stage;
* ``control``: the unconstrained control sample;
* ``tokenizer_train`` / ``text_selection`` / ``select_stage``: SentencePiece grids and the selection
  report;
* ``shards_build`` / ``subsets`` / ``overlap``: token shards, study B subsets, token overlap;
* ``manifest`` / ``progress`` / ``errors``: stage manifests and atomic outputs, progress bars, ``CorpusError``.

The tokenizer interface used by the rest of the project is ``minilm_jax.tokenizer``.
Command line: ``python -m minilm_jax.corpus --help``; benchmark: ``python -m minilm_jax.corpus.bench``.
"""

from minilm_jax.corpus.errors import CorpusError

__all__ = ["CorpusError"]
