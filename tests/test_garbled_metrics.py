"""Garbled lines of a ``metrics.jsonl`` (torn, undecodable): dropped and counted, each said where it
lay and whether its record is recomputed or lost. A resumed run recomputes the records after the
step it resumes from; a garbled line that a kept record follows lies before that step, and its
record is lost (never reported as recomputed). A finished population's member with a garbled line
has it dropped and counted in a note naming the member, when the population is run again."""

from __future__ import annotations

import json
from pathlib import Path

from minilm_jax.train.population import members_of, with_fields
from minilm_jax.train.population_trainer import PopulationTrainer
from minilm_jax.train.run_log import MetricsWriter, read_metrics

from test_pretrain import small_config


def record(step: int, split: str = "train") -> bytes:
    return json.dumps({"step": step, "split": split, "loss": 10.0 - step}).encode()


TORN = b'{"step": 3, "split": "tr\xff'


def test_cut_back_to_a_step_says_what_is_recomputed_and_what_is_lost(tmp_path, capsys):
    """Records 1-6, a torn line between 2 and 3 (before the step resumed from, 4: lost), one
    after 4 and before 5 (its step unknown: either), one after 6 (past 4: recomputed)."""
    lines = [record(1), record(2), TORN, record(3), record(4), b"not json", record(5),
             record(6), b"\xfe\xff"]
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    writer = MetricsWriter(tmp_path, tensorboard=False)
    dropped = writer.truncate_after(4)
    writer.close()
    kept = [line for line in lines
            if line.startswith(b"{\"step\"") and line != TORN and json.loads(line)["step"] <= 4]
    assert path.read_bytes() == b"\n".join(kept) + b"\n"
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert (dropped.total, dropped.later) == (len(lines) - len(kept), 3)  # 5, 6 and line 9
    assert dropped.notes("m1") == [
        "note: dropped 3 metrics record(s) after step 4 (recomputed now) of member m1",
        "note: dropped 1 garbled metrics line(s) of member m1 (line 3, between the records of "
        "steps 2 and 3): what they recorded is lost, not recomputed (the run resumes from step 4)",
        "note: dropped 1 garbled metrics line(s) of member m1 (line 6, after the record of step "
        "4): unreadable; a record of a step after 4 is recomputed now, one of step 4 or earlier "
        "is lost"]


def test_a_finished_population_members_garbled_line_is_dropped_and_noted(
        word_shards, tmp_path, capsys):
    base = small_config(word_shards, **{"train.num_steps": 4, "eval.every_steps": 2,
                                        "checkpoint.every_steps": 4,
                                        "checkpoint.keep_fractions": ()})
    members = members_of([("m0", tmp_path / "m0", base),
                          ("m1", tmp_path / "m1", with_fields(base, {"seed": 1}))])
    assert PopulationTrainer(members, tmp_path / "pop", "map").run()["status"] == "completed"
    history = tmp_path / "m1" / "metrics.jsonl"
    original = history.read_bytes()
    lines = original.splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    history.write_bytes(b"\n".join([lines[0], TORN, *lines[1:]]) + b"\n")
    untouched = (tmp_path / "m0" / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    summary = PopulationTrainer(members, tmp_path / "pop", "map").run()
    out = capsys.readouterr().out
    assert summary["status"] == "completed" and summary["step"] == 4
    assert (f"note: dropped 1 garbled metrics line(s) of member m1 (line 2, between the records "
            f"of steps {steps[0]} and {steps[1]}): what they recorded is lost, not recomputed "
            "(the run had finished)") in out.splitlines()
    assert "of member m0" not in out
    assert history.read_bytes() == original  # every record kept byte for byte, the torn line gone
    assert (tmp_path / "m0" / "metrics.jsonl").read_bytes() == untouched
