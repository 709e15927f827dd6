"""A run's identity is what determines its numbers (minilm_jax/run_identity.py): the bytes of what
it reads, the code of a user's encoder (transitively), its effective config; not where its files
are. Each case below was a silent wrong result before: an edited labels file reused, a helper
module of a variant edited under a resumed run, a checkpoint's variant field changed at
fine-tuning, an explicit architecture dropped, a moved run refused."""

from __future__ import annotations

import csv
import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import ml_collections
import pytest

from conftest import shared_path, write_line_shards

from minilm_jax import run_identity
from minilm_jax.configs.finetune import get_config as finetune_config
from minilm_jax.errors import UserError
from minilm_jax.finetune.finetuner import Finetuner
from minilm_jax.finetune.run import run_finetune

SEQ = 64
POINT = "E16-H16-I32-L1-A2-V610"
ROTARY = "encoder_variants:RotaryEncoder"


def pretrain(root: Path, name: str, **fields) -> Path:
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.settings.command_line import apply_variant_fields
    from minilm_jax.train.pretrainer import Pretrainer

    config = get_config(POINT)
    config.model.max_len = SEQ
    config.data.shards = str(root / "shards")
    config.train.num_steps, config.train.batch_size, config.train.progress = 6, 16, False
    config.eval.every_steps, config.eval.batch_size = 6, 50
    config.checkpoint.every_steps = 6
    config.mlm.max_predictions = 16
    config.mesh.data = 1
    extra = {k.split(".", 2)[2]: v for k, v in fields.items() if k.startswith("model.extra.")}
    for key, value in fields.items():
        if key == "seed":
            config.seed = value
        elif not key.startswith("model.extra."):
            section, field = key.split(".")
            config[section][field] = value
    apply_variant_fields(config, [(k, str(v)) for k, v in extra.items()])
    Pretrainer(config, root / name).run()
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 600-piece tokenizer and shards of real text; a short pre-training of the built-in
    encoder (and another of it with another seed) and of a rotary variant with its field
    ``rope_base`` at 100 (not its default)."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("identity")
    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12]
    news = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()[:2000]
    (root / "tok.model").write_bytes(train_sentencepiece(lines + news, 600, "bpe"))
    write_line_shards(root / "shards", load_tokenizer(root / "tok.model"), lines, SEQ)
    return {"root": root, "pre": pretrain(root, "pre"), "reseeded": pretrain(root, "re", seed=1),
            "rotary": pretrain(root, "rotary", **{"model.arch": ROTARY,
                                                  "model.extra.rope_base": 100.0})}


def labels_file(path: Path, per_class: int = 10) -> Path:
    names = {"1": "world", "2": "sports", "3": "business", "4": "scitech"}
    rows: dict[str, list] = {}
    for label, title, body in csv.reader(shared_path("ag_news", "train.csv").open(
            encoding="utf-8")):
        if len(rows.setdefault(label, [])) < per_class:
            rows[label].append([f"{title} {body}", names[label]])
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"], *[r for v in rows.values() for r in v]])
    return path


def table_config(checkpoint: Path, labels: Path, **fields) -> ml_collections.ConfigDict:
    config = finetune_config("table")
    config.init.checkpoint, config.init.mode = str(checkpoint), "both"
    config.data.dir, config.data.max_len, config.data.pad_buckets = str(labels), SEQ, 0
    config.data.cv_folds = 2
    config.train.seeds, config.train.epochs, config.train.progress = (0,), 1, False
    config.train.batch_size, config.eval.batch_size, config.mesh.data = 8, 32, 1
    for key, value in fields.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


