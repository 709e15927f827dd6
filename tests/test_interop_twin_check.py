"""An export is checked by its numbers: the folder is loaded through transformers' Auto classes and
its logits compared with ours at the exported parameters and at parameters drawn so that every
tensor matters. A twin that reads a relative-position table the wrong way round, or drops it, is
refused by the export itself, also where the table sits at its initial zeros (a fresh model, a run
at the unigram plateau), with one line naming the output that differs, and nothing is written.
Variants: tests/relative_bias_variants.py, twins: tests/modeling_relative_bias_variants.py."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import float32_tolerance, shared_path, write_line_shards

from minilm_jax.interop.hf_files import InteropError

POINT = "E16-H32-I64-L2-A2-V600"
SEQ = 16
TESTS = Path(__file__).resolve().parent
TWIN = TESTS / "modeling_relative_bias_variants.py"
# The reductions of a forward pass: each of 2 layers' hidden and ffn widths, attention over SEQ
# positions, the E->H projection and the head.
TERMS = 2 * (32 + 64 + SEQ) + 16 + 32
REFUSED = re.compile(r"is (-?[\d.e+-]+) in PyTorch, (-?[\d.e+-]+) in minilm-jax \(difference "
                     r"([\d.e+-]+), float32 tolerance ([\d.e+-]+)\)")


def needs_torch():
    for package in ("torch", "transformers", "safetensors"):  # the interop extra
        pytest.importorskip(package)


def fresh(variant: str, classifier: bool):
    from minilm_jax.model.models import build_classifier, build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(POINT, max_len=SEQ, arch=f"relative_bias_variants:{variant}")
    return build_classifier(cfg, 2) if classifier else build_mlm(cfg)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("variant,classifier", [("FlippedBucketEncoder", False),
                                                ("DroppedBiasEncoder", True)])
def test_a_wrong_twin_is_refused_at_initialisation_and_nothing_is_written(variant, classifier,
                                                                          tmp_path):
    """Fails on the old export (written, no word): the bias table at its initial zeros gives the
    same logits through the wrong twin as through the right one, so the exported parameters pass;
    the perturbed ones do not. One line naming the twin, the head, the output and both values;
    the values are ours (recomputed here) and theirs, far apart; OUT (holding an earlier export,
    --overwrite) keeps its files and no temporary folder is left beside it."""
    needs_torch()
    from minilm_jax.interop.hf_minilm import export_model

    model = fresh(variant, classifier)
    table = model.encoder.layers[0].attention.relative_bias[...]
    assert not np.any(np.asarray(table))  # the plateau's case: no bias yet
    out = tmp_path / "hf"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier export")
    before = folder_files(out)
    labels = ["no", "yes"] if classifier else ()
    with pytest.raises(InteropError) as refused:
        export_model(model, out, labels=labels, overwrite=True)
    said = str(refused.value)
    kind = "SequenceClassification" if classifier else "MaskedLM"
    assert "\n" not in said and said.startswith(
        f"cannot export to Hugging Face: the PyTorch twin {TWIN.name} ({variant}For{kind}) does "
        "not compute this model: at the perturbed parameters "), said
    assert said.endswith(f"nothing was written to {out}")
    assert folder_files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]

    from minilm_jax.interop.twin_check import perturbed, probe_batch

    theirs, ours, diff, tol = map(float, REFUSED.search(said).groups())
    # the difference is written to 3 digits, the values to 6
    assert abs(abs(theirs - ours) - diff) <= 5e-3 * diff and diff > 100 * tol
    tokens, types, real = probe_batch(model.cfg)
    moved = perturbed(model)
    segments = real.astype(np.int32)
    if classifier:
        logits = np.asarray(moved(tokens, segments, types))
        where = re.search(r"logit '(\w+)' of probe sequence (\d+)", said).groups()
        mine = logits[int(where[1]), labels.index(where[0])]
    else:
        positions = np.broadcast_to(np.arange(SEQ), tokens.shape)
        logits = np.asarray(moved(tokens, positions, segments, types))
        v, b, t = map(int, re.search(r"token (\d+) at probe sequence (\d+), position (\d+)",
                                     said).groups())
        assert real[b, t]  # a real position, never padding
        mine = logits[b, t, v]
    assert abs(mine - ours) <= 1e-5 * max(1.0, abs(mine))  # the value named is ours


def test_the_right_twin_passes_and_says_so(tmp_path):
    """Fails on the old export (no check, no provenance of the twin): the right twin of the same
    model passes at both parameter sets, the export says so (notes, card) with differences within
    the tolerance, records the twin file's sha256, and transformers gives our logits here too."""
    needs_torch()
    import torch
    import transformers

    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.interop.model_card import CARD_NAME
    from minilm_jax.interop.twin_check import perturbed

    model = perturbed(fresh("RelativeBiasEncoder", False), seed=3)  # stands for trained weights
    notes: list[str] = []
    # transformers keys a folder's remote code by the folder's name (and its source): in one
    # process, a folder named as one loaded before would get the classes registered for that one
    out = export_model(model, tmp_path / "relative_bias_right_twin", notes=notes,
                       files={CARD_NAME: "# card\n"})
    assert len(notes) == 1 and notes[0].startswith(
        f"PyTorch twin verified: the PyTorch twin {TWIN.name} (RelativeBiasEncoderForMaskedLM) "
        f"loaded with torch {torch.__version__}, transformers {transformers.__version__} gives "
        "our logits"), notes
    for name in ("exported", "perturbed"):
        diff, tol = map(float, re.search(rf"{name} parameters ([\d.e+-]+) \(tolerance "
                                         r"([\d.e+-]+)\)", notes[0]).groups())
        assert diff <= tol
    card = (out / CARD_NAME).read_text()
    assert card.startswith("# card\n") and notes[0] in card
    provenance = json.loads((out / "config.json").read_text())["minilm_jax"]["provenance"]
    assert provenance["torch_twin"] == {
        "file": TWIN.name, "sha256": hashlib.sha256(TWIN.read_bytes()).hexdigest()}

    hf = transformers.AutoModelForMaskedLM.from_pretrained(str(out), trust_remote_code=True)
    tokens = np.full((2, SEQ), 1, np.int32)
    tokens[0, :] = np.arange(SEQ) * 7 % 590 + 5
    tokens[1, :5] = [0, 17, 42, 99, 2]
    with torch.no_grad():
        theirs = hf.eval()(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    mine = np.asarray(model.all_logits(tokens))
    real = tokens != 1
    np.testing.assert_allclose(theirs[real], mine[real], rtol=0,
                               atol=float32_tolerance(float(np.abs(mine).max()), TERMS))


def test_without_torch_the_export_says_its_twin_is_not_verified(tmp_path, monkeypatch):
    """Fails on the old export (silent): without torch the export is written and says, in its
    notes and its card, that the twin was not verified and how to verify it."""
    pytest.importorskip("safetensors")
    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.interop.model_card import CARD_NAME

    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    notes: list[str] = []
    out = export_model(fresh("RelativeBiasEncoder", False), tmp_path / "unverified", notes=notes,
                       files={CARD_NAME: "# card\n"})
    assert notes == ["PyTorch twin not verified: torch is not installed where it was exported, "
                     "so its logits were not compared with minilm-jax's (pip install "
                     "'minilm-jax[interop]', export again)"]
    assert notes[0] in (out / CARD_NAME).read_text()
    assert (out / TWIN.name).read_bytes() == TWIN.read_bytes()


# ----------------------------------------------------------------- the command, on a short run
def user_module(root: Path) -> Path:
    """The variants and their twins as a user's own module folder (``lab_bias.py``)."""
    lab = root / "lab"
    lab.mkdir()
    shutil.copyfile(TESTS / "relative_bias_variants.py", lab / "lab_bias.py")
    shutil.copyfile(TWIN, lab / TWIN.name)
    return lab


def test_export_command_checks_the_twin_of_a_plateau_run(tmp_path, monkeypatch, capsys):
    """Fails on the old command (exit 0, the flipped twin written): a 2-step run of the variant
    (its bias table still within 0.01 of zero: the plateau's case) exports with the right twin and
    says "PyTorch twin verified", its card's rebuilt command with the ``PYTHONPATH`` the variant's
    module needs and the variant's field at its default. The twin edited after training (a
    comment) is named by the export (refused, or accepted with MINILM_ACCEPT_CODE_CHANGE=1 and
    named in the card, its new sha256 in the provenance); the twin then edited to read the table the wrong way round
    (the change accepted for code identity) is refused by the export: exit 2, one error line
    naming the twin, the output and both values, the earlier export left as it was."""
    needs_torch()
    from flax import nnx

    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.interop.__main__ import main
    from minilm_jax.model.code_identity import ACCEPT_ENV
    from minilm_jax.model.models import build_mlm
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    lab = user_module(tmp_path)
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.setitem(sys.modules, "lab_bias", None)  # dropped after the test
    monkeypatch.delitem(sys.modules, "lab_bias")
    text = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 12]
    (tmp_path / "tok.model").write_bytes(train_sentencepiece(lines, 600, "bpe"))
    seq = 32  # the recipe's predictions per sequence fit
    write_line_shards(tmp_path / "shards", load_tokenizer(tmp_path / "tok.model"), lines[:500], seq)
    config = pretrain_config(POINT)
    config.model.arch = "lab_bias:RelativeBiasEncoder"
    config.model.max_len = seq
    config.data.shards = str(tmp_path / "shards")
    config.train.num_steps = 2
    config.train.batch_size = 8
    config.train.progress = False
    config.eval.every_steps = 2
    config.eval.batch_size = 50
    config.mesh.data = 1
    config.checkpoint.every_steps = 2
    run = tmp_path / "pre"
    Pretrainer(config, run).run()
    opened = PretrainedRun.open(run)
    trained = nnx.eval_shape(lambda: build_mlm(opened.model))
    nnx.update(trained, opened.model_state())
    table = np.asarray(trained.encoder.layers[0].attention.relative_bias[...])
    assert 0 < np.abs(table).max() < 0.01  # trained, barely

    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(run), "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said[-1].startswith(f"PyTorch twin verified: the PyTorch twin {TWIN.name} "
                               "(RelativeBiasEncoderForMaskedLM)"), said
    card = (out / "README.md").read_text()
    assert said[-1] in card
    # the card's rebuilt command imports the variant from its folder, its field at the default
    command = next(line for line in card.splitlines() if " minilm-pretrain " in line)
    assert command.startswith(f"PYTHONPATH={lab.name} minilm-pretrain --config=pretrain:{POINT} "
                              ), command
    assert "--config.model.arch=lab_bias:RelativeBiasEncoder" in command.split()
    assert "--config.model.extra.max_distance=4" in command.split()
    before = folder_files(out)

    # an edited twin (a comment: the same numbers) is the run's code changed: named at export
    twin = lab / TWIN.name
    source = twin.read_text()
    recorded = hashlib.sha256(source.encode()).hexdigest()
    twin.write_text(source + "# edited after training\n")
    edited = hashlib.sha256(twin.read_bytes()).hexdigest()
    monkeypatch.delenv(ACCEPT_ENV, raising=False)
    assert main(["export", "--workdir", str(run), "--out", str(tmp_path / "edited")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and (
        f"torch_twin:{TWIN.stem} ({twin}): sha256 {recorded[:12]} -> {edited[:12]}" in err[0]), err
    assert not (tmp_path / "edited").exists()
    monkeypatch.setenv(ACCEPT_ENV, "1")
    assert main(["export", "--workdir", str(run), "--out", str(tmp_path / "edited")]) == 0
    capsys.readouterr()
    rows = [line for line in (tmp_path / "edited" / "README.md").read_text().splitlines()
            if line.startswith("| encoder code changed since the run was recorded")]
    assert len(rows) == 1 and f"torch_twin:{TWIN.stem}" in rows[0], rows
    config = json.loads((tmp_path / "edited" / "config.json").read_text())
    assert config["minilm_jax"]["provenance"]["torch_twin"] == {"file": TWIN.name,
                                                                "sha256": edited}
    shutil.rmtree(tmp_path / "edited")

    assert source.count("    direction = 1  #") == 1
    twin.write_text(source.replace("    direction = 1  #", "    direction = -1  #"))
    assert main(["export", "--workdir", str(run), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(
        f"error: cannot export to Hugging Face: the PyTorch twin {re.escape(TWIN.name)} "
        r"\(RelativeBiasEncoderForMaskedLM\) does not compute this model: at the "
        r"(exported|perturbed) parameters the masked-LM head's logit of token ", err[0]), err[0]
    theirs, ours, diff, tol = map(float, REFUSED.search(err[0]).groups())
    assert diff > 10 * tol  # at the exported parameters already, or else at the perturbed ones
    assert folder_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "lab", "pre", "shards", "tok.model"]


def test_the_rebuilt_command_names_the_variants_folder_and_every_field(tmp_path, monkeypatch):
    """Fails on the old card (no PYTHONPATH, a variant's fields left out: the recipe knows none of
    them): pre-training names every field, at its default too; fine-tuning names those its
    config records (its checkpoint holds the others); a module in a package is imported from the
    folder above the package; a built-in encoder needs no PYTHONPATH."""
    from minilm_jax.interop.model_card import rebuilt_command
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.settings.recipes import load_config_file

    lab = user_module(tmp_path)
    (lab / "pkg").mkdir()
    (lab / "pkg" / "__init__.py").write_text("")
    shutil.copyfile(TESTS / "relative_bias_variants.py", lab / "pkg" / "enc.py")
    shutil.copyfile(TWIN, lab / "pkg" / TWIN.name)
    monkeypatch.syspath_prepend(str(lab))
    for name in ("lab_bias", "pkg", "pkg.enc"):
        monkeypatch.setitem(sys.modules, name, None)  # dropped after the test
        monkeypatch.delitem(sys.modules, name)
    recipe = f"pretrain:{POINT}"
    flat = flatten(load_config_file(recipe))
    for arch in ("lab_bias:RelativeBiasEncoder", "pkg.enc:RelativeBiasEncoder"):
        words = rebuilt_command("minilm-pretrain", recipe, "/runs/pre",
                                {**flat, "model.arch": arch}).split()
        assert words[:2] == [f"PYTHONPATH={lab}", "minilm-pretrain"], words
        assert f"--config.model.arch={arch}" in words
        assert "--config.model.extra.max_distance=4" in words  # the default
    words = rebuilt_command("minilm-pretrain", recipe, "/runs/pre",
                            {**flat, "model.arch": "pkg.enc:RelativeBiasEncoder",
                             "model.extra.max_distance": 6}).split()
    assert "--config.model.extra.max_distance=6" in words
    assert not any(w.startswith("--config.model.extra.max_distance=4") for w in words)
    assert not rebuilt_command("minilm-pretrain", recipe, "/runs/pre", flat).startswith(
        "PYTHONPATH")  # the recipe's own encoder

    recipe = "finetune:sst2"
    flat = {**flatten(load_config_file(recipe)), "model.arch": "lab_bias:RelativeBiasEncoder"}
    words = rebuilt_command("minilm-finetune", recipe, "/runs/sst2", flat).split()
    assert words[0] == f"PYTHONPATH={lab}" and not any("model.extra" in w for w in words)
    words = rebuilt_command("minilm-finetune", recipe, "/runs/sst2",
                            {**flat, "model.extra.max_distance": 6}).split()
    assert "--config.model.extra.max_distance=6" in words


@pytest.mark.parametrize("bug,said", [
    ("        raise RuntimeError('a bug in the twin')\n",
     "fails on a probe batch of 3 sequences of 16 tokens: RuntimeError: a bug in the twin"),
    ("        return torch.zeros(self.heads, q_len + 1, k_len)\n",
     "fails on a probe batch of 3 sequences of 16 tokens: RuntimeError: ")])
def test_a_twin_that_fails_is_one_line_and_nothing_is_written(bug, said, tmp_path, monkeypatch):
    """Fails on the old export (written: the twin never ran): a twin whose attention raises, or
    returns a bias of the wrong shape, is refused in one line naming it and what it raised."""
    needs_torch()
    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point

    lab = user_module(tmp_path)
    twin = lab / TWIN.name
    head = "    def score_bias(self, q_len: int, k_len: int) -> torch.Tensor | None:\n"
    source = twin.read_text()
    assert source.count(head) == 2  # the right twin's, then the dropped one's
    twin.write_text(source.replace(head, head + bug, 1))
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.setitem(sys.modules, "lab_bias", None)  # dropped after the test
    monkeypatch.delitem(sys.modules, "lab_bias")
    model = build_mlm(resolve_point(POINT, max_len=SEQ, arch="lab_bias:RelativeBiasEncoder"))
    with pytest.raises(InteropError) as refused:
        export_model(model, tmp_path / "hf")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(
        f"cannot export to Hugging Face: the PyTorch twin {TWIN.name} "
        f"(RelativeBiasEncoderForMaskedLM) {said}"), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab"]
