"""Padded evaluation batches: fixed shapes, every example exactly once."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.tasks import encode_examples, load_glue, pad_to_batches, predict_in_batches
from minilm_jax.tasks.batching import bucket_length, cut_to_bucket, num_batches, unpad, used_length
from minilm_jax.tasks.metrics import accuracy


def shared_data() -> Path:
    env = os.environ.get("MINILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


class WordTokenizer:
    kind = "wordpiece"
    pad_id, bos_id, eos_id, unk_id, mask_id, vocab_size = 0, 1, 2, 3, 4, 1000

    def encode(self, text):
        return [5 + zlib.crc32(w.encode()) % 995 for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


@pytest.fixture(scope="module")
def cola_dev() -> dict[str, np.ndarray]:
    path = shared_data() / "glue"
    if not path.is_dir():
        pytest.skip("shared GLUE data not available")
    arrays = encode_examples(load_glue("cola", "dev", data_dir=path), WordTokenizer(), 64)
    arrays["row"] = np.arange(len(arrays["labels"]))
    return arrays


@pytest.mark.parametrize("batch_size", [32, 100, 1043, 2000])
def test_every_example_exactly_once(cola_dev, batch_size):
    n = len(cola_dev["labels"])
    assert n == 1043
    batches = list(pad_to_batches(cola_dev, batch_size))
    assert len(batches) == num_batches(n, batch_size) == -(-n // batch_size)
    seen = []
    for batch, mask in batches:
        assert mask.shape == (batch_size,) and mask.dtype == bool
        for name, arr in batch.items():
            assert arr.shape == (batch_size,) + cola_dev[name].shape[1:]
            assert arr.dtype == cola_dev[name].dtype
        seen.extend(batch["row"][mask].tolist())
    assert seen == list(range(n))
    assert sum(int(m.sum()) for _, m in batches) == n
    last_batch, last_mask = batches[-1]
    assert int(last_mask.sum()) == n - (len(batches) - 1) * batch_size
    assert np.all(last_mask[:last_mask.sum()]) and not np.any(last_mask[last_mask.sum():])
    # Padding rows repeat the last real row (ordinary inputs, no all-padding sequences).
    pad_rows = last_batch["segments"][~last_mask]
    assert np.all(pad_rows.sum(axis=1) > 0)


def test_metric_over_batches_equals_full_split(cola_dev):
    # A "model" that predicts label parity from the first token; metric must match the direct one.
    fn = lambda b: (b["tokens"][:, 1] % 2).astype(np.int32)
    full = fn(cola_dev)
    for bs in (32, 100):
        preds = predict_in_batches(fn, cola_dev, bs)
        assert preds.shape == (1043,)
        np.testing.assert_array_equal(preds, full)
        assert accuracy(preds, cola_dev["labels"]) == accuracy(full, cola_dev["labels"])


def test_zero_fill_and_errors():
    arrays = {"x": np.arange(5, dtype=np.float32), "y": np.ones((5, 2), np.int32)}
    batches = list(pad_to_batches(arrays, 4, fill="zero"))
    assert batches[1][0]["x"].tolist() == [4.0, 0.0, 0.0, 0.0]
    assert batches[1][0]["y"][1:].sum() == 0
    assert unpad([b["x"] for b, _ in batches], [m for _, m in batches]).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="differ"):
        list(pad_to_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2))
    with pytest.raises(ValueError, match="positive"):
        list(pad_to_batches(arrays, 0))


def test_length_buckets():
    assert [bucket_length(n, 128, 16) for n in (0, 1, 16, 17, 100, 128)] == [16, 16, 16, 32, 112, 128]
    assert bucket_length(97, 100, 16) == 100 and bucket_length(5, 100, 0) == 100
    with pytest.raises(ValueError, match=">= 0"):
        bucket_length(5, 100, -16)
    segments = np.zeros((3, 64), np.int32)
    segments[0, :5], segments[1, :21], segments[2, :3] = 1, 1, 1
    assert used_length(segments) == 21 and used_length(np.zeros((2, 8))) == 0
    assert used_length(segments[None].repeat(2, axis=0)) == 21  # [K, B, T] batches too
    batch = {"tokens": np.arange(3 * 64).reshape(3, 64), "segments": segments,
             "labels": np.array([0, 1, 2])}
    cut = cut_to_bucket(batch, 16, ("tokens", "segments"))
    assert cut["tokens"].shape == cut["segments"].shape == (3, 32)
    np.testing.assert_array_equal(cut["tokens"], batch["tokens"][:, :32])
    assert cut["labels"] is batch["labels"]
    assert cut_to_bucket(batch, 0, ("tokens", "segments"))["tokens"].shape == (3, 64)


def test_bucketed_batches_keep_every_real_token(cola_dev):
    """Cut to 16-token buckets, CoLA dev batches lose only padding columns."""
    keys = ("tokens", "segments", "token_types")
    widths = set()
    for batch, mask in pad_to_batches(cola_dev, 32):
        cut = cut_to_bucket(batch, 16, keys)
        width = cut["tokens"].shape[1]
        widths.add(width)
        assert width % 16 == 0 and width >= batch["segments"].sum(axis=1).max()
        assert not batch["segments"][:, width:].any()
        np.testing.assert_array_equal(cut["row"], batch["row"])
    assert min(widths) < 64 and len(widths) > 1
