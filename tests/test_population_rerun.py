"""A finished pre-training population (or separate run) run again trains nothing and writes
nothing new: every member's ``metrics.jsonl`` and summary are byte for byte as they were (one
``test`` record each, counted by hand), and a member that lost its summary has it rebuilt from the
population's checkpoint without a second ``test`` record."""

from __future__ import annotations

import json

from minilm_jax.train.population import members_of, with_fields
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.pretrainer import Pretrainer

from test_population import base_config

FILES = ("metrics.jsonl", "summary.json")


def test_records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()
            if json.loads(line)["split"] == "test"]


test_records.__test__ = False  # a helper, not a test


def test_a_finished_population_run_again_writes_nothing_new(word_shards, tmp_path):
    base = base_config(word_shards, **{"checkpoint.keep_fractions": ()})
    members = members_of([("a", tmp_path / "a", base),
                          ("b", tmp_path / "b", with_fields(base, {"seed": 1}))])
    first = PopulationTrainer(members, tmp_path / "pop", "map").run()
    written = {(m, f): (tmp_path / m / f).read_bytes() for m in ("a", "b") for f in FILES}
    written["pop"] = (tmp_path / "pop" / "summary.json").read_bytes()
    for m in ("a", "b"):
        tests = test_records(tmp_path / m / "metrics.jsonl")
        best = json.loads(written[(m, "summary.json")])["best"]
        assert [r["step"] for r in tests] == [best["step"]]
    events = sorted(tmp_path.rglob("events.out.tfevents*"))
    again = PopulationTrainer(members, tmp_path / "pop", "map").run()
    assert again == first
    for key, data in written.items():
        path = tmp_path / "pop" / "summary.json" if key == "pop" else tmp_path / key[0] / key[1]
        assert path.read_bytes() == data, key
    assert sorted(tmp_path.rglob("events.out.tfevents*")) == events  # no new event file
    # a member that lost its summary: rebuilt to the same best, still one test record
    (tmp_path / "b" / "summary.json").unlink()
    PopulationTrainer(members, tmp_path / "pop", "map").run()
    rebuilt = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert rebuilt["best"] == json.loads(written[("b", "summary.json")])["best"]
    assert len(test_records(tmp_path / "b" / "metrics.jsonl")) == 1
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == written[("b", "metrics.jsonl")]


def test_a_finished_run_run_again_scores_its_test_split_once(word_shards, tmp_path):
    config = base_config(word_shards, **{"checkpoint.keep_fractions": ()})
    Pretrainer(config, tmp_path).run()
    history = (tmp_path / "metrics.jsonl").read_bytes()
    Pretrainer(config, tmp_path).run()
    assert (tmp_path / "metrics.jsonl").read_bytes() == history
    assert len(test_records(tmp_path / "metrics.jsonl")) == 1
