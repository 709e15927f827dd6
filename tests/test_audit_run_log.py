"""Audit of the run log and the batch indexers (2026-11-29): ``minilm_jax.train.run_log`` (the
metrics writer and reader, garbled-line handling and its notes, ETA and durations, plain progress
lines, TensorBoard scalars) and ``minilm_jax.train.batches`` (per-seed epoch orders, every row
once per epoch, the last partial batch, host batches, micro-batches, the per-process block check
of a mesh, the prefetcher). 38 mutants planted, 18 survived the existing tests (1 equivalent);
each test here checks numbers against a hand count, numpy, or a scripted clock."""

from __future__ import annotations

import itertools
import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import pytest

from minilm_jax.data.shards import ShardSplit
from minilm_jax.train import batches as batch_lib
from minilm_jax.train.run_log import (Dropped, EtaClock, MetricsWriter, duration, has_record,
                                      plain_progress, read_metrics)


def _rec(step: float, split: str = "train", **values: Any) -> bytes:
    return json.dumps({"step": step, "split": split, **values}).encode()


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def _truncate(workdir: Path, step: int | None) -> Dropped:
    writer = MetricsWriter(workdir, tensorboard=False)
    dropped = writer.truncate_after(step)
    writer.close()
    return dropped


# ----------------------------------------------------------------------------- run_log: truncation

def test_a_record_at_the_step_is_kept_and_garbled_lines_around_it_are_classified(
        tmp_path: Path) -> None:
    """Cut back to step 4: line 3 (between records 3 and 4, 4 <= 4 follows) is lost; line 5
    (after 4, before 5: 4 is not past 4) is unsure; records 4 (train and validation) are kept."""
    lines = [_rec(3), b"{torn", _rec(4), b"also torn", _rec(5), _rec(4, "validation")]
    path = tmp_path / "metrics.jsonl"
    _write(path, lines)
    dropped = _truncate(tmp_path, 4)
    assert (dropped.later, dropped.lost, dropped.unsure) == (
        1, ("line 2, between the records of steps 3 and 4",),
        ("line 4, after the record of step 4",))
    assert dropped.total == 3 and bool(dropped)
    assert path.read_bytes() == b"\n".join([_rec(3), _rec(4), _rec(4, "validation")]) + b"\n"
    assert [(r["step"], r["split"]) for r in read_metrics(path)] == [
        (3, "train"), (4, "train"), (4, "validation")]


def test_a_garbled_line_after_a_record_at_the_step_and_before_one_at_it_is_lost() -> None:
    """Lines: record 4, garbled, validation record 4 (step 4 <= 4 follows): lost, not later."""
    lines = [l.decode() for l in (_rec(4), b"x", _rec(4, "validation"))]
    assert Dropped.of(lines, 4) == Dropped(4, 0, ("line 2, between the records of steps 4 and 4",))


def test_only_unsure_garbled_lines_still_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [_rec(1), _rec(2), b'{"step": 3, "spl'])
    dropped = _truncate(tmp_path, 2)
    assert (dropped.total, dropped.later, len(dropped.unsure)) == (1, 0, 1)
    assert path.read_bytes() == _rec(1) + b"\n" + _rec(2) + b"\n"


def test_a_finished_run_keeps_every_record_and_drops_every_garbled_line(tmp_path: Path) -> None:
    """``step`` None: nothing is later; a garbled first line (a record follows) is lost, the last
    one unsure; both leave the file; lists and numbers are not records."""
    path = tmp_path / "metrics.jsonl"
    _write(path, [b"[1, 2]", _rec(1), _rec(9), b"3"])
    dropped = _truncate(tmp_path, None)
    assert (dropped.later, len(dropped.lost), len(dropped.unsure)) == (0, 1, 1)
    assert path.read_bytes() == _rec(1) + b"\n" + _rec(9) + b"\n"
    notes = dropped.notes()
    assert len(notes) == 2 and "line 1, before the record of step 1" in notes[0]
    assert notes[1].endswith("what they recorded is lost (the run had finished)")


def test_resuming_from_step_zero_says_so_and_steps_are_written_as_given(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [b"torn", _rec(0), _rec(2.5, "validation")])
    dropped = _truncate(tmp_path, 0)
    assert dropped.later == 1
    assert dropped.notes("m0")[1] == (
        "note: dropped 1 garbled metrics line(s) of member m0 (line 1, before the record of "
        "step 0): what they recorded is lost, not recomputed (the run resumes from step 0)")
    lines = [l.decode() for l in (_rec(2), b"?", _rec(2.5), b"!")]
    assert Dropped.of(lines, 9).lost == ("line 2, between the records of steps 2 and 2.5",)
    assert Dropped.of(lines, 9).unsure == ("line 4, after the record of step 2.5",)


