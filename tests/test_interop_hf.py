"""Hugging Face RoBERTa interop: our MaskedLM <-> transformers.RobertaForMaskedLM, checked numerically
on real text (WikiText-2 words hashed to ids) in both directions, plus the refusals and file safety."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from conftest import float32_tolerance  # noqa: E402
from minilm_jax.interop.hf_import import import_roberta  # noqa: E402
from minilm_jax.interop.hf_roberta import InteropError, export_roberta  # noqa: E402
from minilm_jax.model import build_classifier, build_mlm  # noqa: E402
from minilm_jax.model.sizes import resolve_point  # noqa: E402

VOCAB = 1000
POINT = f"E64-H64-I128-L2-A4-V{VOCAB}"
MAX_LEN = 64
# The reductions of a forward pass (POINT; the fill-mask models are narrower): each of 2 layers'
# hidden and ffn widths, attention over up to MAX_LEN positions, the head's dense layer.
TERMS = 2 * (64 + 128) + MAX_LEN + 64
PAD, BOS, EOS = 1, 0, 2
LENGTHS = (MAX_LEN, 37, 12, 5)  # the first row fills the position table up to its last row


def logits_tolerance(ours: np.ndarray) -> float:
    """PyTorch's and our float32 forward passes of the same weights: the same sums in other
    orders (tests/conftest.py, float32_tolerance), at the scale of the logits."""
    return float32_tolerance(float(np.max(np.abs(ours))), TERMS)


def shared_data_dir() -> Path:
    env = os.environ.get("MINILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def word_id(word: str, vocab: int) -> int:
    """A deterministic hash of a word into the non-special ids [5, vocab)."""
    return 5 + zlib.crc32(word.encode("utf-8")) % (vocab - 5)


@pytest.fixture(scope="module")
def text_lines() -> list[list[str]]:
    path = shared_data_dir() / "wikitext2" / "tokenized" / "wiki.valid.tokens"
    if not path.is_file():
        pytest.skip(f"WikiText-2 not found at {path} (set MINILM_SHARED_DATA)")
    lines = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if len(words) >= MAX_LEN and not line.strip().startswith("="):
                lines.append(words)
            if len(lines) == len(LENGTHS):
                break
    assert len(lines) == len(LENGTHS)
    return lines


def encode(lines: list[list[str]], vocab: int, lengths=LENGTHS) -> np.ndarray:
    """``<s> words </s>`` rows of the given lengths, right-padded with pad: ``[B, max(lengths)]``."""
    tokens = np.full((len(lengths), max(lengths)), PAD, np.int64)
    for row, (words, n) in enumerate(zip(lines, lengths)):
        tokens[row, :n] = [BOS] + [word_id(w, vocab) for w in words[:n - 2]] + [EOS]
    return tokens


def flat_params(model) -> dict:
    return {path: np.asarray(var.get_value())
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def randomise(model, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter (biases, LayerNorm gains, ...) so no mapping hides behind 0/1."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)  # numpy: no program compiled per parameter shape
    leaves = [jnp.asarray(np.asarray(x) + (scale * rng.standard_normal(x.shape)).astype(x.dtype))
              for x in leaves]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))


def hf_logits(hf_model, tokens: np.ndarray, with_mask: bool = True) -> np.ndarray:
    kwargs = {"input_ids": torch.from_numpy(tokens)}
    if with_mask:
        kwargs["attention_mask"] = torch.from_numpy((tokens != PAD).astype(np.int64))
    with torch.no_grad():
        return hf_model(**kwargs).logits.float().numpy()


@nnx.jit
def all_logits(model, tokens):
    """``model.all_logits(tokens)`` as one compiled program per model structure and input shape
    (run eagerly, op by op, a forward pass compiles each of its operations anew: seconds)."""
    return model.all_logits(tokens)


def max_diff_at_real(ours: np.ndarray, theirs: np.ndarray, tokens: np.ndarray) -> float:
    real = tokens != PAD
    assert ours.shape == theirs.shape
    return float(np.max(np.abs(ours[real] - theirs[real])))


@pytest.fixture(scope="module")
def cfg():
    return resolve_point(POINT, embed_projection=False, max_len=MAX_LEN)


@pytest.fixture(scope="module")
def model(cfg):
    m = build_mlm(cfg, seed=3)
    before = flat_params(m)
    randomise(m, seed=4)
    after = flat_params(m)
    assert all(not np.array_equal(before[k], after[k]) for k in before)
    return m


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> Path:
    return export_roberta(model, tmp_path_factory.mktemp("export") / "hf")


# ----------------------------------------------------------------------------- ours -> transformers


def test_export_writes_a_complete_roberta_checkpoint(exported, cfg):
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["RobertaForMaskedLM"]
    assert config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == MAX_LEN + 2 == cfg.num_positions
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (1, 0, 2)
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["vocab_size"]) == (64, 128, 2, 4, VOCAB)
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == cfg.layer_norm_eps
    # transformers finds exactly the tensors it expects, with the right shapes.
    hf, info = transformers.RobertaForMaskedLM.from_pretrained(
        str(exported), attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.lm_head.decoder.weight is not hf.roberta.embeddings.word_embeddings.weight
    ours = load_file(str(exported / "model.safetensors"))
    theirs = {k for k in hf.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}
    assert set(ours) == theirs


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_transformers(model, exported, text_lines, attn_implementation):
    hf = transformers.RobertaForMaskedLM.from_pretrained(
        str(exported), attn_implementation=attn_implementation).eval()
    tokens = encode(text_lines, VOCAB)  # padded batch, with attention_mask
    ours = np.asarray(all_logits(model, jnp.asarray(tokens)))
    diff = max_diff_at_real(ours, hf_logits(hf, tokens), tokens)
    single = tokens[:1]  # one full row, no padding, no attention_mask
    ours_single = ours[:1]  # our logits of that row (ours take no mask: padding is by pad id)
    diff_single = max_diff_at_real(ours_single, hf_logits(hf, single, with_mask=False), single)
    print(f"\nours->HF ({attn_implementation}): max abs logit diff {diff:.3g} (padded batch), "
          f"{diff_single:.3g} (single row); logit scale {np.abs(ours).max():.3g}")
    assert diff < logits_tolerance(ours) and diff_single < logits_tolerance(ours_single)


def test_import_of_export_is_exact(model, exported, cfg):
    back = import_roberta(exported)
    assert back.cfg == cfg
    a, b = flat_params(model), flat_params(back)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- transformers -> ours


def test_transformers_checkpoint_imports(text_lines, tmp_path):
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=MAX_LEN + 2, type_vocab_size=1,
        layer_norm_eps=1e-5)  # tie_word_embeddings defaults to True
    torch.manual_seed(0)
    hf = transformers.RobertaForMaskedLM(config)
    with torch.no_grad():
        for p in hf.parameters():  # tied parameters appear once
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path))
    assert "lm_head.decoder.weight" not in load_file(str(tmp_path / "model.safetensors"))
    hf = transformers.RobertaForMaskedLM.from_pretrained(str(tmp_path),
                                                         attn_implementation="eager").eval()

    ours = import_roberta(tmp_path)
    assert (ours.cfg.max_len, ours.cfg.type_vocab_size, ours.cfg.embed_projection) == (
        MAX_LEN, 1, False)
    params = flat_params(ours)
    word = params[("encoder", "word_embeddings", "embedding")]
    np.testing.assert_array_equal(params[("mlm_head", "decoder", "kernel")], word.T)
    np.testing.assert_array_equal(params[("mlm_head", "decoder", "bias")],
                                  hf.lm_head.bias.detach().numpy())
    tokens = encode(text_lines, VOCAB)
    mine = np.asarray(all_logits(ours, jnp.asarray(tokens)))
    diff = max_diff_at_real(mine, hf_logits(hf, tokens), tokens)
    print(f"\nHF->ours: max abs logit diff {diff:.3g}")
    assert diff < logits_tolerance(mine)


# ----------------------------------------------------------------------------------------- refusals

TINY = "E16-H16-I32-L1-A2-V50"


@pytest.mark.parametrize("point,overrides,field", [
    (TINY, dict(embed_projection=True), "embed_projection"),
    ("E16-H32-I32-L1-A2-V50", dict(embed_projection=True), "emb_dim"),
    (TINY, dict(embed_projection=False, norm_position="pre"), "norm_position"),
    (TINY, dict(embed_projection=False, arch="bert_conv", conv_layers=1, conv_channels=2),
     "conv_layers"),
    (TINY, dict(embed_projection=False, position_offset=0), "position_offset"),
])
def test_export_refuses_what_roberta_cannot_represent(point, overrides, field, tmp_path):
    # shapes only (no initialisation, op by op): the refusal reads the configuration, no weight
    tiny = nnx.eval_shape(lambda: build_mlm(resolve_point(point, max_len=8, **overrides)))
    with pytest.raises(ValueError, match=field):
        export_roberta(tiny, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary directory


def test_export_refuses_non_mlm(tmp_path):
    clf = nnx.eval_shape(lambda: build_classifier(resolve_point(TINY, embed_projection=False,
                                                                max_len=8), 2))  # shapes only
    with pytest.raises(TypeError, match="MaskedLM"):
        export_roberta(clf, tmp_path / "out")


def test_export_never_overwrites_unless_asked(tmp_path):
    tiny = build_mlm(resolve_point(TINY, embed_projection=False, max_len=8))
    out = tmp_path / "out"
    out.mkdir()
    export_roberta(tiny, out)  # an existing empty directory is fine
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_roberta(tiny, out)
    assert (out / "keep.txt").read_text() == "mine"
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    export_roberta(tiny, out, overwrite=True, tokenizer_path=tokenizer)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                     "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tokenizer.json"]  # no leftovers


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_import_errors(exported, tmp_path):
    with pytest.raises(FileNotFoundError):
        import_roberta(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json"):
        import_roberta(tmp_path)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(exported / "config.json", no_weights)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        import_roberta(no_weights)
    for i, (changes, field) in enumerate([
            (dict(model_type="bert"), "model_type"),
            (dict(architectures=["RobertaForSequenceClassification"]), "architectures"),
            (dict(hidden_act="gelu_new"), "hidden_act"),
            (dict(position_embedding_type="relative_key"), "position_embedding_type"),
            (dict(hidden_size=32), "shape")]):
        with pytest.raises(ValueError, match=field):
            import_roberta(_edit_config(exported, tmp_path / f"bad{i}", **changes))
    missing = _edit_config(exported, tmp_path / "missing")
    tensors = load_file(str(missing / "model.safetensors"))
    tensors["roberta.encoder.layer.0.crossattention.self.query.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(missing / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InteropError, match="does not know"):
        import_roberta(missing)
    del tensors["roberta.encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(missing / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InteropError, match="lacks"):
        import_roberta(missing)


def test_demo_command(tmp_path, capsys):
    from minilm_jax.interop.__main__ import main

    args = ["demo", "--point", TINY, "--max_len", "8", "--out", str(tmp_path / "demo")]
    assert main(args) == 0
    assert "parameters identical = True" in capsys.readouterr().out
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert main(args + ["--overwrite"]) == 0


# ------------------------------------------------------------------- fill-mask, both layouts
@pytest.fixture(scope="module")
def tokenizers_for_fill_mask(tmp_path_factory, text_lines) -> dict[str, object]:
    """A SentencePiece BPE model (the one whose "<mask>" the export used to spell out) and a
    WordPiece vocabulary, both of 600 entries, trained on WikiText-2."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece, train_wordpiece
    from minilm_jax.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("fill_mask_tokenizers")
    path = shared_data_dir() / "wikitext2" / "tokenized" / "wiki.valid.tokens"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
             if len(line.split()) >= 12]
    (root / "bpe.model").write_bytes(train_sentencepiece(lines, 600, "bpe"))
    (root / "vocab.txt").write_bytes(train_wordpiece(lines, 600))
    return {"bpe": load_tokenizer(root / "bpe.model"), "wordpiece": load_tokenizer(root / "vocab.txt")}


