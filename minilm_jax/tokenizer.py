"""Tokenizers behind one interface: SentencePiece models (study A) and BERT WordPiece ``vocab.txt`` (study B).

``load_tokenizer(path)`` picks the implementation from the file: ``*.model`` -> SentencePiece,
``vocab.txt`` (or any ``*.txt``) -> WordPiece. Both expose the special-token ids under common names:
``bos_id`` is ``<s>``/``[CLS]``, ``eos_id`` is ``</s>``/``[SEP]``. A tokenizer lacking any of its five
special tokens is refused with :class:`TokenizerError`. ``sha256`` (of the tokenizer file) is the
tokenizer's identity, recorded in shard manifests and checked by later stages.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from minilm_jax.errors import UserError
from minilm_jax.storage import file_sha256

SENTENCEPIECE_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
WORDPIECE_SPECIALS = {"bos": "[CLS]", "pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """Identity of a tokenizer (recorded in shard manifests and checked by later stages)."""

    sha256: str
    vocab_size: int
    path: str = ""


class TokenizerError(UserError, ValueError):
    """A tokenizer file that cannot be used (missing, unreadable, or lacking special tokens)."""


class Tokenizer(abc.ABC):
    """Common interface of the project's tokenizers."""

    kind: str
    path: str
    sha256: str
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int
    mask_id: int

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id))

    @property
    def special_id_map(self) -> dict[str, int]:
        """The special tokens' ids by role, as shard manifests record them."""
        return {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id, "unk": self.unk_id,
                "mask": self.mask_id}

    @property
    def info(self) -> TokenizerInfo:
        """Identity for shard manifests."""
        return TokenizerInfo(sha256=self.sha256, vocab_size=self.vocab_size, path=self.path)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def unknown_chars(self, texts: Sequence[str]) -> list[str]:
        """The characters of ``texts`` (whitespace aside) that this tokenizer can only encode as
        ``<unk>``, e.g. punctuation absent from the text it was trained on; sorted."""
        chars = sorted({c for t in texts for c in t if not c.isspace()})
        return [c for c, ids in zip(chars, self.encode_batch(chars)) if self.unk_id in ids]

    def encode_words(self, text: str) -> tuple[list[int], list[bool]]:
        """Token ids of ``text`` and, per id, whether it starts a whitespace-separated word (the
        first always does)."""
        ids = self.encode(text)
        table = self._word_start_table
        starts = [table[i] for i in ids]
        if starts:
            starts[0] = True
        return ids, starts

    @functools.cached_property
    def _word_start_table(self) -> list[bool]:
        """Per vocabulary id, whether its entry begins a word (read once)."""
        return [self._starts_word(self.id_to_token(i)) for i in range(self.vocab_size)]

    def _starts_word(self, token: str) -> bool:
        """Whether the vocabulary entry ``token`` begins a word."""
        raise NotImplementedError

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens skipped)."""

    @abc.abstractmethod
    def pieces(self, text: str) -> list[str]:
        """Sub-token strings of ``text`` without word-boundary markers (``▁``, ``##``)."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of ``token_id``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, vocab_size={self.vocab_size})"


def _check_specials(path: Path, found: dict[str, int | None], names: dict[str, str]) -> dict[str, int]:
    missing = [names[role] for role, idx in found.items() if idx is None]
    if missing:
        raise TokenizerError(f"tokenizer {path} lacks special tokens: {', '.join(missing)} "
                             f"(needs {', '.join(names.values())})")
    return {role: int(idx) for role, idx in found.items() if idx is not None}


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model with the RoBERTa special tokens ``<s> <pad> </s> <unk> <mask>``."""

    kind = "sentencepiece"

    def __init__(self, path: str | os.PathLike) -> None:
        import sentencepiece as spm

        self.path = str(path)
        self.sha256 = file_sha256(path)
        try:
            self._sp = spm.SentencePieceProcessor(model_file=self.path)
        except (RuntimeError, OSError) as err:
            raise TokenizerError(f"cannot load SentencePiece model {path}: {err}") from None
        self.vocab_size = int(self._sp.get_piece_size())
        found = {role: self._piece_id(piece) for role, piece in SENTENCEPIECE_SPECIALS.items()}
        ids = _check_specials(Path(path), found, SENTENCEPIECE_SPECIALS)
        self.bos_id, self.pad_id, self.eos_id = ids["bos"], ids["pad"], ids["eos"]
        self.unk_id, self.mask_id = ids["unk"], ids["mask"]

    def _piece_id(self, piece: str) -> int | None:
        idx = self._sp.piece_to_id(piece)
        return idx if self._sp.id_to_piece(idx) == piece else None

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        skip = self.special_ids - {self.unk_id}
        return self._sp.decode([int(i) for i in ids if int(i) not in skip])

    def pieces(self, text: str) -> list[str]:
        out = [p.replace("\u2581", "") for p in self._sp.encode(text, out_type=str)]
        return [p for p in out if p]

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def _starts_word(self, token: str) -> bool:
        return token.startswith("\u2581")  # a lone "▁" piece starts its word


class WordPieceTokenizer(Tokenizer):
    """A BERT WordPiece vocabulary (``vocab.txt``), with BERT's normalisation and pre-tokenization.

    Lowercasing follows ``do_lower_case`` in a ``tokenizer_config.json`` next to the file if present,
    else ``lowercase`` if given, else is on when the vocabulary has no upper-case entries (uncased).
    """

    kind = "wordpiece"

    def __init__(self, path: str | os.PathLike, *, lowercase: bool | None = None) -> None:
        try:
            from tokenizers import Tokenizer as HFTokenizer
            from tokenizers import decoders, normalizers, pre_tokenizers
            from tokenizers.models import WordPiece
        except ImportError as err:
            raise TokenizerError(f"WordPiece needs the `tokenizers` package ({err}); "
                                 "pip install 'tokenizers>=0.15'") from None
        self.path = str(path)
        self.sha256 = file_sha256(path)
        try:
            entries = Path(path).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TokenizerError(f"WordPiece vocabulary {path} is not UTF-8 text") from None
        vocab: dict[str, int] = {}
        for index, token in enumerate(entries):
            vocab.setdefault(token.rstrip("\r"), index)
        if not vocab:
            raise TokenizerError(f"WordPiece vocabulary {path} is empty")
        self._tokens = [t.rstrip("\r") for t in entries]
        self.vocab_size = len(entries)
        ids = _check_specials(Path(path), {role: vocab.get(tok) for role, tok in WORDPIECE_SPECIALS.items()},
                              WORDPIECE_SPECIALS)
        self.bos_id, self.pad_id, self.eos_id = ids["bos"], ids["pad"], ids["eos"]
        self.unk_id, self.mask_id = ids["unk"], ids["mask"]
        self.lowercase = self._lowercase(Path(path), vocab, lowercase)
        hf = HFTokenizer(WordPiece(vocab, unk_token=WORDPIECE_SPECIALS["unk"], max_input_chars_per_word=100))
        hf.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                   strip_accents=None, lowercase=self.lowercase)
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        hf.decoder = decoders.WordPiece(prefix="##")
        hf.add_special_tokens(list(WORDPIECE_SPECIALS.values()))
        self._hf = hf

    @staticmethod
    def _lowercase(path: Path, vocab: dict[str, int], given: bool | None) -> bool:
        config = path.parent / "tokenizer_config.json"
        if config.is_file():
            try:
                value = json.loads(config.read_text()).get("do_lower_case")
            except json.JSONDecodeError:
                value = None
            if isinstance(value, bool):
                return value
        if given is not None:
            return given
        return not any(t != t.lower() for t in vocab if not (t.startswith("[") and t.endswith("]")))

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        skip = self.special_ids - {self.unk_id}
        return self._hf.decode([int(i) for i in ids if int(i) not in skip], skip_special_tokens=False)

    def pieces(self, text: str) -> list[str]:
        return [t[2:] if t.startswith("##") else t
                for t in self._hf.encode(text, add_special_tokens=False).tokens]

    def id_to_token(self, token_id: int) -> str:
        return self._tokens[int(token_id)]

    def _starts_word(self, token: str) -> bool:
        return not token.startswith("##")


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int) -> Tokenizer:
    p = Path(path)
    if p.suffix == ".model":
        return SentencePieceTokenizer(p)
    if p.suffix == ".txt":
        return WordPieceTokenizer(p)
    raise TokenizerError(f"unknown tokenizer file {path}: expected a SentencePiece .model or a WordPiece vocab.txt")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load ``*.model`` (SentencePiece) or ``vocab.txt`` (WordPiece); a folder holding one is accepted."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidates = sorted(p.glob("*.model")) or sorted(p.glob("vocab.txt"))
        if len(candidates) != 1:
            raise TokenizerError(f"tokenizer folder {p} must hold exactly one *.model or a vocab.txt")
        p = candidates[0]
    if not p.is_file():
        raise TokenizerError(f"tokenizer file not found: {p}")
    stat = p.stat()
    return _load_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)
