"""Fixed-shape evaluation batches in which every example counts exactly once."""

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
