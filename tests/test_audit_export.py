"""The exported RoBERTa folder and the zero-shot numbers read off it, checked against independent
computations: the safetensors file read back with numpy, transformers' own tokenizer and forward
pass on the folder, and the in-training scalar counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path

MAX_LEN = 16
POINT = "E32-H32-I64-L2-A4-V410"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small RoBERTa-shaped masked LM (weights moved off their initialisation) exported with a
    400-piece SentencePiece BPE tokenizer trained on WikiText-2 lines."""
    pytest.importorskip("safetensors")
    import jax
    from flax import nnx

    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.interop.hf_roberta import export_roberta
    from minilm_jax.model import build_mlm
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("audit_export")
    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12][:1500]
    (root / "tok.model").write_bytes(train_sentencepiece(lines, 400, "bpe"))
    tokenizer = load_tokenizer(root / "tok.model")
    model = build_mlm(resolve_point(POINT, embed_projection=False, max_len=MAX_LEN), seed=3)
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    keys = jax.random.split(jax.random.key(4), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [
        x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]))
    return tokenizer, model, export_roberta(model, root / "hf", tokenizer=tokenizer)


def copy_of(out, tmp_path):
    import shutil

    return shutil.copytree(out, tmp_path / "hf")


def test_both_names_of_the_output_bias_hold_the_models_bias(exported):
    """The file keeps the MLM output bias under both names transformers uses for it
    (``lm_head.decoder.bias`` and ``lm_head.bias``, the one transformers 4 ties into the
    decoder), each equal to our decoder's bias."""
    from safetensors.numpy import load_file

    _, model, out = exported
    tensors = load_file(str(out / "model.safetensors"))
    ours = np.asarray(model.mlm_head.decoder.bias.get_value(), np.float32)
    assert np.any(ours != 0)
    np.testing.assert_array_equal(tensors["lm_head.decoder.bias"], ours)
    np.testing.assert_array_equal(tensors["lm_head.bias"], ours)


def test_twin_check_refuses_a_folder_with_a_wrong_second_token_type_row(exported, tmp_path):
    """The twin check's probe batch holds a sentence pair typed 0 then 1: a folder whose type-1
    embedding row differs from ours is refused (and the unchanged folder passes)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.numpy import load_file, save_file

    from minilm_jax.interop.hf_files import InteropError
    from minilm_jax.interop.hf_roberta import hf_tensors
    from minilm_jax.interop.twin_check import verify_export

    _, model, out = exported
    folder = copy_of(out, tmp_path)
    check = lambda: verify_export(model, folder, implementation="RobertaForMaskedLM",  # noqa
                                  remote=False, tensors_of=hf_tensors)
    assert check().verified
    tensors = load_file(str(folder / "model.safetensors"))
    table = tensors["roberta.embeddings.token_type_embeddings.weight"]
    table[1] += np.random.default_rng(0).normal(0.0, 1.0, table.shape[1])  # not constant: LN
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InteropError):
        check()


def test_scorer_takes_inputs_as_long_as_roberta_positions_allow(exported, tmp_path):
    """A RoBERTa folder scored through transformers takes at most ``max_position_embeddings -
    (pad_token_id + 1)`` tokens even when its tokenizer allows more: the longest input
    transformers' forward runs (one token more fails)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minilm_jax.evals.hf_scorer import hugging_face_model

    _, _, out = exported
    folder = copy_of(out, tmp_path)
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_max_length": 512}))
    hf = transformers.RobertaForMaskedLM.from_pretrained(str(folder)).eval()

    def runs(length: int) -> bool:
        ids = torch.full((1, length), 5, dtype=torch.long)
        try:
            with torch.no_grad():
                hf(input_ids=ids)
        except (IndexError, RuntimeError):
            return False
        return True

    assert runs(MAX_LEN) and not runs(MAX_LEN + 1)
    assert hugging_face_model(folder).max_len == MAX_LEN


def test_exported_tokenizer_names_our_specials(exported):
    """``AutoTokenizer`` on the folder: ``<s>`` is bos/cls and ``</s>`` eos/sep with our ids (the
    scorer wraps sentences with them), and a pair is ``<s> A </s></s> B </s>``."""
    transformers = pytest.importorskip("transformers")
    from minilm_jax.evals.hf_scorer import HuggingFaceTokenizer

    tok, _, out = exported
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    assert (hf.cls_token_id, hf.bos_token_id) == (tok.bos_id, tok.bos_id)
    assert (hf.sep_token_id, hf.eos_token_id) == (tok.eos_id, tok.eos_id)
    a, b = tok.encode("the cat sat"), tok.encode("on the mat")
    assert hf("the cat sat", "on the mat")["input_ids"] == [
        tok.bos_id, *a, tok.eos_id, tok.eos_id, *b, tok.eos_id]
    scorer = HuggingFaceTokenizer(out)
    assert (scorer.bos_id, scorer.eos_id, scorer.pad_id, scorer.mask_id) == (
        tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id)


def test_mask_in_text_takes_the_place_of_a_whole_word(exported):
    """``"the <mask> sat"`` through the exported tokenizer is our pieces of "the", the mask id,
    our pieces of "sat", and the mask swallows the space before it as RoBERTa's does: its
    character span is " <mask>" (offsets 3 to 10)."""
    transformers = pytest.importorskip("transformers")
    tok, _, out = exported
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    got = hf("the <mask> sat", add_special_tokens=False, return_offsets_mapping=True)
    assert got["input_ids"] == [*tok.encode("the"), tok.mask_id, *tok.encode("sat")]
    assert tuple(got["offset_mapping"][got["input_ids"].index(tok.mask_id)]) == (3, 10)


def test_in_training_scalar_is_the_pooled_accuracy_over_pairs():
    """What the run loop logs per evaluation and rule is the accuracy over all scored pairs
    of that rule (not the mean of the paradigms'); a perplexity row logs its perplexity."""
    pytest.importorskip("jax")
    from minilm_jax.evals.in_training import scalars_of

    def row(rule, scored, correct):
        return {"kind": "minimal_pairs", "evaluation": "z", "rule": rule, "scored": scored,
                "correct": correct, "ties": 0}

    rows = [row("pll", 10, 9), row("pll", 2, 0), row("holistic", 4, 1), row("holistic", 4, 3),
            {"kind": "perplexity", "evaluation": "p", "split": "test", "perplexity": 12.5}]
    assert scalars_of(rows) == pytest.approx(
        {"z/pll": 100.0 * 9 / 12, "z/holistic": 50.0, "p/test_perplexity": 12.5})