def no_prompt(monkeypatch) -> list[str]:
    """Record (and refuse) every question transformers asks on stdin."""
    asked: list[str] = []

    def refuse(prompt: str = "") -> str:
        asked.append(prompt)
        raise EOFError

    monkeypatch.setattr("builtins.input", refuse)
    return asked


# Each layout and each tokenizer kind once: the tokenizer files are written alike in both layouts
# (hf_minilm.export_model); a BPE tokenizer beside remote code goes through the pipeline in
# tests/test_interop_export_models.py (test_pretraining_export_fills_the_mask_in_the_pipeline).
@pytest.mark.parametrize("layout,kind", [("roberta", "bpe"), ("remote", "wordpiece")])
def test_fill_mask_pipeline_finds_the_mask_in_both_layouts(layout, kind, tokenizers_for_fill_mask,
                                                           tmp_path, monkeypatch):
    """Fails on the old export (split_special_tokens: "<mask>" and "[MASK]" spelled out, "No
    mask_token found"): the card's example sentence goes through transformers' fill-mask pipeline,
    the mask found, the top 5 tokens those of the vocabulary with the model's own probabilities;
    the tokenizer loads as the card writes it (trust_remote_code=False beside remote code), asking
    nothing."""
    from minilm_jax.interop.hf_minilm import export_model

    tok = tokenizers_for_fill_mask[kind]
    point = ("E32-H32-I64-L2-A2-V600" if layout == "roberta" else "E16-H32-I64-L2-A2-V600")
    model = build_mlm(resolve_point(point, embed_projection=layout == "remote"))
    randomise(model, 3)
    out = export_model(model, tmp_path / "hf", tokenizer=tok)
    config = json.loads((out / "config.json").read_text())
    assert ("auto_map" in config) == (layout == "remote")
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast" and "auto_map" not in tok_config

    asked = no_prompt(monkeypatch)
    args = {"trust_remote_code": False} if layout == "remote" else {}  # as the model card writes
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), **args)
    assert not asked, asked[0]
    mask = hf_tok.mask_token
    text = f"the {mask} sat on the mat"
    ids = hf_tok(text)["input_ids"]
    assert ids.count(tok.mask_id) == 1 and hf_tok.mask_token_id == tok.mask_id
    # The mask stands for a whole word, as in pre-training: no lone "▁" piece before it.
    assert ids == [tok.bos_id, *tok.encode("the"), tok.mask_id, *tok.encode("sat on the mat"),
                   tok.eos_id]
    for special in (hf_tok.unk_token, hf_tok.cls_token, hf_tok.sep_token):  # specials, whole
        assert hf_tok(f"a {special} b", add_special_tokens=False)["input_ids"].count(
            hf_tok.convert_tokens_to_ids(special)) == 1

    fill = transformers.pipeline("fill-mask", model=str(out), trust_remote_code=True)
    assert not asked, asked[0]
    predictions = fill(text)
    assert len(predictions) == 5
    with torch.no_grad():
        logits = fill.model(input_ids=torch.tensor([ids])).logits[0, ids.index(tok.mask_id)]
    probs = torch.softmax(logits, -1).numpy()
    top = np.argsort(-probs)[:5]
    assert [p["token"] for p in predictions] == top.tolist()
    # the pipeline's own forward pass (with an attention mask): a probability p moves by at most
    # 2 p times its logits' error, plus the rounding of a softmax's sum over the vocabulary
    rtol = 2 * logits_tolerance(logits.numpy()) + float32_tolerance(1.0, tok.vocab_size)
    np.testing.assert_allclose([p["score"] for p in predictions], probs[top], rtol=rtol, atol=0)
    assert sum(p["score"] for p in predictions) <= 1.0
    for p in predictions:
        assert 0 <= p["token"] < tok.vocab_size and p["token_str"] == hf_tok.decode([p["token"]])
        assert p["sequence"].endswith("sat on the mat") and mask not in p["sequence"]
    ours = np.asarray(all_logits(model, jnp.asarray([ids], jnp.int32)))[0, ids.index(tok.mask_id)]
    assert np.max(np.abs(ours - logits.numpy())) < logits_tolerance(ours)  # it runs our model
