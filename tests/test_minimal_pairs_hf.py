"""Our minimal-pair scores of a checkpoint equal a transformers-based scoring of its export: the
model in PyTorch, the exported tokenizer through AutoTokenizer, word boundaries from its word ids.
An export of the default recipe (our own PyTorch code) is scored without running that code; a
foreign folder needing custom code, or a folder missing or damaging a file, is refused in one line
naming it, never with a question on stdin."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from conftest import shared_path
from test_minimal_pairs import pll_tolerance
from minilm_jax.evals.hf_scorer import hugging_face_model
from minilm_jax.evals.minimal_pairs import score_paradigms
from minilm_jax.evals.scoring import RULES, encode_sentence, mlm_target_logprobs
from minilm_jax.evals.suites import open_suite
from minilm_jax.errors import UserError
from minilm_jax.interop.hf_minilm import export_model
from minilm_jax.interop.hf_roberta import export_roberta
from minilm_jax.model import build_mlm
from minilm_jax.model.sizes import resolve_point

PARADIGMS = ["agreement_subject_verb-across_relative_clause", "irregular-verb"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exportable model (E == H) with noisy weights and a 400-piece BPE tokenizer trained on
    WikiText-2 (long words split into several pieces), exported with its tokenizer."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("hf_pairs")
    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12][:3000]
    (root / "tok.model").write_bytes(train_sentencepiece(lines, 400, "bpe"))
    tokenizer = load_tokenizer(root / "tok.model")
    model = build_mlm(resolve_point("E32-H32-I64-L2-A4-V410", embed_projection=False, max_len=64),
                      seed=5)
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(6), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [
        x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]))
    out = export_roberta(model, root / "hf", tokenizer=tokenizer)
    return tokenizer, model, out


def test_scores_equal_a_transformers_scoring_of_the_export(exported):
    tokenizer, model, out = exported
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ours = mlm_target_logprobs(graphdef, params, rest)
    hf = hugging_face_model(out)
    hf_tokenizer, theirs, info = hf.tokenizer, hf.logprobs, hf.info
    assert info["init"] == "pretrained" and info["point"] == "roberta"
    paradigms = open_suite(str(shared_path("zorro", "sentences", "babyberta")), paradigms=PARADIGMS)
    paradigms = [dataclasses.replace(p, pairs=p.pairs[:60]) for p in paradigms]
    sentences = sorted({s for p in paradigms for pair in p.pairs for s in (pair.good, pair.bad)})
    multi_piece = 0
    for s in sentences:  # the same ids and word starts through AutoTokenizer's word ids
        assert hf_tokenizer.encode_words(s) == tokenizer.encode_words(s), s
        multi_piece += len(tokenizer.encode(s)) > len(s.split())
    assert multi_piece > 0  # some words span several pieces: word-l2r differs from pll
    # a margin is a difference of two sentence scores, each within pll_tolerance (PyTorch's and
    # our float32 sums in other orders): at most twice it
    tol = 2 * pll_tolerance((tokenizer, graphdef, params, rest),
                            [encode_sentence(tokenizer, s) for s in sentences])
    for rule in RULES:
        a = score_paradigms(paradigms, tokenizer, ours, rule, batch_rows=64)
        b = score_paradigms(paradigms, hf_tokenizer, theirs, rule, batch_rows=64)
        for x, y in zip(a, b):
            assert x.scored == y.scored >= 50  # a few pairs hold a character it lacks
            np.testing.assert_allclose(x.margins, y.margins, rtol=0, atol=tol)
            assert x.correct == y.correct


def test_command_scores_a_hugging_face_folder_and_its_random_twin(exported, tmp_path):
    from minilm_jax.evals.__main__ import main

    _, _, out = exported
    pairs = tmp_path / "mine.jsonl"
    pairs.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b,
                                         "UID": "mine", "linguistics_term": "agreement"}) + "\n"
                             for g, b in [("the dog is here .", "the dog are here ."),
                                          ("the dogs are here .", "the dogs is here .")]))
    target = tmp_path / "scores"
    assert main(["--workdir", str(out), "--suite", str(pairs), "--rules", "pll",
                 "--out", str(target)]) == 0
    rows = [json.loads(line) for line in (target / "minimal_pairs.jsonl").read_text().splitlines()]
    assert sorted(r["init"] for r in rows) == ["pretrained", "random"]
    assert all(r["pairs"] == 2 and r["rule"] == "pll" for r in rows)


def test_a_folder_without_a_model_config_is_refused(tmp_path):
    from minilm_jax.errors import UserError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        hugging_face_model(tmp_path)


# --- the default recipe's export (our own PyTorch code) and folders that cannot be scored --------


@pytest.fixture(scope="module")
def default_export(exported):
    """The default recipe's model (factorized embeddings, E->H projection), which RoBERTa cannot
    hold: exported with our own modeling code (``model_type`` minilm_jax, ``auto_map``)."""
    tokenizer, _, roberta = exported
    model = build_mlm(resolve_point("E16-H32-I64-L2-A4-V410", max_len=64), seed=7)
    assert model.cfg.embed_projection and model.cfg.emb_dim != model.cfg.hidden_dim
    out = export_model(model, roberta.parent / "hf_minilm", tokenizer=tokenizer)
    assert json.loads((out / "config.json").read_text())["model_type"] == "minilm_jax"
    return tokenizer, model, out


@pytest.fixture
def no_prompt(monkeypatch):
    """Fail any attempt to ask the user (transformers' trust_remote_code [y/N] question)."""
    def refuse(*args, **kwargs):
        raise AssertionError("asked a question on stdin")

    monkeypatch.setattr("builtins.input", refuse)


def test_our_default_recipe_export_scores_as_its_checkpoint(default_export, no_prompt):
    """Fails on the old code (transformers asks the trust_remote_code question, reads EOF and
    raises): the export's scores are our model's, with the export's own tokenizer."""
    tokenizer, model, out = default_export
    hf = hugging_face_model(out)
    assert hf.info["init"] == "pretrained" and hf.info["point"] == model.cfg.point
    paradigms = open_suite(str(shared_path("zorro", "sentences", "babyberta")),
                           paradigms=PARADIGMS[:1])
    paradigms = [dataclasses.replace(p, pairs=p.pairs[:20]) for p in paradigms]
    for p in paradigms:
        for pair in p.pairs:
            for s in (pair.good, pair.bad):
                assert hf.tokenizer.encode_words(s) == tokenizer.encode_words(s), s
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    [a] = score_paradigms(paradigms, tokenizer, mlm_target_logprobs(graphdef, params, rest), "pll")
    [b] = score_paradigms(paradigms, hf.tokenizer, hf.logprobs, "pll")
    assert a.scored == b.scored > 0
    # the same float32 weights (safetensors is lossless) through our program, built again from
    # the export's config: equal up to the order of float32 sums, a margin within twice a
    # sentence's pll_tolerance
    sentences = [encode_sentence(tokenizer, s) for p in paradigms for pair in p.pairs
                 for s in (pair.good, pair.bad)]
    tol = 2 * pll_tolerance((tokenizer, graphdef, params, rest), sentences)
    np.testing.assert_allclose(b.margins, a.margins, rtol=0, atol=tol)


def test_command_scores_our_default_recipe_export_and_its_twin(default_export, no_prompt,
                                                                tmp_path):
    from minilm_jax.evals.__main__ import main

    _, model, out = default_export
    pairs = tmp_path / "mine.jsonl"
    pairs.write_text(json.dumps({"sentence_good": "the dog is here .",
                                 "sentence_bad": "the dog are here ."}) + "\n")
    target = tmp_path / "scores"
    assert main(["--workdir", str(out), "--suite", str(pairs), "--rules", "holistic",
                 "--out", str(target)]) == 0
    rows = [json.loads(line) for line in (target / "minimal_pairs.jsonl").read_text().splitlines()]
    assert sorted(r["init"] for r in rows) == ["pretrained", "random"]
    assert all(r["scored"] == 1 and r["point"] == model.cfg.point for r in rows)


def foreign_copy(source: Path, target: Path) -> Path:
    """A copy of our export made to look like someone else's custom-code model."""
    from minilm_jax.interop.hf_roberta import METADATA_KEY

    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.pop(METADATA_KEY)
    config |= {"model_type": "acme_lm", "architectures": ["AcmeForMaskedLM"],
               "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig",
                            "AutoModelForMaskedLM": "modeling_acme.AcmeForMaskedLM"}}
    (target / "config.json").write_text(json.dumps(config))
    (target / "modeling_minilm.py").rename(target / "modeling_acme.py")
    (target / "configuration_minilm.py").rename(target / "configuration_acme.py")
    return target


