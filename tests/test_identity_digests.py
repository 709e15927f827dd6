"""A run's identity (minilm_jax/run_identity.py, minilm_jax/model/code_identity.py,
minilm_jax/sweep/unit_identity.py) one field at a time: each digest changes when exactly one thing
it stands for changes (a label, one split's sha256, one file's bytes in a folder of fixed file
names) and is compared against a sha256 computed here; a key only the current identity has,
earlier accepted code changes, a module imported as ``from pkg import module`` and a recorded
module deleted since are each held; a library version change goes on, said once and recorded
(held only where the user asks); a finished sweep's fine-tuning unit is held to
its task data and its checkpoint's bytes. Unit tests: nothing is trained."""

from __future__ import annotations

import hashlib
import json
import textwrap
import types
from pathlib import Path

import pytest

from minilm_jax import run_identity
from minilm_jax.errors import UserError
from minilm_jax.model import code_identity
from minilm_jax.run_identity import (CODE_CHANGES, LIBRARY_VERSION, MODEL_CODE, checkpoint_digest,
                                     differences, examples_digest, hold, shards_digest)
from minilm_jax.tasks.base import Example, TaskSpec
from minilm_jax.tasks.loaders import TaskData

SHA = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("a", "b", "c", "d")}


def test_a_key_only_the_current_identity_has_is_a_difference():
    saved = {"train.lr": 0.1, "model.arch": "roberta"}
    current = {**saved, "model.extra.rope_base": 100.0}
    assert differences(saved, current) == ["model.extra.rope_base"]
    assert differences(current, saved) == ["model.extra.rope_base"]
    # a key recorded later (inputs, version) that the record lacks is not held; locations never
    later = {**saved, "inputs.shards": SHA["a"], LIBRARY_VERSION: "9", "data.shards": "/else"}
    assert differences(saved, later) == []
    assert differences(saved, current, defaults={"model.extra.rope_base": 100.0}) == []


def task_data(labels: list[int], label_names=("neg", "pos")) -> TaskData:
    spec = TaskSpec("table", len(label_names), tuple(label_names), ("accuracy",), ("train",))
    rows = [Example(f"text {i}", None, label, f"table/train/{i}") for i, label in
            enumerate(labels)]
    return TaskData(spec, rows[:4], {"holdout": rows[6:]}, validation=rows[4:6])


def test_the_task_data_digest_changes_with_one_label_and_nothing_else_moved():
    labels = [0, 1, 0, 1, 0, 1, 1, 0]
    base = examples_digest(task_data(labels))
    assert base["rows"] == {"train": 4, "validation": 2, "holdout": 2}
    assert examples_digest(task_data(list(labels))) == base  # the same examples: the same digest
    for row in (0, 5, 7):  # one label of train, validation, holdout; same rows, same texts
        relabelled = list(labels)
        relabelled[row] = 1 - relabelled[row]
        moved = examples_digest(task_data(relabelled))
        assert moved["rows"] == base["rows"] and moved["sha256"] != base["sha256"], row
    renamed = examples_digest(task_data(labels, ("negative", "pos")))
    assert renamed["sha256"] != base["sha256"]
    assert len({base["sha256"], renamed["sha256"]}) == 2 and len(base["sha256"]) == 64


def manifest(train_sha: str, train_rows: int = 100) -> dict:
    return {"splits": {"train": {"file": "train.npy", "num_sequences": train_rows,
                                 "num_tokens": 64 * train_rows, "sha256": train_sha},
                       "validation": {"file": "validation.npy", "num_sequences": 10,
                                      "num_tokens": 640, "sha256": SHA["c"]}},
            "tokenizer": {"sha256": SHA["d"], "path": "/somewhere/tok.model"},
            "seq_len": 64, "pad_id": 1, "created": "2026-01-01"}


def test_the_shards_digest_is_each_splits_sha256_not_its_counts():
    base = shards_digest(manifest(SHA["a"]))
    expected = hashlib.sha256(json.dumps(
        {"splits": {"train": SHA["a"], "validation": SHA["c"]}, "tokenizer": SHA["d"],
         "seq_len": 64, "pad_id": 1}, sort_keys=True).encode()).hexdigest()
    assert base == expected
    assert shards_digest(manifest(SHA["b"])) != base  # one split rebuilt, the same counts
    moved = manifest(SHA["a"])
    moved["tokenizer"]["path"], moved["created"] = "/elsewhere/tok.model", "2027-01-01"
    assert shards_digest(moved) == base  # where or when: not identity