def test_a_labels_file_edited_or_grown_is_refused_never_reused(runs, tmp_path, capsys):
    """The same command after one label was edited in place: before, 'finished earlier' and the
    old table (40/40 per class where the file had 41/39); now one line naming data.dir and what
    changed, nothing rewritten. The file restored: reused again. Two rows appended: refused, the
    rows counted."""
    labels = labels_file(tmp_path / "labels.csv")
    # the pre-trained init only: the task data's identity is checked the same way for either init
    config = table_config(runs["pre"], labels, init__mode="pretrained")
    run_finetune(config, str(tmp_path / "ft"))
    summary = tmp_path / "ft" / "s0-fold0" / "summary.json"
    before = summary.read_bytes()
    original = labels.read_text(encoding="utf-8")
    lines = original.splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",sports"  # a world row relabelled
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as refused:
        run_finetune(config, str(tmp_path / "ft"))
    message = str(refused.value)
    assert "the bytes of data.dir=" + str(labels) + " changed" in message, message
    assert "inputs.task_data" in message and "\n" not in message
    assert summary.read_bytes() == before  # the good result is left as it was

    labels.write_text(original, encoding="utf-8")  # the same bytes again: reused
    capsys.readouterr()
    run_finetune(config, str(tmp_path / "ft"))
    assert "finished earlier" in capsys.readouterr().out
    assert summary.read_bytes() == before

    with labels.open("a", encoding="utf-8") as handle:  # two rows more
        handle.write("a new headline about a match,sports\nmarkets fell again today,business\n")
    with pytest.raises(UserError) as grown:
        run_finetune(config, str(tmp_path / "ft"))
    recorded = json.loads((summary.parent / "config.json").read_text())["inputs.task_data"]
    assert recorded["rows"]["train"] + recorded["rows"]["validation"] + recorded["rows"][
        "holdout"] == 40
    assert "holdout 21" in str(grown.value) or "holdout 20" in str(grown.value)
    assert "inputs.task_data" in str(grown.value)


def test_a_moved_pretraining_and_fine_tuning_folder_is_the_same_run(runs, tmp_path, capsys):
    """Paths are locations, not identity: the pre-training run and the fine-tuning folder moved
    together (another disk, a cluster) fine-tune as 'finished earlier'; a checkpoint of another
    step (another input) is refused by its bytes."""
    base = tmp_path / "a"
    base.mkdir()
    shutil.copytree(runs["pre"], base / "pre")
    labels = labels_file(base / "labels.csv")
    config = table_config(base / "pre", labels, init__mode="pretrained")
    run_finetune(config, str(base / "ft"))
    moved = tmp_path / "b"
    base.rename(moved)
    capsys.readouterr()
    again = table_config(moved / "pre", moved / "labels.csv", init__mode="pretrained")
    run_finetune(again, str(moved / "ft"))
    assert "finished earlier" in capsys.readouterr().out
    recorded = json.loads((moved / "ft" / "s0-fold0" / "config.json").read_text())
    assert recorded["init.checkpoint"] == str(moved / "pre")  # where it is now: not identity
    # the pre-training re-run into the same folder (another seed): another checkpoint
    shutil.rmtree(moved / "pre")
    shutil.copytree(runs["reseeded"], moved / "pre")
    with pytest.raises(UserError, match=r"the bytes of init\.checkpoint=.* changed \(inputs\.init"):
        run_finetune(again, str(moved / "ft"))


