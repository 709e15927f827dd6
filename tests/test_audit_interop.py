"""The Hugging Face interop beyond the exported RoBERTa folder of tests/test_audit_export.py, each
fact checked against an independent computation: config.json fields of both layouts against
hand-built values, the import defaults against RobertaConfig's, a tied checkpoint's decoder, a
classifier's label maps in the run's order, conv kernels read back with numpy, which checkpoint of a
run is exported (its weights, card and provenance), a RoBERTa folder's provenance read back as an
init.checkpoint, the twin check's tolerance formula, its perturbed draw and its second parameter
set, and a card's numbers (the exported member's validation, the random-init twin's score)."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest

from conftest import shared_path
from test_interop_export_models import _perturbed


def _cfg(**fields):
    from minilm_jax.model.sizes import resolve_point

    return resolve_point("E32-H32-I64-L2-A4-V100", max_len=8, **fields)


def _write(model, out, labels=()):
    """``model`` written in the layout it fits, without the twin check (numpy files only)."""
    pytest.importorskip("safetensors")
    from minilm_jax.interop.hf_files import write_hf_dir
    from minilm_jax.interop.hf_minilm import hf_layout

    config, tensors, _ = hf_layout(model, labels)
    return write_hf_dir(out, config, tensors, copies=[], tokenizer=None, max_len=model.cfg.max_len)


# ------------------------------------------------------------------------------- config.json


def test_roberta_config_carries_each_dropout_and_eps_under_its_own_name():
    """Dropouts and eps away from their defaults land under RoBERTa's names, and come back."""
    from minilm_jax.interop.hf_roberta import hf_config_from_model_config, model_config_from_hf

    cfg = _cfg(embed_projection=False, hidden_dropout=0.05, attention_dropout=0.2,
               layer_norm_eps=1e-3)
    hf = hf_config_from_model_config(cfg)
    assert (hf["hidden_dropout_prob"], hf["attention_probs_dropout_prob"]) == (0.05, 0.2)
    assert (hf["layer_norm_eps"], hf["max_position_embeddings"]) == (1e-3, 8 + 2)
    back = model_config_from_hf(hf)
    assert (back.hidden_dropout, back.attention_dropout, back.layer_norm_eps) == (0.05, 0.2, 1e-3)
    assert (back.max_len, back.position_offset) == (8, 2)


def test_import_reads_roberta_defaults_for_fields_a_config_leaves_out():
    """A config.json of transformers' minimum: eps is RobertaConfig's 1e-12 (not ours, 1e-5), the
    dropouts read from their own keys, max_len = positions - (pad + 1)."""
    from minilm_jax.interop.hf_roberta import model_config_from_hf

    hf = {"model_type": "roberta", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
          "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 20,
          "pad_token_id": 0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.3}
    cfg = model_config_from_hf(hf)
    assert cfg.layer_norm_eps == 1e-12  # transformers.RobertaConfig().layer_norm_eps
    assert (cfg.hidden_dropout, cfg.attention_dropout) == (0.0, 0.3)
    assert (cfg.max_len, cfg.position_offset, cfg.type_vocab_size) == (20 - 1, 1, 2)


def test_remote_config_keeps_position_offset_and_eps_away_from_their_defaults(tmp_path):
    """A model RoBERTa cannot hold (position offset 0, not pad + 1) writes our layout; its
    config.json names every field the PyTorch code reads, also those equal to its defaults'
    opposite (offset 0, eps 1e-3), against a hand-built expectation."""
    from minilm_jax.model import build_mlm

    cfg = _cfg(position_offset=0, layer_norm_eps=1e-3, hidden_dropout=0.05)
    out = _write(build_mlm(cfg, seed=0), tmp_path / "hf")
    got = json.loads((out / "config.json").read_text())
    want = {"model_type": "minilm_jax", "architectures": ["MinilmForMaskedLM"],
            "vocab_size": 100, "embedding_size": 32, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 8,
            "position_offset": 0, "layer_norm_eps": 1e-3, "hidden_dropout_prob": 0.05,
            "attention_probs_dropout_prob": 0.1, "embed_projection": True,
            "norm_position": cfg.norm_position, "type_vocab_size": 2, "pad_token_id": 1}
    assert {k: got.get(k) for k in want} == want