def test_a_record_without_a_step_counts_as_later_and_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [_rec(1), b'{"split": "train", "loss": 1.0}', _rec(2)])
    dropped = _truncate(tmp_path, 5)
    assert (dropped.later, dropped.lost, dropped.unsure) == (1, (), ())
    assert path.read_bytes() == _rec(1) + b"\n" + _rec(2) + b"\n"


# -------------------------------------------------------------------------------- run_log: reading

def test_reading_keeps_the_first_place_of_a_repeat_and_skips_undecodable_objects(
        tmp_path: Path) -> None:
    """A line whose JSON string holds a byte that is not UTF-8 is garbled (never a record with a
    replacement character); a repeated (step, split) replaces the value at its first place."""
    path = tmp_path / "metrics.jsonl"
    _write(path, [_rec(1, loss=3.0), _rec(1, "validation", loss=2.0), _rec(2, loss=1.0),
                  b'{"step": 7, "split": "tr\xffain"}', _rec(1, loss=0.5)])
    got = [(r["step"], r["split"], r["loss"]) for r in read_metrics(path)]
    assert got == [(1, "train", 0.5), (1, "validation", 2.0), (2, "train", 1.0)]
    assert has_record(tmp_path, 1, "validation") and not has_record(tmp_path, 2, "validation")
    assert not has_record(tmp_path, 7, "tr\ufffdain")
    dropped = _truncate(tmp_path, 2)
    assert dropped.lost == ("line 4, between the records of steps 2 and 1",)
    assert (dropped.later, dropped.unsure) == (0, ())


# ---------------------------------------------------------------------------- run_log: TensorBoard