def test_a_checkpoint_folder_of_fixed_file_names_is_known_by_its_bytes(tmp_path):
    """A Hugging Face folder as ``init.checkpoint``: the same file names whatever it holds; one
    file's bytes changed (same length) is another checkpoint."""
    from minilm_jax.runs.pretrained import PretrainedRun

    folder = tmp_path / "hf"
    folder.mkdir()
    contents = {"config.json": b'{"model_type": "roberta"}', "model.safetensors": b"\x00" * 64,
                "tok.model": b"pieces"}
    for name, data in contents.items():
        (folder / name).write_bytes(data)

    def digest() -> str:
        return PretrainedRun(folder, None, "", "", 0, folder, None, hugging_face=True).digest()

    by_hand = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    before = digest()
    assert before == checkpoint_digest(by_hand, 0)
    (folder / "model.safetensors").write_bytes(b"\x00" * 63 + b"\x01")
    by_hand["model.safetensors"] = hashlib.sha256(b"\x00" * 63 + b"\x01").hexdigest()
    after = digest()
    assert after != before and after == checkpoint_digest(by_hand, 0)
    assert checkpoint_digest(by_hand, 1) != after  # another step: another checkpoint


def test_a_library_version_change_is_not_a_code_change(monkeypatch, capsys):
    saved = {"model.arch": "roberta", LIBRARY_VERSION: "1.0"}
    current = {"model.arch": "roberta", LIBRARY_VERSION: "1.1"}
    monkeypatch.delenv(code_identity.ACCEPT_ENV, raising=False)
    monkeypatch.delenv("MINILM_HOLD_LIBRARY_VERSION", raising=False)
    monkeypatch.setattr(run_identity, "_NOTED", set(), raising=False)
    went_on = dict(current)
    assert hold(saved, went_on) == []  # goes on: not a config difference, not the model's code
    assert went_on["library_version_changes"] == ["minilm-jax 1.0 -> 1.1"]
    assert CODE_CHANGES not in went_on
    again = dict(current)
    assert hold(saved, again) == [] and again["library_version_changes"] == [
        "minilm-jax 1.0 -> 1.1"]
    notes = [line for line in capsys.readouterr().out.splitlines() if "1.0" in line]
    assert len(notes) == 1 and "1.1" in notes[0]  # said once per process
    monkeypatch.setenv("MINILM_HOLD_LIBRARY_VERSION", "1")
    with pytest.raises(UserError, match=r"was written by minilm-jax 1\.0, this is minilm-jax "
                                        r"1\.1, and MINILM_HOLD_LIBRARY_VERSION=1 holds"):
        hold(saved, dict(current))


def test_accepted_code_changes_are_kept_on_every_later_resume(monkeypatch):
    module = {"file": "v.py", "sha256": SHA["a"]}
    monkeypatch.setenv(code_identity.ACCEPT_ENV, "1")
    first = {"model.arch": "v:E", MODEL_CODE: {"v": module}, CODE_CHANGES: ["older change"]}
    same = {"model.arch": "v:E", MODEL_CODE: {"v": module}}
    assert hold(first, same) == [] and same[CODE_CHANGES] == ["older change"]  # nothing new
    edited = {"model.arch": "v:E", MODEL_CODE: {"v": {"file": "v.py", "sha256": SHA["b"]}}}
    assert hold(first, edited) == []
    assert edited[CODE_CHANGES] == [
        "older change", f"v (v.py): sha256 {SHA['a'][:12]} -> {SHA['b'][:12]}"]


def test_a_deleted_recorded_module_is_a_change():
    recorded = {"helper": {"file": "/x/helper.py", "sha256": SHA["a"]},
                "v": {"file": "/x/v.py", "sha256": SHA["b"]}}
    now = {"v": {"file": "/y/v.py", "sha256": SHA["b"]}}  # moved: the same; helper: gone
    assert code_identity.code_changes(recorded, now) == [
        f"helper (/x/helper.py): sha256 {SHA['a'][:12]} -> gone"]
    assert differences({MODEL_CODE: recorded}, {MODEL_CODE: now}) == [MODEL_CODE]
    assert differences({MODEL_CODE: recorded}, {MODEL_CODE: dict(recorded)}) == []


