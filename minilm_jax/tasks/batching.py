"""Fixed-shape evaluation batches in which every example counts exactly once, and length buckets
(batches cut to the smallest bucket that holds their longest sequence)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal

import numpy as np


def num_batches(n: int, batch_size: int) -> int:
    """Number of batches needed for ``n`` examples (the last one may be partial)."""
    return -(-n // batch_size)


def pad_to_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                   fill: Literal["edge", "zero"] = "edge",
                   ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yield ``(batch, valid_mask)`` with every batch of exactly ``batch_size`` rows.

    The last partial batch is padded: with ``fill="edge"`` (default) padding rows
    are copies of the batch's last real row, so a model sees ordinary inputs
    there (no fully-masked attention rows that could produce NaN); with
    ``"zero"`` they are zeros. ``valid_mask`` (bool ``[batch_size]``) is False on
    padding rows, which must be left out of every metric.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not arrays:
        raise ValueError("pad_to_batches needs at least one array")
    sizes = {name: np.shape(a)[0] for name, a in arrays.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ValueError(f"arrays differ in length: {sizes}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        valid = stop - start
        mask = np.zeros(batch_size, dtype=bool)
        mask[:valid] = True
        batch = {}
        for name, a in arrays.items():
            part = np.asarray(a[start:stop])
            if valid < batch_size:
                pad_shape = (batch_size - valid,) + part.shape[1:]
                pad = (np.broadcast_to(part[-1:], pad_shape) if fill == "edge"
                       else np.zeros(pad_shape, dtype=part.dtype))
                part = np.concatenate([part, pad], axis=0)
            batch[name] = part
        yield batch, mask


def unpad(outputs: Iterable[np.ndarray], masks: Iterable[np.ndarray]) -> np.ndarray:
    """Concatenate per-batch outputs keeping only the rows marked valid."""
    kept = [np.asarray(o)[np.asarray(m, dtype=bool)] for o, m in zip(outputs, masks)]
    if not kept:
        raise ValueError("unpad got no batches")
    return np.concatenate(kept, axis=0)


def predict_in_batches(fn: Callable[[dict[str, np.ndarray]], np.ndarray],
                       arrays: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    """Run ``fn`` on fixed-size padded batches; return its outputs for the ``N`` real rows."""
    outputs, masks = [], []
    for batch, mask in pad_to_batches(arrays, batch_size):
        outputs.append(np.asarray(fn(batch)))
        masks.append(mask)
    return unpad(outputs, masks)


def used_length(segments: np.ndarray) -> int:
    """Number of leading columns that hold a real token (``segments != 0``) in any row."""
    cols = np.flatnonzero(np.any(np.asarray(segments) != 0,
                                 axis=tuple(range(np.ndim(segments) - 1))))
    return int(cols[-1]) + 1 if cols.size else 0


def bucket_length(longest: int, max_len: int, bucket: int) -> int:
    """The smallest multiple of ``bucket`` that is ``>= longest`` (at least one bucket), capped at
    ``max_len``; ``bucket == 0`` always gives ``max_len``."""
    if bucket < 0:
        raise ValueError(f"bucket must be >= 0, got {bucket}")
    if bucket == 0:
        return max_len
    return min(max_len, max(1, -(-int(longest) // bucket)) * bucket)


def cut_to_bucket(batch: Mapping[str, np.ndarray], bucket: int, keys: Iterable[str],
                  segments_key: str = "segments") -> dict[str, np.ndarray]:
    """``batch`` with the last axis of ``keys`` cut to the bucket of its longest sequence (other
    arrays, e.g. labels, unchanged). Columns dropped are padding in every row."""
    keys = tuple(keys)
    max_len = np.shape(batch[segments_key])[-1]
    length = bucket_length(used_length(batch[segments_key]), max_len, bucket)
    return {k: (v[..., :length] if k in keys else v) for k, v in batch.items()}