def test_a_tied_checkpoint_without_the_key_gets_the_word_embedding_as_decoder(tmp_path):
    """RobertaConfig ties by default: a folder with no ``tie_word_embeddings`` and no decoder
    weight imports with our decoder kernel = the word embedding transposed (numpy on the file)."""
    from safetensors.numpy import load_file, save_file

    from minilm_jax.interop.hf_import import import_roberta
    from minilm_jax.model import build_mlm

    out = _write(_perturbed(build_mlm(_cfg(embed_projection=False), seed=0)), tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    del config["tie_word_embeddings"]
    (out / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(out / "model.safetensors"))
    del tensors["lm_head.decoder.weight"]
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    model = import_roberta(out)
    word = tensors["roberta.embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(np.asarray(model.mlm_head.decoder.kernel.get_value()), word.T)
    np.testing.assert_array_equal(np.asarray(model.mlm_head.decoder.bias.get_value()),
                                  tensors["lm_head.bias"])


def test_classifier_label_maps_keep_the_runs_label_order():
    """id i is the run's label i (not the i-th in sorted order); label2id is its inverse."""
    from minilm_jax.interop.hf_minilm import label_fields

    fields = label_fields(["entailment", "neutral", "contradiction"], regression=False)
    assert fields["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert fields["label2id"] == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert fields["problem_type"] == "single_label_classification"


def test_conv_front_end_crosses_as_torch_conv_weights_and_back(tmp_path):
    """A conv kernel [kh, kw, in, out] is saved as torch's [out, in, kh, kw] (numpy on the file)
    and imported back exactly: a 3x3 kernel with kh and kw swapped would have the same shape."""
    from flax import nnx
    from safetensors.numpy import load_file

    from minilm_jax.interop.hf_import import import_minilm
    from minilm_jax.model import build_mlm

    model = _perturbed(build_mlm(_cfg(arch="bert_conv", conv_layers=2, conv_channels=3), seed=0))
    out = _write(model, tmp_path / "hf")
    tensors = load_file(str(out / "model.safetensors"))
    ours = {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model))}
    convs = [k for k, v in ours.items() if k.endswith("kernel") and v.ndim == 4]
    assert convs
    for key in convs:
        name = "minilm" + key[len("encoder"):-len("kernel")] + "weight"
        # file[o, i, h, w] == ours[h, w, i, o] at every index
        np.testing.assert_array_equal(np.einsum("oihw->hwio", tensors[name]), ours[key])
    assert any(ours[k].shape[0] == 3 for k in convs)  # a 3x3 kernel: kh, kw swappable
    back = {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(import_minilm(out)))}
    assert back.keys() == ours.keys()
    for key in ours:
        np.testing.assert_array_equal(back[key], ours[key], err_msg=key)


# ------------------------------------------------------------------------------ twin check


def test_twin_tolerance_is_the_documented_float32_rule():
    """``2 x 8 x eps/2 x sqrt(terms) x scale``; terms: per layer H + I + T, then E + H, then
    9 x C per conv layer (hand-counted for L=2, H=32, I=64, T=8, E=32, two conv layers of 3)."""
    from minilm_jax.interop.twin_check import tolerance

    eps = float(np.finfo(np.float32).eps)
    assert tolerance(_cfg(), 3.0) == pytest.approx(8 * eps * math.sqrt(2 * 104 + 64) * 3.0)
    conv = _cfg(arch="bert_conv", conv_layers=2, conv_channels=3)
    assert tolerance(conv, 1.0) == pytest.approx(8 * eps * math.sqrt(272 + 2 * 27))


