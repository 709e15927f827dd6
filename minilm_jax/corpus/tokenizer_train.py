"""The ``train-tokenizer`` stage: SentencePiece BPE / unigram models, or BERT WordPiece vocabularies,
for a grid of vocabulary sizes.

Models are trained on a seeded reservoir sample of the corpus (the same sample for every model).
SentencePiece models get the RoBERTa special tokens ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3,
``<mask>``=4 and are written as ``{type}-{size}.model`` (+ a readable ``.vocab``); WordPiece
vocabularies (the ``tokenizers`` trainer, BERT's uncased normalisation) list ``[CLS]``, ``[PAD]``,
``[SEP]``, ``[UNK]``, ``[MASK]`` at the same ids and are written as ``wordpiece-{size}.txt``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.manifest import atomic_output_dir, check_output_free, write_stage_manifest
from minilm_jax.text_norm import SENTENCEPIECE_NORMALIZATION
from minilm_jax.corpus.progress import progress_bar
from minilm_jax.corpus.sources import ReadStats, SourceSpec, fingerprint, iter_documents

SENTENCEPIECE_TYPES = ("bpe", "unigram")
MODEL_TYPES = SENTENCEPIECE_TYPES + ("wordpiece",)
WORDPIECE_ORDER = ("[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]")  # ids 0..4, as <s> <pad> </s> <unk> <mask>


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """SentencePiece training options shared by every grid point."""

    character_coverage: float = 0.9995
    byte_fallback: bool = False
    normalization: str = SENTENCEPIECE_NORMALIZATION  # lowercases at encode time (text_norm)
    threads: int = 1
    max_sentence_length: int = 1 << 16


def reservoir_sample(texts: Iterable[str], n: int, seed: int) -> list[str]:
    """A uniform sample of ``n`` texts (all of them if fewer), in stream order; memory O(n)."""
    rng = random.Random(seed)
    chosen: list[tuple[int, str]] = []
    for index, text in enumerate(texts):
        if index < n:
            chosen.append((index, text))
        else:
            slot = rng.randint(0, index)
            if slot < n:
                chosen[slot] = (index, text)
    return [text for _, text in sorted(chosen)]


def sample_corpus(specs: list[SourceSpec], n: int, seed: int, on_decode_error: str = "skip",
                  stats: ReadStats | None = None) -> list[str]:
    """Reservoir sample across several sources (``stats`` counts what was read and skipped); an
    empty corpus is an error."""
    stats = stats if stats is not None else ReadStats()

    def stream() -> Iterable[str]:
        for spec in specs:
            yield from iter_documents(spec, on_decode_error=on_decode_error, stats=stats)

    sample = reservoir_sample(stream(), n, seed)
    if not sample:
        raise CorpusError(f"corpus is empty: no documents in {', '.join(map(str, specs))}")
    return sample


def train_sentencepiece(texts: list[str], vocab_size: int, model_type: str,
                        cfg: TrainConfig = TrainConfig()) -> bytes:
    """Train one SentencePiece model in memory; return the serialized model."""
    import sentencepiece as spm

    if model_type not in SENTENCEPIECE_TYPES:
        raise CorpusError(f"model type must be one of {SENTENCEPIECE_TYPES}, got {model_type!r}")
    if texts and all(len(t.encode("utf-8")) > cfg.max_sentence_length for t in texts):
        # SentencePiece skips such lines and then fails with "INTERNAL ... !sentences_.empty()"
        longest = max(len(t.encode("utf-8")) for t in texts)
        raise CorpusError(
            f"every document is longer than the {cfg.max_sentence_length:,} bytes a tokenizer "
            f"trains on (the longest: {longest:,} bytes): put one document or paragraph per line")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            bos_id=0, pad_id=1, eos_id=2, unk_id=3, bos_piece="<s>", pad_piece="<pad>", eos_piece="</s>",
            unk_piece="<unk>", user_defined_symbols=["<mask>"], character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback, normalization_rule_name=cfg.normalization,
            num_threads=max(1, cfg.threads), max_sentence_length=cfg.max_sentence_length,
            shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].rpartition("] ")[2]
        raise CorpusError(f"SentencePiece could not train a {model_type} model of size {vocab_size}: "
                          f"{reason}") from None
    return model.getvalue()


def train_wordpiece(texts: list[str], vocab_size: int) -> bytes:
    """Train an uncased BERT WordPiece vocabulary in memory; return ``vocab.txt``'s bytes."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    hf = Tokenizer(WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(WORDPIECE_ORDER),
                               show_progress=False)
    hf.train_from_iterator(texts, trainer)
    vocab = hf.get_vocab()
    if len(vocab) < vocab_size:
        raise CorpusError(f"WordPiece could not train a vocabulary of size {vocab_size}: the corpus "
                          f"sample gives only {len(vocab)} entries")
    tokens = sorted(vocab, key=vocab.get)
    if tuple(tokens[:len(WORDPIECE_ORDER)]) != WORDPIECE_ORDER:
        raise CorpusError(f"WordPiece trainer put the special tokens at {tokens[:5]}")
    return ("\n".join(tokens) + "\n").encode("utf-8")


