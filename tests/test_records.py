"""Typed run records: one writer and one reader per summary, clear errors for foreign files."""

from __future__ import annotations

import json

import pytest

from minilm_jax.train.records import (FinetuneSummary, PretrainSummary, RecordError, is_done,
                                      read_finetune_summary, read_pretrain_summary)


def test_pretrain_summary_round_trip_and_absent_fields(tmp_path):
    record = PretrainSummary(status="completed", step=40, point="E32-H32-I128-L1-A2",
                             model={"hidden_dim": 32}, params={"total": 1000},
                             flops_per_sequence={"paper": 1e8, "complete": 2e8},
                             shards={"sha256": "ab", "vocab_size": 500, "path": "t.model"})
    record.write(tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert "best" not in written and written["device_memory"] is None  # None fields: kept or left
    again = read_pretrain_summary(tmp_path)
    assert again == record and again.done and is_done(tmp_path)
    record.best = {"step": 40, "validation_perplexity": 12.5}
    record.status = "preempted"
    record.write(tmp_path)
    assert read_pretrain_summary(tmp_path / "summary.json").best["validation_perplexity"] == 12.5
    assert not is_done(tmp_path)


def test_finetune_summary_is_not_a_pretrain_summary(tmp_path):
    FinetuneSummary(status="completed", task="sst2", init="random", seeds=[0, 1]).write(tmp_path)
    assert read_finetune_summary(tmp_path).seeds == [0, 1]
    with pytest.raises(RecordError, match="lacks step, params"):
        read_pretrain_summary(tmp_path)
    with pytest.raises(RecordError, match="no summary.json"):
        read_finetune_summary(tmp_path / "elsewhere")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(RecordError, match="unreadable"):
        read_finetune_summary(tmp_path)
    assert not is_done(tmp_path)