def test_a_variant_field_or_architecture_asked_at_fine_tuning_is_held_to_the_checkpoint(
        runs, tmp_path, capsys):
    """A rotary checkpoint trained with rope_base=100: fine-tuning it with rope_base=500 (the
    same tree, another function) was built silently; now refused, or with init.partial taken as
    asked and recorded. model_overrides 'extra.rope_base=...' goes the same way. An explicit
    --config.model.arch=roberta over the variant's checkpoint is refused (it was dropped)."""
    from minilm_jax.settings.command_line import apply_variant_fields

    labels = labels_file(tmp_path / "labels.csv")
    config = table_config(runs["rotary"], labels, init__mode="pretrained", data__cv_folds=0)
    run = Finetuner(config, tmp_path / "same", "pretrained")  # the checkpoint's own: fits
    assert run.model_cfg.extra_value("rope_base") == 100.0
    run.lock.release()

    changed = table_config(runs["rotary"], labels, init__mode="pretrained", data__cv_folds=0)
    changed.model.arch = ROTARY
    apply_variant_fields(changed, [("rope_base", "500")])
    with pytest.raises(UserError, match=r"holds a variant of other fields: variant fields "
                                        r"model\.extra\.rope_base 100\.0 \(checkpoint\) vs 500\.0"):
        Finetuner(changed, tmp_path / "changed", "pretrained")
    assert not (tmp_path / "changed").exists()
    overridden = table_config(runs["rotary"], labels, init__mode="pretrained", data__cv_folds=0)
    overridden.model_overrides = ("extra.rope_base=500",)
    with pytest.raises(UserError, match=r"rope_base 100\.0 \(checkpoint\) vs 500\.0"):
        Finetuner(overridden, tmp_path / "overridden", "pretrained")

    changed.init.partial = True
    capsys.readouterr()
    summary = Finetuner(changed, tmp_path / "partial", "pretrained").run()
    assert "variant fields model.extra.rope_base 100.0 (checkpoint) vs 500.0" in \
        capsys.readouterr().out
    assert summary["init_partial"]["fields"] == [["rope_base", 100.0, 500.0]]
    assert summary["model"]["extra"] == {"rope_base": 500.0}

    wider = table_config(runs["pre"], labels, init__mode="pretrained", data__cv_folds=0)
    wider.model.ffn_dim = 48  # the same architecture, another parameter tree
    with pytest.raises(UserError, match=r"holds another parameter tree: other shapes "
                                        r"layers/0/ffn/down/kernel \(32, 16\) vs \(48, 16\)"):
        Finetuner(wider, tmp_path / "wider", "pretrained")

    plain = table_config(runs["rotary"], labels, init__mode="pretrained", data__cv_folds=0)
    plain.model.arch = "roberta"  # the recipe's old default: an explicit request now
    with pytest.raises(UserError, match=r"holds architecture 'encoder_variants:RotaryEncoder', "
                                        r"not 'roberta'"):
        Finetuner(plain, tmp_path / "plain", "pretrained")


VARIANT = '''
from user_base import UserBase
from shared_blocks import ScaledLayer
import gate_helpers


class HelperEncoder(UserBase):
    layer_class = ScaledLayer
    config_fields = {"scale": 1.0}

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return gate_helpers.no_counts()
'''
BLOCKS = '''
from minilm_jax.model.layers import EncoderLayer


class ScaledLayer(EncoderLayer):
    SCALE = 1.0

    def __call__(self, x, mask, key=None):
        return super().__call__(x * self.SCALE, mask, key)
'''
BASE = '''
from minilm_jax.model.encoder import TransformerEncoder


class UserBase(TransformerEncoder):
    """A user's own base class, in a module of its own."""
'''
HELPERS = '''
from minilm_jax.model.accounting import VariantCounts


def no_counts():
    return VariantCounts()
'''