def model_name(model_type: str, vocab_size: int) -> str:
    return f"{model_type}-{vocab_size}"


def _write_vocab_listing(model_path: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):.6g}" for i in range(sp.get_piece_size())]
    model_path.with_suffix(".vocab").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_train_tokenizers(sources: list[SourceSpec], out_dir: str | os.PathLike, *, sizes: list[int],
                         model_types: list[str], sample: int = 100_000, seed: int = 0,
                         cfg: TrainConfig = TrainConfig(), overwrite: bool = False,
                         progress: bool = False, on_decode_error: str = "skip") -> dict[str, Any]:
    """Train every (type, size) of the grid on one corpus sample; write models and a manifest."""
    if not sizes:
        raise CorpusError("no vocabulary sizes given")
    for model_type in model_types:
        if model_type not in MODEL_TYPES:
            raise CorpusError(f"model type must be one of {MODEL_TYPES}, got {model_type!r}")
    check_output_free(out_dir, overwrite)
    inputs = {"sources": [fingerprint(s) for s in sources]}
    stats = ReadStats()
    texts = sample_corpus(sources, sample, seed, on_decode_error, stats)
    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}  # a grid point SentencePiece cannot train (e.g. too large a size)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        grid = [(t, s) for t in model_types for s in sorted(sizes)]
        for model_type, size in progress_bar(progress, grid, desc="train-tokenizer"):
            name = model_name(model_type, size)
            path = tmp / (f"{name}.txt" if model_type == "wordpiece" else f"{name}.model")
            try:
                path.write_bytes(train_wordpiece(texts, size) if model_type == "wordpiece"
                                 else train_sentencepiece(texts, size, model_type, cfg))
            except CorpusError as err:
                skipped[name] = str(err)
                continue
            if model_type != "wordpiece":
                _write_vocab_listing(path)
            models[name] = {"file": path.name, "model_type": model_type, "vocab_size": size}
        if not models:
            raise CorpusError("no tokenizer of the grid could be trained: "
                              + "; ".join(skipped.values()))
        params = {"sizes": sorted(sizes), "model_types": list(model_types), "sample": sample, "seed": seed,
                  "train": dataclasses.asdict(cfg),
                  "special_tokens": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
                  if set(model_types) <= set(SENTENCEPIECE_TYPES)
                  else {t: i for i, t in enumerate(WORDPIECE_ORDER)}}
        manifest = write_stage_manifest(tmp, "train-tokenizer", inputs=inputs, parameters=params,
                                        counts={"sample_texts": len(texts),
                                                **stats.undecodable_counts()},
                                        extra={"models": models, "skipped": skipped})
    for entry in models.values():
        entry["sha256"] = manifest["outputs"][entry["file"]]["sha256"]
    return {"models": models, "skipped": skipped, "sample_texts": len(texts),
            "out_dir": str(out_dir), "skipped_note": stats.skipped_note()}
