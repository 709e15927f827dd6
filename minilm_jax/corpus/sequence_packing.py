"""Greedy packing of kept windows or sentences into sequences (study A's rule).

A sequence grows by whole units, joined with single spaces, while ``words x ratio < max_len`` (words
counted by whitespace; defaults 1.2 and 128, the authors' estimate of tokens per word and the sequence
length). A unit that does not fit starts a new sequence; a unit that alone exceeds the limit becomes a
sequence of its own. Unlike the authors' ``group_sentences``, no empty sequence is emitted and the last
sequence is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Packer:
    """Accumulates units and emits packed sequences."""

    def __init__(self, max_len: int = 128, ratio: float = 1.2) -> None:
        self.max_len = max_len
        self.ratio = ratio
        self._parts: list[str] = []
        self._words = 0

    def add(self, text: str, words: int | None = None) -> str | None:
        """Add one unit; return the sequence it closed, if any."""
        words = len(text.split()) if words is None else words
        closed = None
        if self._parts and (self._words + words) * self.ratio >= self.max_len:
            closed = self.flush()
        self._parts.append(text)
        self._words += words
        return closed

    def flush(self) -> str | None:
        """Emit the sequence being built (None if empty)."""
        if not self._parts:
            return None
        text = " ".join(self._parts)
        self._parts, self._words = [], 0
        return text


def pack(units: Iterable[str], max_len: int = 128, ratio: float = 1.2) -> Iterator[str]:
    """Pack a stream of units into sequences."""
    packer = Packer(max_len, ratio)
    for unit in units:
        closed = packer.add(unit)
        if closed is not None:
            yield closed
    last = packer.flush()
    if last is not None:
        yield last