def test_a_module_imported_as_from_package_import_module_is_part_of_the_code(
        tmp_path, monkeypatch):
    package = tmp_path / "digest_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("WIDTH = 3\n")
    (tmp_path / "digest_variant.py").write_text(textwrap.dedent("""\
        from digest_lab import helpers
        from minilm_jax.model.encoder import TransformerEncoder


        class HelpedEncoder(TransformerEncoder):
            width = helpers.WIDTH
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code = code_identity.arch_code("digest_variant:HelpedEncoder")
    helper = package / "helpers.py"
    assert sorted(code) == ["digest_lab", "digest_lab.helpers", "digest_variant"]
    assert code["digest_lab.helpers"]["sha256"] == hashlib.sha256(helper.read_bytes()).hexdigest()
    assert Path(code["digest_lab.helpers"]["file"]).resolve() == helper.resolve()


def test_a_finished_sweeps_fine_tuning_unit_is_held_to_its_task_data_and_checkpoint(
        tmp_path, monkeypatch):
    """The unit's record holds the digests of its examples and of the checkpoint it started
    from; either one changed names the unit and the input, the same ones name nothing."""
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.sweep import unit_identity
    from minilm_jax.sweep.layout import SweepLayout

    layout = SweepLayout(tmp_path)
    run = types.SimpleNamespace(name="tiny", config=pretrain_config("E16-H16-I32-L1-A2-V610"))
    run.config.data.shards = str(tmp_path / "shards")
    config = finetune_config()
    config.init.mode = "pretrained"
    workdir = tmp_path / "runs" / "tiny" / "finetune" / "table"
    workdir.mkdir(parents=True)
    data = {"rows": {"train": 4}, "sha256": SHA["a"]}
    (workdir / "config.json").write_text(json.dumps(
        {**flatten(config), "inputs.task_data": data, "inputs.init": SHA["c"]}))
    job = types.SimpleNamespace(task="table", init="pretrained", workdir=workdir, config=config)
    now = {"task_data": data, "init": SHA["c"]}
    monkeypatch.setattr(unit_identity, "finetune_jobs", lambda sweep, r, lay: [job])
    monkeypatch.setattr(unit_identity, "task_data_digest", lambda c: now["task_data"])
    monkeypatch.setattr(unit_identity, "PretrainedRun", types.SimpleNamespace(
        open=lambda checkpoint, which: types.SimpleNamespace(digest=lambda: now["init"])))

    def changed() -> list[str]:
        return unit_identity.changed_units([run], None, layout)

    assert changed() == []
    now["task_data"] = {"rows": {"train": 4}, "sha256": SHA["b"]}  # a label edited: same rows
    [line] = changed()
    assert line.startswith("runs/tiny/finetune/table (the bytes of data.dir") and (
        f"inputs.task_data: {SHA['a'][:12]} (train 4) -> {SHA['b'][:12]} (train 4)" in line), line
    now["task_data"], now["init"] = data, SHA["d"]  # the checkpoint's bytes
    [line] = changed()
    assert f"(inputs.init: {SHA['c'][:12]} -> {SHA['d'][:12]})" in line, line


def test_a_splits_segments_bytes_are_part_of_its_identity(tmp_path):
    """Packed shards whose token files are byte-identical but whose document boundaries differ
    (the segments files): another shards digest, a recomputed baselines.json (the bigram's
    contexts stop at a boundary: the cached value of the first would be stale), and a segments
    file edited after the build refused by ``verify``."""
    import numpy as np

    from minilm_jax.data.baselines import CACHE, compute_baselines, load_baselines
    from minilm_jax.data.shards import ShardError, open_split, read_manifest, write_shards
    from minilm_jax.tokenizer import TokenizerInfo

    rng = np.random.default_rng(0)
    splits = {name: rng.integers(5, 40, (6, 16)).astype(np.int32)
              for name in ("train", "validation")}
    one_doc = {name: np.ones((6, 16), np.int32) for name in splits}
    two_docs = {name: np.where(np.arange(16) < 8, 1, 2).astype(np.int32) * np.ones((6, 1), np.int32)
                for name in splits}
    info = TokenizerInfo(sha256="0" * 64, vocab_size=40)
    for folder, segments in (("a", one_doc), ("b", two_docs)):
        write_shards(tmp_path / folder, splits, pad_id=1, tokenizer=info, segments=segments)
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["splits"]["train"]["sha256"] == b["splits"]["train"]["sha256"]
    assert a["splits"]["train"]["segments_sha256"] == hashlib.sha256(
        (tmp_path / "a" / a["splits"]["train"]["segments_file"]).read_bytes()).hexdigest()
    assert run_identity.shards_digest(a) != run_identity.shards_digest(b)
    stale = load_baselines(tmp_path / "a")
    (tmp_path / "b" / CACHE).write_text(json.dumps(stale))  # the first set's cache beside b
    fresh = load_baselines(tmp_path / "b")
    assert fresh == compute_baselines(tmp_path / "b")
    assert fresh["splits"]["validation"]["bigram"] != stale["splits"]["validation"]["bigram"]
    segments_file = tmp_path / "b" / b["splits"]["validation"]["segments_file"]
    edited = np.load(segments_file)
    edited[0, -1] = 3
    np.save(segments_file, edited)
    open_split(tmp_path / "b", "validation")  # unverified: read as it is
    with pytest.raises(ShardError, match="does not match the checksum"):
        open_split(tmp_path / "b", "validation", verify=True)