def _event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TFRecord event files in ``folder`` (length, crc, payload, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(folder.iterdir()):
        data, i = file.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_gets_one_curve_per_number_and_per_member(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path)
    writer.write(3, "train", {"loss": np.float32(2.5), "score": [0.25, 0.75],
                              "alive": [True, False], "name": "x"})
    writer.write(5, "validation", {"loss": 1.5})
    writer.close()
    assert _event_scalars(tmp_path / "tensorboard") == {
        "train/loss": [(3, 2.5)], "train/score/member_0": [(3, 0.25)],
        "train/score/member_1": [(3, 0.75)], "validation/loss": [(5, 1.5)]}
    assert read_metrics(tmp_path / "metrics.jsonl")[0] == {
        "step": 3, "split": "train", "loss": 2.5, "score": [0.25, 0.75], "alive": [True, False],
        "name": "x"}


# ------------------------------------------------------------------ run_log: durations, ETA, lines

def test_durations_round_and_roll_over_at_the_minute_and_the_hour() -> None:
    seconds = [-3, 45.6, 59.4, 59.6, 60, 3599.4, 3600, 3661]
    assert [duration(s) for s in seconds] == [
        "0s", "46s", "59s", "1m00s", "1m00s", "59m59s", "1h00m", "1h01m"]


def test_progress_lines_show_the_eta_until_the_last_step() -> None:
    assert plain_progress("x", 99, 100, {"a": "1"}, 61) == "x step 99/100 (99%): a 1, ETA 1m01s"
    assert plain_progress("x", 100, 100, {"a": "1"}, 61) == "x step 100/100 (100%): a 1"
    assert plain_progress("x", 2, 3, {}, None) == "x step 2/3 (67%): "


def test_eta_is_the_steps_left_at_the_rate_since_the_origin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted clock: origin (step 10, t=10 s); step 10 again (t=25 s) has no rate; step 20 at
    t=40 s: 10 steps in 30 s, 80 left: 240 s; step 30 at t=70 s: 70 left at 20 steps / 60 s."""
    ticks: Iterator[float] = iter([10.0, 25.0, 40.0, 70.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    clock = EtaClock()
    assert [clock.eta(10, 100), clock.eta(10, 100), clock.eta(20, 100), clock.eta(30, 100)] == [
        None, None, 240.0, 70 * 60 / 20]


# ---------------------------------------------------------------------------------------- batches

def test_each_epoch_visits_every_row_once_in_its_own_seeded_order() -> None:
    """Global batches of 4 over 10 rows: steps 0-9 are epochs 0-3 back to back, epoch ``e`` in
    the order ``permutation(seed, e)``; orders differ across seeds and epochs."""
    orders = {}
    for seed in (0, 1, 2):
        indexer = batch_lib.BatchIndexer(seed, 10, 4)
        rows = np.concatenate([indexer.indices(s) for s in range(10)])
        for epoch in range(4):
            order = rows[10 * epoch:10 * (epoch + 1)]
            assert sorted(order.tolist()) == list(range(10))
            expected = np.random.Generator(np.random.PCG64([seed, epoch])).permutation(10)
            np.testing.assert_array_equal(order, expected)
            orders[(seed, epoch)] = tuple(order.tolist())
        np.testing.assert_array_equal(indexer.indices(2), rows[8:12])  # back to epoch 0 / 1
    assert len(set(orders.values())) == len(orders)


def _patch_processes(monkeypatch: pytest.MonkeyPatch, count: int, index: int) -> None:
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)


def _split(n: int, t: int = 3, segments: bool = False) -> ShardSplit:
    """Row ``i`` holds ``10 * i, 10 * i + 1, ...``; the last slot of odd rows is padding (1)."""
    tokens = (10 * np.arange(n)[:, None] + np.arange(t)[None, :]).astype(np.int32)
    tokens[1::2, -1] = 1
    seg = np.repeat(np.arange(2, n + 2, dtype=np.int32)[:, None], t, axis=1)
    return ShardSplit(tokens=tokens, segments=seg if segments else None)


def test_the_last_evaluation_batch_on_the_second_of_two_hosts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows [8, 11) padded to 4 with row 8: host 1 of 2 holds block 1, rows 10 and 8 (padding)."""
    _patch_processes(monkeypatch, 2, 1)
    np.testing.assert_array_equal(batch_lib.host_rows(np.arange(8)), [4, 5, 6, 7])
    split = _split(12)
    batch = batch_lib.eval_batch(split, 8, 11, 4, pad_id=1)
    assert batch["valid"].tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(batch["tokens"], split.tokens[[10, 8]])
    np.testing.assert_array_equal(batch["segments"], [[1, 1, 1], [1, 1, 1]])
    odd = batch_lib.eval_batch(split, 0, 4, 4, pad_id=1)  # rows 2, 3: row 3 ends in padding
    np.testing.assert_array_equal(odd["segments"], [[1, 1, 1], [1, 1, 0]])
    assert odd["valid"].tolist() == [1.0, 1.0]


def test_a_full_evaluation_batch_and_a_short_one_count_real_rows() -> None:
    split = _split(5)
    assert batch_lib.eval_batch(split, 0, 4, 4, pad_id=1)["valid"].tolist() == [1, 1, 1, 1]
    assert batch_lib.eval_batch(split, 4, 5, 4, pad_id=1)["valid"].tolist() == [1, 0, 0, 0]


def test_train_batches_hold_consecutive_steps_split_into_contiguous_micro_batches() -> None:
    """Two steps from step 3, micro-batches of 3 of a batch of 6; segments follow the rows
    (unsorted reads), zero where a token is the pad id 1 (token 0 is not padding)."""
    for segments in (False, True):
        split = _split(7, segments=segments)
        indexer = batch_lib.BatchIndexer(5, 7, 6)
        batch = batch_lib.train_batch(split, indexer, 3, pad_id=1, steps=2, micro=2)
        assert batch["tokens"].shape == (2, 2, 3, 3)
        for k, j in itertools.product(range(2), range(2)):
            rows = indexer.indices(3 + k)[3 * j:3 * (j + 1)]
            np.testing.assert_array_equal(batch["tokens"][k, j], split.tokens[rows])
            want = (np.repeat(rows[:, None] + 2, 3, axis=1) if segments
                    else (split.tokens[rows] != 1).astype(np.int32))
            np.testing.assert_array_equal(batch["segments"][k, j], want)


class _Blocks:
    """A stand-in sharding: the batch axis split over this process's devices as ``blocks``."""

    def __init__(self, blocks: list[tuple[int, int]]) -> None:
        self.spec, self.blocks = ("data", None), blocks

    def addressable_devices_indices_map(self, shape: tuple[int, ...]) -> dict[int, tuple]:
        return {d: (slice(a, b), slice(None)) for d, (a, b) in enumerate(self.blocks)}


def test_the_mesh_must_put_this_processes_contiguous_block_on_its_devices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Process 1 of 2, 4 local rows: global rows 8; its devices must hold exactly [4, 8)."""
    _patch_processes(monkeypatch, 2, 1)
    assert batch_lib.process_block_shape(_Blocks([(4, 6), (6, 8)]), (4, 5)) == (8, 5)
    for wrong in ([(0, 2), (2, 4)], [(4, 5), (7, 8)], [(2, 4), (6, 8)]):
        with pytest.raises(ValueError, match="build the mesh"):
            batch_lib.process_block_shape(_Blocks(wrong), (4, 5))


def test_the_prefetcher_yields_in_order_raises_the_makers_error_and_stops_on_close() -> None:
    def make(step: int) -> int:
        if step == 3:
            raise KeyError("bad row")
        return step * step

    prefetcher = batch_lib.Prefetcher(make, iter(range(10)), depth=2)
    got: list[tuple[int, int]] = []
    with pytest.raises(KeyError, match="bad row"):
        for item in prefetcher:
            got.append(item)
    assert got == [(0, 0), (1, 1), (2, 4)]

    endless = batch_lib.Prefetcher(lambda step: step, itertools.count(), depth=1)
    assert next(iter(endless)) == (0, 0)
    endless.close()
    endless._thread.join(timeout=5)  # returns as soon as the producer sees the stop
    assert not endless._thread.is_alive()
