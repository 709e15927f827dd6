"""Batches as a pure function of (seed, step), a background prefetcher, and host -> device placement.

Epoch ``e`` visits the training split in the order ``permutation(seed, e)``; global batch ``s`` is the
slice ``[s*B, (s+1)*B)`` of the concatenated epoch orders. Resuming needs no iterator state, and the
same run on any number of devices or hosts sees the same global batches (each host reads only its
rows of each global batch).
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import Iterator, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding

from minilm_jax.data.shards import ShardSplit


def epoch_permutation(seed: int, epoch: int, num_sequences: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(num_sequences)


class BatchIndexer:
    """Maps a global step to the training-sequence indices of its global batch."""

    def __init__(self, seed: int, num_sequences: int, batch_size: int):
        self.seed, self.num_sequences, self.batch_size = seed, num_sequences, batch_size
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = epoch_permutation(self.seed, epoch, self.num_sequences)
        return self._cache[epoch]

    def indices(self, step: int) -> np.ndarray:
        start = step * self.batch_size
        out = np.empty(self.batch_size, np.int64)
        filled = 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.num_sequences)
            take = min(self.batch_size - filled, self.num_sequences - offset)
            out[filled:filled + take] = self._perm(epoch)[offset:offset + take]
            filled += take
        return out


def segments_of(split: ShardSplit, rows: np.ndarray, pad_id: int) -> np.ndarray:
    if split.segments is not None:
        return np.asarray(split.segments[rows], np.int32)
    return (np.asarray(split.tokens[rows]) != pad_id).astype(np.int32)


def host_rows(global_rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch's rows (all rows on a single host).

    Process ``i`` of ``n`` takes block ``i`` of ``n`` equal blocks; :func:`to_global` checks that
    the sharding puts exactly that block on this process's devices.
    """
    n, i = jax.process_count(), jax.process_index()
    if len(global_rows) % n:
        raise ValueError(f"a global batch of {len(global_rows)} rows does not split evenly over "
                         f"{n} processes")
    per = len(global_rows) // n
    return global_rows[i * per:(i + 1) * per]


def load_rows(split: ShardSplit, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    # Sorted reads are much faster on memory-mapped files; restore the order afterwards.
    order = np.argsort(rows, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    sorted_rows = rows[order]
    tokens = np.asarray(split.tokens[sorted_rows], np.int32)[inverse]
    segments = segments_of(split, sorted_rows, pad_id)[inverse]
    return {"tokens": tokens, "segments": segments}


def eval_batch(split: ShardSplit, start: int, stop: int, batch_size: int,
               pad_id: int) -> dict[str, np.ndarray]:
    """This process's part of the evaluation batch of rows ``[start, stop)`` of ``split``.

    A short last batch is padded to ``batch_size`` with copies of row ``start``; ``valid`` is 1 for
    real rows and 0 for padding. Each process reads only its own rows (:func:`host_rows`).
    Returns ``tokens``/``segments`` ``[B_host, T]`` and ``valid`` ``[B_host]`` (float32).
    """
    rows = np.arange(start, stop)
    if not 0 < len(rows) <= batch_size:
        raise ValueError(f"rows [{start}, {stop}) do not fit an evaluation batch of {batch_size}")
    padded = np.concatenate([rows, np.full(batch_size - len(rows), start, rows.dtype)])
    valid = (np.arange(batch_size) < len(rows)).astype(np.float32)
    return {**load_rows(split, host_rows(padded), pad_id), "valid": host_rows(valid)}


def train_batch(split: ShardSplit, indexer: BatchIndexer, step: int, pad_id: int,
                steps: int = 1, micro: int = 1) -> dict[str, np.ndarray]:
    """Host part of the global batches for ``steps`` consecutive steps from ``step``.

    Shapes ``[steps, micro, B_host / micro, T]``, where B_host is this process's share.
    """
    parts = [load_rows(split, host_rows(indexer.indices(step + k)), pad_id) for k in range(steps)]
    out = {}
    for name in ("tokens", "segments"):
        stacked = np.stack([p[name] for p in parts])  # [steps, B_host, T]
        s, b, t = stacked.shape
        out[name] = stacked.reshape(s, micro, b // micro, t)
    return out


def to_global(batch: dict[str, np.ndarray],
              sharding: NamedSharding | Mapping[str, NamedSharding]) -> dict[str, jax.Array]:
    """Assemble global arrays from each process's rows (:func:`host_rows`).

    ``sharding`` (one for every array, or one per key) splits one axis (the batch axis) over the
    mesh; on one process the arrays are the whole batch. With several processes, each passes only
    its block of the batch axis and the global arrays are ``process_count()`` times as long along it.
    """
    shardings = sharding if isinstance(sharding, Mapping) else {k: sharding for k in batch}
    if jax.process_count() == 1:
        return {k: jax.device_put(v, shardings[k]) for k, v in batch.items()}
    out = {}
    for k, v in batch.items():
        global_shape = process_block_shape(shardings[k], v.shape)
        out[k] = jax.make_array_from_process_local_data(shardings[k], v, global_shape)
    return out


@functools.lru_cache(maxsize=64)
def _checked_global_shape(sharding: NamedSharding, local_shape: tuple[int, ...], process: int,
                          processes: int) -> tuple[int, ...]:
    axes = [d for d, entry in enumerate(sharding.spec) if entry is not None]
    if len(axes) != 1:
        raise ValueError(f"to_global needs a sharding over exactly one (batch) axis, got "
                         f"{sharding.spec}")
    axis = axes[0]
    per = local_shape[axis]
    global_shape = list(local_shape)
    global_shape[axis] = per * processes
    global_shape = tuple(global_shape)
    blocks = {(index[axis].start or 0, global_shape[axis] if index[axis].stop is None
               else index[axis].stop)
              for index in sharding.addressable_devices_indices_map(global_shape).values()}
    held = sorted(blocks)
    lo, hi = held[0][0], held[-1][1]
    contiguous = all(a[1] == b[0] for a, b in zip(held, held[1:]))
    if (lo, hi) != (process * per, (process + 1) * per) or not contiguous:
        raise ValueError(
            f"process {process} loaded rows [{process * per}, {(process + 1) * per}) of a global "
            f"batch of {global_shape[axis]}, but the mesh puts blocks {held} on its devices: build "
            "the mesh from jax.devices() in order (devices grouped by process)")
    return global_shape


def process_block_shape(sharding: NamedSharding, local_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The global shape of an array whose batch axis is split into equal per-process blocks.

    Raises ``ValueError`` if the mesh does not put block ``process_index()`` of the batch axis on
    this process's devices (then :func:`host_rows` would have loaded the wrong rows).
    """
    return _checked_global_shape(sharding, tuple(local_shape), jax.process_index(),
                                 jax.process_count())


class Prefetcher:
    """Prepares host batches in a background thread so the device never waits on the host."""

    def __init__(self, make_batch, steps: Iterator[int], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._make_batch = make_batch
        self._steps = steps
        self._stop = threading.Event()
        self.wait_seconds = 0.0  # time the consumer spent blocked on the queue
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for step in self._steps:
                if self._stop.is_set():
                    return
                self._queue.put((step, self._make_batch(step)))
        except BaseException as err:  # surfaced in the consumer
            self._queue.put((None, err))
        self._queue.put((None, None))

    def __iter__(self):
        import time
        while True:
            start = time.perf_counter()
            step, item = self._queue.get()
            self.wait_seconds += time.perf_counter() - start
            if step is None:
                if isinstance(item, BaseException):
                    raise item
                return
            yield step, item

    def close(self) -> None:
        self._stop.set()
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