def test_code_identity_reaches_hook_classes_and_imported_helpers(runs, tmp_path, monkeypatch):
    """A variant whose base class lives in a second module, its layer class in a third and whose
    counts come from a helper in a fourth: all four are recorded; an edit to any of the other
    three is refused on resume (it resumed silently before), and accepted with
    MINILM_ACCEPT_CODE_CHANGE=1 it is recorded in what is read from the run (describe, evals
    provenance)."""
    from minilm_jax.evals.scoring import provenance
    from minilm_jax.model.code_identity import arch_code
    from minilm_jax.runs.pretrained import PretrainedRun

    for name, text in (("helper_variant.py", VARIANT), ("shared_blocks.py", BLOCKS),
                       ("gate_helpers.py", HELPERS), ("user_base.py", BASE)):
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        arch = "helper_variant:HelperEncoder"
        code = arch_code(arch)
        assert sorted(code) == ["gate_helpers", "helper_variant", "shared_blocks", "user_base"]
        assert code["shared_blocks"]["file"] == str(tmp_path / "shared_blocks.py")
        root = tmp_path / "p"
        (root / "shards").parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(runs["root"] / "shards", root / "shards")
        pretrain(root, "run", **{"model.arch": arch})
        for name, edit in (("shared_blocks.py", ("SCALE = 1.0", "SCALE = 0.5")),
                           ("gate_helpers.py", ("VariantCounts()", "VariantCounts(params=0)")),
                           ("user_base.py", ("own.", "own (edited)."))):
            original = (tmp_path / name).read_text()
            (tmp_path / name).write_text(original.replace(*edit))
            with pytest.raises(UserError, match=rf"{name[:-3]} \({tmp_path / name}\): sha256"):
                pretrain(root, "run", **{"model.arch": arch})
            with pytest.raises(UserError, match="changed since"):
                PretrainedRun.open(root / "run")
            (tmp_path / name).write_text(original)
        (tmp_path / "gate_helpers.py").write_text(HELPERS + "\n# edited\n")
        monkeypatch.setenv("MINILM_ACCEPT_CODE_CHANGE", "1")
        run = PretrainedRun.open(root / "run")
        assert len(run.code_changes) == 1 and "gate_helpers" in run.code_changes[0]
        assert run.describe()["code_changes"] == run.code_changes
        assert provenance({"arch": arch, "code_changes": run.code_changes}) == {
            "arch": arch, "code_changes": run.code_changes}
    finally:
        for name in ("helper_variant", "shared_blocks", "gate_helpers", "user_base"):
            sys.modules.pop(name, None)


def test_identity_differences_ignore_locations_and_compare_code_by_content():
    saved = {"data.shards": "/old/shards", "init.checkpoint": "/old/run", "train.seed": 0,
             "model_code": {"m": {"file": "/old/m.py", "sha256": "a" * 64}},
             "population.members": [{"name": "r", "workdir": "/old/r", "identity": {
                 "data.shards": "/old/shards", "train.seed": 0}}]}
    moved = {"data.shards": "/new/shards", "init.checkpoint": "/new/run", "train.seed": 0,
             "model_code": {"m": {"file": "/new/m.py", "sha256": "a" * 64},
                            "helper": {"file": "/new/h.py", "sha256": "b" * 64}},
             "population.members": [{"name": "r", "workdir": "../r", "identity": {
                 "data.shards": "/new/shards", "train.seed": 0}}],
             "inputs.shards": "c" * 64, "library.version": "0.1.0"}
    assert run_identity.differences(saved, moved) == []  # recorded later: not held to it
    edited = {**moved, "model_code": {"m": {"file": "/new/m.py", "sha256": "d" * 64}}}
    assert run_identity.differences(saved, edited) == ["model_code"]
    reseeded = {**moved, "population.members": [{"name": "r", "workdir": "../r",
                                                 "identity": {"train.seed": 1}}]}
    assert run_identity.differences(saved, reseeded) == ["population.members"]
    assert run_identity.differences({**moved, "inputs.shards": "e" * 64}, moved) == [
        "inputs.shards"]