def test_perturbed_kernels_keep_their_input_scale():
    """A perturbed kernel [in, out] is N(0, 1/in): the FFN's up [32, 64] and down [64, 32]
    kernels have standard deviations 1/sqrt(32) and 1/sqrt(64), biases and tables N(0, 1)."""
    from minilm_jax.interop.twin_check import perturbed
    from minilm_jax.model import build_mlm

    model = perturbed(build_mlm(_cfg(num_layers=1, ffn_dim=256), seed=0))
    ffn = model.encoder.layers[0].ffn
    up, down = (np.asarray(k.get_value()) for k in (ffn.up.kernel, ffn.down.kernel))
    assert up.shape == (32, 256) and down.shape == (256, 32)
    assert np.std(up) == pytest.approx(1 / math.sqrt(32), rel=0.05)
    assert np.std(down) == pytest.approx(1 / math.sqrt(256), rel=0.05)
    table = np.asarray(model.encoder.word_embeddings.embedding.get_value())
    assert np.std(table) == pytest.approx(1.0, rel=0.05)


def test_twin_check_refuses_a_twin_wrong_only_where_attention_is_used(tmp_path):
    """With query and key at zero every attention head is uniform, so a folder claiming 2 heads
    instead of 4 gives our logits at the exported parameters; the perturbed ones expose it."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from minilm_jax.interop.hf_files import InteropError
    from minilm_jax.interop.hf_roberta import hf_tensors
    from minilm_jax.interop.twin_check import verify_export
    from minilm_jax.model import build_mlm

    model = _perturbed(build_mlm(_cfg(embed_projection=False), seed=0))
    for layer in model.encoder.layers:
        for part in (layer.attention.query, layer.attention.key):
            for var in (part.kernel, part.bias):
                var.set_value(var.get_value() * 0)
    out = _write(model, tmp_path / "hf")
    check = lambda: verify_export(model, out, implementation="RobertaForMaskedLM",  # noqa
                                  remote=False, tensors_of=hf_tensors)
    assert check().verified
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "num_attention_heads": 2}))
    with pytest.raises(InteropError, match="perturbed parameters"):
        check()


# ----------------------------------------------------------------------- a run's export


@pytest.fixture(scope="module")
def step15_export(pretrained, tmp_path_factory):
    """The ``pretrained`` run (checkpoints at steps 15 and 30) exported at ``step:15``."""
    pytest.importorskip("safetensors")
    from minilm_jax.interop.workdir import export_workdir

    out = tmp_path_factory.mktemp("audit_interop") / "hf"
    return export_workdir(pretrained["pre"], out, which="step:15")


def test_export_of_an_earlier_step_holds_that_steps_weights(pretrained, step15_export):
    """``which=step:15`` writes the step-15 weights (not the best or latest, step 30): the file's
    word embedding is the checkpoint's, read back with numpy; its provenance says step 15."""
    from safetensors.numpy import load_file

    from minilm_jax.runs.pretrained import PretrainedRun

    tensors = load_file(str(step15_export / "model.safetensors"))
    config = json.loads((step15_export / "config.json").read_text())
    name = [k for k in tensors if k.endswith("word_embeddings.weight")]
    assert len(name) == 1

    def table(which):
        state = PretrainedRun.open(pretrained["pre"], which).model_state()
        return np.asarray(state["encoder"]["word_embeddings"]["embedding"].get_value())

    early, late = table("step:15"), table("latest")
    assert not np.array_equal(early, late)
    np.testing.assert_array_equal(tensors[name[0]], early)
    assert config["minilm_jax"]["provenance"]["step"] == 15


def test_card_carries_the_runs_own_numbers(pretrained, step15_export):
    """The card's batch size and best test perplexity are those of the run's config.json and
    summary.json; the command names ``--which=step:15``."""
    card = (step15_export / "README.md").read_text()
    flat = json.loads((pretrained["pre"] / "config.json").read_text())
    best = json.loads((pretrained["pre"] / "summary.json").read_text())["best"]
    assert flat["train.batch_size"] == 32 and flat["eval.batch_size"] != 32
    assert "| batch size (sequences) | 32 |" in card
    assert f"| test perplexity (best) | {best['test_perplexity']:.4g} |" in card
    assert "--which=step:15" in card


