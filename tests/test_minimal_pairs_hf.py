"""Our minimal-pair scores of a checkpoint equal a transformers-based scoring of its export: the
model in PyTorch, the exported tokenizer through AutoTokenizer, word boundaries from its word ids."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from conftest import shared_path
from minilm_jax.evals.hf_scorer import hugging_face_model
from minilm_jax.evals.minimal_pairs import score_paradigms
from minilm_jax.evals.scoring import RULES, mlm_target_logprobs
from minilm_jax.evals.suites import open_suite
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
    for rule in RULES:
        a = score_paradigms(paradigms, tokenizer, ours, rule, batch_rows=64)
        b = score_paradigms(paradigms, hf_tokenizer, theirs, rule, batch_rows=64)
        for x, y in zip(a, b):
            assert x.scored == y.scored >= 50  # a few pairs hold a character it lacks
            np.testing.assert_allclose(x.margins, y.margins, atol=1e-4, rtol=1e-4)
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
