"""Run locations on object stores: whole-object writes and rewritten metrics files."""

import json

from minilm_jax import storage
from minilm_jax.storage import atomic_write_json
from minilm_jax.train import metrics as metrics_lib


def test_remote_locations_are_recognised():
    assert storage.is_remote("gs://bucket/run") and not storage.is_remote("runs/x")
    assert str(storage.run_path("gs://bucket/run/config.json")) == "gs://bucket/run/config.json"


def test_metrics_on_an_object_store_are_rewritten_whole(tmp_path, monkeypatch):
    """Object stores cannot append: records are kept and the file is rewritten at each flush,
    after reading what an earlier session wrote (resume)."""
    monkeypatch.setattr(metrics_lib, "is_remote", lambda location: True)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train"}) + "\n")
    writer = metrics_lib.MetricsWriter(tmp_path)
    assert writer._tb is None
    writer.write(2, "train", {"loss": 1.5})
    writer.flush()
    writer.write(3, "validation", {"loss": 1.2})
    writer.close()
    records = metrics_lib.read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (3, "validation")]


def test_atomic_write_to_a_url_is_one_whole_write(monkeypatch, tmp_path):
    written = {}

    class FakeRemote:
        def __init__(self, location):
            self.location = location

        @property
        def parent(self):
            return self

        def mkdir(self, **_):
            pass

        def write_bytes(self, data):
            written[self.location] = data

    monkeypatch.setattr(storage, "run_path", FakeRemote)
    atomic_write_json("gs://bucket/run/summary.json", {"a": 1})
    assert json.loads(written["gs://bucket/run/summary.json"]) == {"a": 1}