def test_a_roberta_folder_as_init_checkpoint_reads_its_provenance(tmp_path):
    """A RoBERTa folder opened as an init.checkpoint reports the step and validation perplexity
    its export recorded under ``minilm_jax.provenance`` in config.json."""
    pytest.importorskip("safetensors")
    from minilm_jax.interop.hf_roberta import export_roberta
    from minilm_jax.model import build_mlm
    from minilm_jax.runs.pretrained import PretrainedRun

    out = export_roberta(build_mlm(_cfg(embed_projection=False), seed=0), tmp_path / "hf",
                         provenance={"step": 7, "validation_perplexity": 12.5})
    run = PretrainedRun.open(out)
    assert run.hugging_face and (run.step, run.validation_perplexity) == (7, 12.5)


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory):
    """A 3-class table task fine-tuned for one epoch from the ``pretrained`` run, seeds 0 and 1."""
    import csv

    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.finetune.finetuner import Finetuner

    root = tmp_path_factory.mktemp("audit_interop_ft")
    text = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()[:40]
    rows = [(" ".join(line.split()[:16]), ("b", "a", "c")[i % 3]) for i, line in enumerate(text)]
    (root / "data").mkdir()
    for split, part in (("train", rows[:32]), ("test", rows[32:])):
        with open(root / "data" / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *part])
    c = finetune_config("table")
    c.data.dir, c.data.max_len = str(root / "data"), 32
    c.train.epochs, c.train.batch_size, c.train.seeds = 1, 16, (0, 1)
    c.train.progress, c.eval.batch_size, c.mesh.data = False, 32, 1
    c.init.checkpoint = str(pretrained["pre"])
    assert Finetuner(c, root / "cls", c.init.mode).run()["status"] == "completed"
    return root / "cls"


def test_classifier_card_states_the_exported_members_own_validation(finetuned, tmp_path):
    """Exporting seed 1 (member 1) at the default ``which`` (best): the card's validation rows
    are member 1's numbers in the run's summary.json (made distinct from member 0's here), and
    the parameters are the selected epoch's (said in provenance and card; with one epoch the
    final ones hold the same weights, so only what the export says tells them apart)."""
    import shutil

    pytest.importorskip("safetensors")
    from minilm_jax.interop.workdir import export_workdir

    run = shutil.copytree(finetuned, tmp_path / "cls")
    summary = json.loads((run / "summary.json").read_text())
    mine = {"accuracy": 61.5, "macro_f1": 40.25, "score": 50.875}
    summary["validation"]["members"][1] = mine
    (run / "summary.json").write_text(json.dumps(summary))
    out = export_workdir(run, tmp_path / "hf", seed=1)
    card = (out / "README.md").read_text()
    for key, value in mine.items():
        assert f"| validation {key} (this member) | {value:.4g} |" in card, key
    provenance = json.loads((out / "config.json").read_text())["minilm_jax"]["provenance"]
    assert (provenance["seed"], provenance["parameters"]) == (1, "selected")
    assert "| parameters | selected epoch (best validation score) |" in card


# ------------------------------------------------------------------------------- model card


def test_card_states_the_twins_mean_and_sd_over_seeds(tmp_path):
    """The random-init twin's row: the mean and the std of its summary's ``selected`` score."""
    from minilm_jax.interop.model_card import add_twin_score

    twin = {"task": "sst2", "status": "completed", "seeds": [0, 1, 2],
            "selected": {"mean": {"score": 71.25}, "std": {"score": 2.5}}}
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "summary.json").write_text(json.dumps(twin))
    facts = types.SimpleNamespace(metrics=[], findings=[])
    summary = types.SimpleNamespace(init="pretrained", task="sst2",
                                    selected={"mean": {"score": 80.0}})
    add_twin_score(facts, tmp_path / "pretrained", summary, "selected")
    assert facts.metrics == [("random-init twin (random/) score, selected parameters (mean ± sd)",
                              "71.25 ± 2.50 over 3 seeds")]
    assert facts.findings == []