def test_a_copied_sweep_root_resumes_and_reads(zorro_shards, tmp_path, capsys):
    """A finished sweep (a population of two pre-training seeds, each fine-tuned with its shared
    random-init twin) copied elsewhere and the original moved away: the same sweep on the copy
    trains nothing (every unit 'finished earlier', each summary byte for byte), and rebuilds the
    same results and report. Before, every fine-tuning unit was refused: its recorded
    init.checkpoint was the old absolute path."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
    import sweep as sweep_configs

    from minilm_jax.sweep.workers import run_worker

    sweep = sweep_configs.demo()
    sweep.shards, sweep.num_steps, sweep.eval_every, sweep.vocab_size = str(zorro_shards), 6, 6, 610
    sweep.pretrain_overrides = ("model.max_len=64", "eval.batch_size=50", "train.log_every=6",
                                "train.progress=False", "optim.warmup_steps=2", "mesh.data=1")
    sweep.bases, sweep.ofat, sweep.groups = (), (), ()
    sweep.grid, sweep.grid_fields = ("E16-H16-I32-L1-A2",), ()
    sweep.pretrain_seeds = (0, 1)
    sweep.finetune_tasks, sweep.finetune_init, sweep.finetune_checkpoints = ("bbc",), "both", ()
    sweep.finetune_seeds = (0,)
    sweep.finetune_overrides = ("train.epochs=1", "data.max_train_examples=32",
                                "data.max_eval_examples=32", "data.max_len=32",
                                "train.batch_size=16", "eval.batch_size=32", "mesh.data=1")
    sweep.report_bootstrap = 20
    first = tmp_path / "first"
    assert run_worker(sweep, first)["failures"] == {}
    summaries = {p.relative_to(first): p.read_bytes() for p in first.rglob("summary.json")}
    assert len(summaries) >= 6  # 2 pre-training runs, their fine-tuning (2 inits), the twin
    rows = (first / "results.jsonl").read_text()
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, copy)
    first.rename(tmp_path / "gone")  # nothing may be read from the old place
    capsys.readouterr()
    outcome = run_worker(sweep, copy)
    out = capsys.readouterr().out
    assert outcome["failures"] == {}, out
    ran = [line for line in out.splitlines()  # a unit that runs prints '== RUN STAGE -> DIR'
           if re.match(r"== (.* -> |\[\d+/\d+\] \S+ \()", line)]
    assert "finished earlier" in out and not ran, ran
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("summary.json")} == summaries
    moved_rows = (copy / "results.jsonl").read_text().replace(str(copy), str(first))
    assert [json.loads(r) for r in moved_rows.splitlines()] == [
        json.loads(r) for r in rows.splitlines()]
    assert (copy / "report" / "report.md").is_file() or (copy / "report.md").is_file()


def test_load_run_gives_the_trained_models_of_both_kinds(runs, tmp_path):
    """``minilm_jax.load_run``: a pre-training run's MaskedLM holds its checkpoint's parameters;
    a fine-tuning run's member, asked by seed, predicts on the holdout rows what the run itself
    saved in predictions/ (an independent record, written by the trainer)."""
    import jax
    import numpy as np
    from flax import nnx

    import minilm_jax
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.tasks.encoding import encode_examples
    from minilm_jax.tasks.task_data import load_task_data

    pre = minilm_jax.load_run(runs["pre"])
    assert pre.kind == "pretraining" and pre.step == 6 and pre.config["model.arch"] == "roberta"
    saved = jax.tree.leaves(PretrainedRun.open(runs["pre"]).model_state())
    loaded = jax.tree.leaves(nnx.state(pre.model))
    assert len(saved) == len(loaded)
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pre.tokenizer.sha256 == json.loads((runs["pre"] / "run_start.json").read_text())[
        "tokenizer"]["sha256"]

    labels = labels_file(tmp_path / "labels.csv")
    config = table_config(runs["pre"], labels, init__mode="pretrained", data__cv_folds=0)
    config.train.seeds = (3, 4)
    Finetuner(config, tmp_path / "ft", "pretrained").run()
    clf = minilm_jax.load_run(tmp_path / "ft", which="final", seed=4)
    assert (clf.kind, clf.task, clf.seed) == ("finetuning", "table", 4)
    data = load_task_data(config)
    arrays = encode_examples(data.evals["holdout"], clf.tokenizer, SEQ)
    logits = np.asarray(clf.model(arrays["tokens"], arrays["segments"], arrays["token_types"]))
    expected = np.load(tmp_path / "ft" / "predictions" / "holdout.final.npy")[1]  # seed 4
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    with pytest.raises(UserError, match=r"seed=9: the run trained the seeds \[3, 4\]"):
        minilm_jax.load_run(tmp_path / "ft", seed=9)
    with pytest.raises(UserError, match="not a run folder"):
        minilm_jax.load_run(tmp_path)


def test_a_loop_shared_variant_with_a_helper_module_and_a_field_is_held_to_its_code(
        runs, tmp_path, monkeypatch):
    """The user module of tests/looped_encoder.py (layers in lax.fori_loop, a helper module, a
    variant field), copied under new names: its helper module is part of the run's identity, so
    an edit there (a different loop) is refused on resume, naming the file; the variant field
    recorded with the run and held at fine-tuning."""
    from minilm_jax.model.code_identity import arch_code

    tests = Path(__file__).resolve().parent
    (tmp_path / "loop_user_blocks.py").write_text((tests / "looped_encoder_blocks.py").read_text())
    (tmp_path / "loop_user.py").write_text((tests / "looped_encoder.py").read_text().replace(
        "from looped_encoder_blocks import", "from loop_user_blocks import"))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    arch = "loop_user:LoopSharedEncoder"
    try:
        assert sorted(arch_code(arch)) == ["loop_user", "loop_user_blocks"]
        root = tmp_path / "p"
        shutil.copytree(runs["root"] / "shards", root / "shards")
        fields = {"model.arch": arch, "model.num_layers": 2, "model.extra.loop_repeats": 3}
        run = pretrain(root, "run", **fields)
        recorded = json.loads((run / "config.json").read_text())
        assert recorded["model.extra.loop_repeats"] == 3
        assert sorted(recorded["model_code"]) == ["loop_user", "loop_user_blocks"]
        blocks = tmp_path / "loop_user_blocks.py"
        original = blocks.read_text()
        blocks.write_text(original.replace("return jax.lax.fori_loop(0, times, body, x_bth)",
                                           "return jax.lax.fori_loop(0, times - 1, body, x_bth)"))
        with pytest.raises(UserError, match=rf"loop_user_blocks \({blocks}\): sha256 \w+ -> \w+"):
            pretrain(root, "run", **fields)
        blocks.write_text(original)
        pretrain(root, "run", **fields)  # the same code again: resumes (here: already finished)
    finally:
        for name in ("loop_user", "loop_user_blocks"):
            sys.modules.pop(name, None)


DYNAMIC_ENCODER = '''
import importlib

from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.layers import EncoderLayer


class DynamicLayer(EncoderLayer):
    def __call__(self, x, *args, **kwargs):  # a helper named by a string, imported when called
        scale = importlib.import_module("dynlab.dynhelper").scale()
        return super().__call__(x * scale, *args, **kwargs)


class DynamicEncoder(TransformerEncoder):
    layer_class = DynamicLayer
'''


def test_a_helper_imported_inside_a_layers_call_is_recorded_and_held(runs, tmp_path,
                                                                     monkeypatch):
    """A layer that loads its helper with ``importlib.import_module`` in ``__call__`` (no import
    statement names it): the helper's file is recorded by its sha256 (computed here), and the
    helper edited after training is refused on resume and by readers, naming its file (it
    resumed on the new code, rc 0, before). Restored: the run resumes."""
    import hashlib

    from minilm_jax.runs.pretrained import PretrainedRun

    package = tmp_path / "dynlab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "enc.py").write_text(DYNAMIC_ENCODER)
    helper = package / "dynhelper.py"
    helper.write_text("def scale():\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    fields = {"model.arch": "dynlab.enc:DynamicEncoder"}
    try:
        root = tmp_path / "p"
        shutil.copytree(runs["root"] / "shards", root / "shards")
        run = pretrain(root, "run", **fields)
        code = json.loads((run / "config.json").read_text())["model_code"]
        assert code["dynlab.dynhelper"] == {
            "file": str(helper), "sha256": hashlib.sha256(helper.read_bytes()).hexdigest()}
        before = code["dynlab.dynhelper"]["sha256"]
        original = helper.read_text()
        helper.write_text(original.replace("1.0", "0.5"))
        after = hashlib.sha256(helper.read_bytes()).hexdigest()
        for name in ("dynlab", "dynlab.enc", "dynlab.dynhelper"):  # as a new process would
            sys.modules.pop(name, None)
        line = rf"dynlab\.dynhelper \({helper}\): sha256 {before[:12]} -> {after[:12]}"
        with pytest.raises(UserError, match=line) as refused:
            pretrain(root, "run", **fields)
        assert "\n" not in str(refused.value)
        with pytest.raises(UserError, match=line):
            PretrainedRun.open(run)
        helper.write_text(original)
        pretrain(root, "run", **fields)  # the recorded code again: resumes (already finished)
    finally:
        for name in ("dynlab", "dynlab.enc", "dynlab.dynhelper"):
            sys.modules.pop(name, None)


def test_a_module_shadowed_by_another_file_is_named_by_the_file_now_imported(tmp_path,
                                                                              monkeypatch):
    """The variant's helper recorded from one folder; another ``shadow_helper.py`` put earlier on
    the path: refused naming the file imported now (and the recorded one), with the sha256 of
    each (computed here). Before, only the recorded file (unchanged) was named."""
    import hashlib

    from minilm_jax.model.code_identity import arch_code, check_code

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "shadow_variant.py").write_text(
        "import shadow_helper\nfrom minilm_jax.model.encoder import TransformerEncoder\n\n\n"
        "class ShadowEncoder(TransformerEncoder):\n    width = shadow_helper.WIDTH\n")
    (first / "shadow_helper.py").write_text("WIDTH = 3\n")
    (second / "shadow_helper.py").write_text("WIDTH = 4\n")
    monkeypatch.syspath_prepend(str(first))
    importlib.invalidate_caches()
    arch = "shadow_variant:ShadowEncoder"
    try:
        recorded = arch_code(arch)
        assert recorded["shadow_helper"]["file"] == str(first / "shadow_helper.py")
        monkeypatch.syspath_prepend(str(second))  # earlier on the path: shadows the first
        for name in ("shadow_variant", "shadow_helper"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        sha = {d: hashlib.sha256((d / "shadow_helper.py").read_bytes()).hexdigest()[:12]
               for d in (first, second)}
        with pytest.raises(UserError) as refused:
            check_code(recorded, arch, "the run in /r")
        message = str(refused.value)
        assert (f"shadow_helper ({second / 'shadow_helper.py'}, imported now in place of the "
                f"recorded {first / 'shadow_helper.py'}): sha256 {sha[first]} -> {sha[second]}"
                in message), message
        assert "shadow_variant" not in message.split("since")[1]  # the variant is unchanged
    finally:
        for name in ("shadow_variant", "shadow_helper"):
            sys.modules.pop(name, None)


def test_a_variants_pytorch_twin_is_part_of_its_recorded_code(tmp_path, monkeypatch):
    """``torch_twin`` (the variant's PyTorch file, relative to its module): recorded as
    ``torch_twin:<stem>`` by its sha256 (computed here); an edited twin is named by readers
    (export reads through them); a variant without one records none."""
    import hashlib

    from minilm_jax.model.code_identity import arch_code, check_code

    (tmp_path / "twin_variant.py").write_text(
        "from minilm_jax.model.encoder import TransformerEncoder\n\n\n"
        "class TwinEncoder(TransformerEncoder):\n    torch_twin = 'modeling_twin.py'\n\n\n"
        "class NoTwinEncoder(TransformerEncoder):\n    pass\n")
    twin = tmp_path / "modeling_twin.py"
    twin.write_text("BUCKETS = 'left to right'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        code = arch_code("twin_variant:TwinEncoder")
        assert code["torch_twin:modeling_twin"] == {
            "file": str(twin), "sha256": hashlib.sha256(twin.read_bytes()).hexdigest()}
        assert sorted(arch_code("twin_variant:NoTwinEncoder")) == ["twin_variant"]
        before = code["torch_twin:modeling_twin"]["sha256"]
        twin.write_text("BUCKETS = 'right to left'\n")
        after = hashlib.sha256(twin.read_bytes()).hexdigest()
        with pytest.raises(UserError, match=rf"torch_twin:modeling_twin \({twin}\): sha256 "
                                            rf"{before[:12]} -> {after[:12]}"):
            check_code(code, "twin_variant:TwinEncoder", "the run in /r")
    finally:
        sys.modules.pop("twin_variant", None)


def test_a_library_version_change_is_said_once_and_recorded_by_a_run_a_unit_and_a_reader(
        runs, tmp_path, monkeypatch, capsys):
    """A run written by one library version, met by another (faked here): the finished run's
    command, a sweep's finished unit and fine-tuning (a reader) each go on, say it in one line
    naming both versions, and record ``minilm-jax A -> B``; with MINILM_HOLD_LIBRARY_VERSION=1
    each refuses in one line naming both. Before, the run was refused as a change of the model's
    code, the unit reused without a word and the reader recorded nothing."""
    import types

    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.sweep import unit_identity
    from minilm_jax.sweep.layout import SweepLayout

    written = json.loads((runs["pre"] / "config.json").read_text())["library.version"]
    newer = f"{written}.post7"
    change = f"minilm-jax {written} -> {newer}"
    monkeypatch.setattr(run_identity, "library_version", lambda: newer)
    monkeypatch.delenv("MINILM_HOLD_LIBRARY_VERSION", raising=False)

    def copy(name: str) -> Path:
        root = tmp_path / name
        shutil.copytree(runs["root"] / "shards", root / "shards")
        shutil.copytree(runs["pre"], root / "run")
        return root

    def unit(name: str) -> tuple[types.SimpleNamespace, SweepLayout, Path]:
        layout = SweepLayout(tmp_path / name)
        run = types.SimpleNamespace(name="tiny", config=pretrain_config(POINT))
        folder = Path(layout.pretrain_dir("tiny"))
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(
            {**flatten(run.config), "library.version": written}))
        (folder / "summary.json").write_text("{}")  # finished: reused, not run
        return run, layout, folder

    def said() -> list[str]:
        out = capsys.readouterr().out.splitlines()
        return [line for line in out if f"minilm-jax {written}" in line and newer in line]

    monkeypatch.setattr(unit_identity, "finetune_jobs", lambda sweep, r, lay: [])
    labels = labels_file(tmp_path / "labels.csv")
    reader_config = table_config(copy("reader") / "run", labels, init__mode="pretrained",
                                 data__cv_folds=0)
    for hold_version in (False, True):
        if hold_version:
            monkeypatch.setenv("MINILM_HOLD_LIBRARY_VERSION", "1")
        attempts = {  # each on a record of the older version, as the rule's first meeting
            "run": lambda r=copy(f"run{hold_version}"): pretrain(r, "run"),
            "unit": lambda u=unit(f"sweep{hold_version}"): unit_identity.changed_units(
                [u[0]], None, u[1]),
            "reader": lambda: Finetuner(reader_config, tmp_path / f"ft{hold_version}",
                                        "pretrained").run()}
        for what, attempt in attempts.items():
            monkeypatch.setattr(run_identity, "_NOTED", set(), raising=False)
            capsys.readouterr()
            if hold_version:
                with pytest.raises(UserError) as refused:
                    attempt()
                message = str(refused.value)
                assert f"minilm-jax {written}" in message and newer in message, (what, message)
                assert "\n" not in message and "code of model" not in message, (what, message)
                continue
            result = attempt()
            assert len(said()) == 1, what  # said once, naming both versions
            if what == "unit":
                assert result == []  # reused
            elif what == "reader":
                assert result["pretrained"]["library_version_changes"] == [change]
                recorded = json.loads((tmp_path / "ft" f"{hold_version}" / "config.json"
                                       ).read_text())
                assert recorded["library.version"] == newer  # its own output: this version
    run_record = json.loads((tmp_path / "runFalse" / "run" / "config.json").read_text())
    unit_record = json.loads((tmp_path / "sweepFalse" / "runs" / "tiny" / "pretrain" /
                              "config.json").read_text())
    for record in (run_record, unit_record):  # the same record either way
        assert record["library.version"] == newer
        assert record["library_version_changes"] == [change]
    assert PretrainedRun.open(tmp_path / "runFalse" / "run").library_version_changes == [change]