def test_a_foreign_folder_needing_custom_code_is_refused_in_one_line(default_export, tmp_path):
    """Fails on the old code: a 54-line traceback after transformers' [y/N] question read EOF."""
    folder = foreign_copy(default_export[2], tmp_path / "acme")
    pairs = tmp_path / "mine.jsonl"
    pairs.write_text(json.dumps({"sentence_good": "a b .", "sentence_bad": "b a ."}) + "\n")
    done = subprocess.run([sys.executable, "-m", "minilm_jax.evals", "--workdir", str(folder),
                           "--suite", str(pairs), "--out", str(tmp_path / "o")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "custom code" in lines[0], lines
    assert "[y/N]" not in done.stdout + done.stderr


def test_our_model_type_without_our_metadata_is_foreign(default_export, tmp_path, no_prompt):
    from minilm_jax.evals.scoring_models import scoring_model
    from minilm_jax.interop.hf_roberta import METADATA_KEY

    folder = shutil.copytree(default_export[2], tmp_path / "claims_ours")
    config = json.loads((folder / "config.json").read_text())
    config.pop(METADATA_KEY)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="custom code") as err:
        scoring_model(folder)
    assert "\n" not in str(err.value)


def test_a_classifier_export_is_not_a_masked_lm(default_export, tmp_path, no_prompt):
    from minilm_jax.evals.scoring_models import scoring_model

    folder = shutil.copytree(default_export[2], tmp_path / "classifier")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MinilmForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not a masked LM"):
        scoring_model(folder)


def test_a_folder_whose_weights_do_not_fit_its_config_is_refused(exported, default_export,
                                                                  tmp_path, capfd):
    """A RoBERTa-layout export carrying another export's ``model.safetensors``: every tensor
    would be initialised at random; refused in one line naming them, no transformers report."""
    folder = tmp_path / "mixed"
    shutil.copytree(exported[2], folder)
    shutil.copy(default_export[2] / "model.safetensors", folder / "model.safetensors")
    capfd.readouterr()
    with pytest.raises(UserError, match=r"mixed: its weights do not fit its config\.json \(\d+ "
                                        r"tensor\(s\) missing.*partly random model"):
        hugging_face_model(folder)
    out, err = capfd.readouterr()
    assert "newly initialized" not in err and "newly initialized" not in out
    # a config.json that no longer fits the weights (another vocabulary size): one line, and
    # transformers' load report does not reach the user
    edited = tmp_path / "edited"
    shutil.copytree(exported[2], edited)
    config = json.loads((edited / "config.json").read_text())
    config["vocab_size"] += 8
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"edited: "):
        hugging_face_model(edited)
    out, err = capfd.readouterr()
    assert not err.strip() and not out.strip(), (out, err)


def _drop_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "tok.model"):
        (folder / name).unlink()


def _truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("layout", ["roberta", "minilm"])
@pytest.mark.parametrize("damage, names", [
    (_drop_weights, r"model\.safetensors"), (_drop_tokenizer, r"tokenizer\.json"),
    (_truncate_weights, r"model\.safetensors.*truncated")])
def test_a_missing_or_damaged_file_is_one_line_naming_it(exported, default_export, tmp_path,
                                                         no_prompt, layout, damage, names):
    """Fails on the old code: transformers' traceback, naming no file."""
    from minilm_jax.evals.scoring_models import scoring_model

    source = exported[2] if layout == "roberta" else default_export[2]
    folder = shutil.copytree(source, tmp_path / layout)
    damage(folder)
    with pytest.raises(UserError, match=names) as err:
        scoring_model(folder)
    assert "\n" not in str(err.value)
