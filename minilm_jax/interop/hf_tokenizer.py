"""Our tokenizers as Hugging Face fast tokenizers (``tokenizer.json``), loadable with ``AutoTokenizer``.

A SentencePiece model (unigram or BPE, optionally with byte fallback) becomes a ``tokenizers``
pipeline that encodes exactly as ``sentencepiece`` does: the model's own precompiled normalisation
map (NFKC + case folding for ``nmt_nfkc_cf``), whitespace collapsed as SentencePiece's
``remove_extra_whitespaces``, ``▁`` word boundaries (Metaspace), the pieces and scores (unigram) or
the merges recovered from the vocabulary (BPE), and RoBERTa's ``<s> A </s></s> B </s>`` around the
text. A WordPiece ``vocab.txt`` becomes BERT's pipeline with ``[CLS] A [SEP] B [SEP]``. Special
tokens and the pair layout are those of :mod:`minilm_jax.tasks.encoding`, so
``AutoTokenizer.from_pretrained(dir)(a, b)`` gives the ids fine-tuning uses.

Specials written in text are special tokens (transformers' default, and what its fill-mask pipeline
needs: ``"the <mask> sat"`` is ``▁the <mask> ▁sat``). Our SentencePiece encode reads ``<unk>``
``<s>`` ``</s>`` ``<pad>`` in text as text (WikiText writes ``<unk>``): ``split_special_tokens=True``
in the call does the same there. ``tokenizer_config.json`` names ``PreTrainedTokenizerFast``, no
``auto_map``: no custom code for the tokenizer.

Needs only the ``tokenizers`` package (a core dependency) and ``sentencepiece``'s protobuf schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from minilm_jax.errors import UserError
from minilm_jax.tokenizer import (SENTENCEPIECE_SPECIALS, WORDPIECE_SPECIALS, SentencePieceTokenizer,
                                  Tokenizer, WordPieceTokenizer)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
_SPM_UNIGRAM, _SPM_BPE = 1, 2  # sentencepiece TrainerSpec.ModelType
_SPM_UNKNOWN, _SPM_CONTROL, _SPM_USER_DEFINED = 2, 3, 4  # sentencepiece ModelProto.SentencePiece.Type


def _spm_proto(path: str):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def bpe_merges(pieces: list[str]) -> list[tuple[str, str]]:
    """The merge list of a SentencePiece BPE vocabulary (pieces in id order, i.e. merge rank).

    SentencePiece stores no merges: a piece ``p`` was created by merging two pieces ``l + r == p``
    that are both in the vocabulary. Merges are ranked by the id of the piece they create, ties by
    the ids of their parts."""
    rank = {piece: i for i, piece in enumerate(pieces)}
    merges: list[tuple[int, int, int, str, str]] = []
    for piece, pid in rank.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in rank and right in rank:
                merges.append((pid, rank[left], rank[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def _added_token(cls: Any, piece: str, special: bool) -> Any:
    """A ``tokenizers.AddedToken`` for ``piece``. The mask swallows the space before it, as
    RoBERTa's does: ``"the <mask> sat"`` is ``▁the <mask> ▁sat``, the mask standing for a whole
    ``▁word`` piece as in pre-training."""
    return cls(piece, normalized=False, special=special,
               lstrip=piece == SENTENCEPIECE_SPECIALS["mask"])


def _sentencepiece_pipeline(tok: SentencePieceTokenizer):
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE, Unigram
    from tokenizers.processors import RobertaProcessing

    proto = _spm_proto(tok.path)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    pieces = [(p.piece, p.score) for p in proto.pieces]
    byte_fallback = bool(spec.byte_fallback)
    if spec.model_type == _SPM_UNIGRAM:
        model = Unigram(pieces, unk_id=tok.unk_id, byte_fallback=byte_fallback)
    elif spec.model_type == _SPM_BPE:
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        model = BPE(vocab, bpe_merges([p for p, _ in pieces]), unk_token=spec.unk_piece,
                    fuse_unk=True, byte_fallback=byte_fallback)
    else:
        raise UserError(f"{tok.path}: SentencePiece model type {spec.model_type} (only unigram and "
                        "BPE models export to a Hugging Face tokenizer)")
    hf = HFTokenizer(model)
    steps = [normalizers.Precompiled(norm.precompiled_charsmap)] if norm.precompiled_charsmap else []
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    hf.normalizer = normalizers.Sequence(steps)
    scheme = "always" if norm.add_dummy_prefix else "never"
    metaspace = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    # SentencePiece never segments text into a control piece or <unk>, a unigram lattice would:
    # "<unk>" written in the text is cut after its first character, so no piece can span it.
    unreachable = [p.piece for p in proto.pieces
                   if p.type in (_SPM_UNKNOWN, _SPM_CONTROL) and len(p.piece) > 1]
    if spec.model_type == _SPM_UNIGRAM and unreachable:
        cut = "|".join(f"{re.escape(p[0])}(?={re.escape(p[1:])})" for p in unreachable)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [metaspace, pre_tokenizers.Split(Regex(cut), behavior="isolated")])
    else:
        hf.pre_tokenizer = metaspace
    hf.decoder = decoders.Sequence(
        ([decoders.ByteFallback()] if byte_fallback else [])
        + [decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)])
    # The specials (<s> <pad> </s> <unk> <mask>) are special tokens, matched whole in text (as
    # transformers treats every named special token); other user-defined pieces are plain ones.
    added = [p.piece for p in proto.pieces if p.type in (_SPM_CONTROL, _SPM_USER_DEFINED)]
    specials = set(SENTENCEPIECE_SPECIALS.values())
    hf.add_tokens([_added_token(AddedToken, piece, piece in specials) for piece in added])
    hf.add_special_tokens([_added_token(AddedToken, p, True) for p in specials if p not in added])
    hf.post_processor = RobertaProcessing(("</s>", tok.eos_id), ("<s>", tok.bos_id),
                                          trim_offsets=False, add_prefix_space=False)
    return hf


def _wordpiece_pipeline(tok: WordPieceTokenizer):
    from tokenizers.processors import BertProcessing

    hf = tok._hf  # noqa: SLF001 - the pipeline this tokenizer already encodes with
    hf = type(hf).from_str(hf.to_str())  # a copy: the post-processor must not leak into ours
    hf.post_processor = BertProcessing(("[SEP]", tok.eos_id), ("[CLS]", tok.bos_id))
    return hf


def _config(tok: Tokenizer, max_len: int) -> tuple[dict[str, Any], dict[str, str]]:
    if tok.kind == "sentencepiece":
        names = SENTENCEPIECE_SPECIALS
        roles = {"bos_token": names["bos"], "eos_token": names["eos"], "cls_token": names["bos"],
                 "sep_token": names["eos"]}
        extra: dict[str, Any] = {}
    else:
        names = WORDPIECE_SPECIALS
        roles = {"cls_token": names["bos"], "sep_token": names["eos"]}
        extra = {"do_lower_case": bool(getattr(tok, "lowercase", False))}
    roles |= {"unk_token": names["unk"], "pad_token": names["pad"], "mask_token": names["mask"]}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(max_len),
              "padding_side": "right", "truncation_side": "right", "clean_up_tokenization_spaces": False,
              # Specials written in text are special tokens ("the <mask> sat" for fill-mask).
              # SentencePiece reads "<unk>" "<s>" "</s>" "<pad>" in text as text:
              # tokenizer(text, split_special_tokens=True) does too (and splits "<mask>").
              "split_special_tokens": False,
              "model_input_names": ["input_ids", "attention_mask"] if tok.kind == "sentencepiece"
              else ["input_ids", "token_type_ids", "attention_mask"], **roles, **extra}
    return config, roles


def write_hf_tokenizer(tok: Tokenizer, out_dir: str | Path, *, max_len: int) -> list[str]:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` for
    ``tok`` into ``out_dir``; returns the file names. ``max_len`` is the model's longest input."""
    if isinstance(tok, SentencePieceTokenizer):
        hf = _sentencepiece_pipeline(tok)
    elif isinstance(tok, WordPieceTokenizer):
        hf = _wordpiece_pipeline(tok)
    else:
        raise UserError(f"cannot export a {type(tok).__name__} as a Hugging Face tokenizer")
    out = Path(out_dir)
    hf.save(str(out / TOKENIZER_FILE))
    config, roles = _config(tok, max_len)
    (out / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / SPECIAL_TOKENS_MAP).write_text(json.dumps(roles, indent=2, sort_keys=True) + "\n")
    return [TOKENIZER_FILE, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP]
