"""Hugging Face export of every model the tool trains: the default recipe's factorized masked LM
(E != H, E->H projection) and fine-tuned classifiers and regressors, loaded through transformers'
Auto classes (our remote code where RoBERTa cannot hold the model) with our logits, a model card
naming config, data, metrics and command; pre-LN, the weighted-sum pooler and the conv front end
too."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import float32_tolerance, shared_path, write_line_shards

from minilm_jax.interop.hf_files import InteropError

SEQ = 32
POINT = "E16-H32-I64-L2-A2-V600"  # factorized: E != H, the recipe's embed_projection=True
CLASSES = ("alpha", "beta", "gamma")
# The reductions of a forward pass of these models: each of 2 layers' hidden and ffn widths,
# attention over up to SEQ positions, the E->H projection and the head (each at most 32 wide).
TERMS = 2 * (32 + 64) + SEQ + 32 + 32


def logits_tolerance(want: np.ndarray) -> float:
    """PyTorch's and our float32 forward passes of the same weights: the same sums in other
    orders (tests/conftest.py, float32_tolerance), at the scale of the logits."""
    return float32_tolerance(float(np.max(np.abs(want))), TERMS)


def wiki_lines() -> list[str]:
    text = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if len(line.split()) >= 12]


def write_table(folder: Path, rows: list[tuple[str, object]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:90]), ("test", rows[90:])):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(part)


def finetune(task: str, data_dir: Path, workdir: Path, **fields) -> Path:
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.finetune.finetuner import Finetuner

    c = finetune_config(task)
    c.data.dir = str(data_dir)
    c.data.max_len = SEQ
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.seeds = (0, 1)
    c.train.progress = False
    c.eval.batch_size = 32
    c.mesh.data = 1
    for key, value in fields.items():
        section, name = key.split("__")
        c[section][name] = value
    mode = c.init.mode
    assert Finetuner(c, workdir, mode).run()["status"] == "completed"
    return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A short pre-training run of the default recipe at a factorized point, with a SentencePiece
    BPE tokenizer (whose "<mask>" the export once spelled out); a 3-class table task fine-tuned
    from it (2 seeds); a regression table task fine-tuned from random init with a RoBERTa-shaped
    model (E == H, no projection)."""
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    for package in ("safetensors", "torch", "transformers"):  # the hf and interop extras
        pytest.importorskip(package)
    root = tmp_path_factory.mktemp("export_models")
    lines = wiki_lines()
    tok_path = root / "tok.model"
    tok_path.write_bytes(train_sentencepiece(lines, 600, "bpe"))
    write_line_shards(root / "shards", load_tokenizer(tok_path), lines[:700], SEQ)
    config = pretrain_config(POINT)
    config.model.max_len = SEQ
    config.data.shards = str(root / "shards")
    config.train.num_steps = 4
    config.train.batch_size = 8
    config.train.progress = False
    config.eval.every_steps = 4
    config.eval.batch_size = 50
    config.mesh.data = 1
    config.checkpoint.every_steps = 4
    Pretrainer(config, root / "pre").run()

    texts = [" ".join(line.split()[:20]) for line in lines[800:920]]
    write_table(root / "cls_data", [(t, CLASSES[i % 3]) for i, t in enumerate(texts)])
    write_table(root / "reg_data", [(t, round(len(t) / 40.0, 2)) for t in texts])
    cls = finetune("table", root / "cls_data", root / "cls", init__checkpoint=str(root / "pre"))
    reg = finetune("table_regression", root / "reg_data", root / "reg", init__mode="random",
                   data__tokenizer=str(tok_path), model__emb_dim=32, model__hidden_dim=32,
                   model__ffn_dim=64, model__num_layers=1, model__vocab_size=600,
                   model__embed_projection=False, model__max_len=SEQ, train__seeds=(3,))
    return {"root": root, "tokenizer": tok_path, "pre": root / "pre", "cls": cls, "reg": reg}


def test_the_default_recipe_builds_a_model_roberta_cannot_hold():
    """The point of this file: the recipe's default model (E->H projection) is what most runs
    train, and it used to be refused by ``export`` (and announced as such before training)."""
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.interop.hf_roberta import export_problems
    from minilm_jax.settings.model_fields import model_from_config

    cfg = model_from_config(pretrain_config(POINT))
    assert cfg.embed_projection and cfg.emb_dim != cfg.hidden_dim
    assert any("embed_projection" in p for p in export_problems(cfg))


def test_no_export_note_before_training_the_default_recipe():
    """Fails on the old behaviour: pre-training printed 'will not export' for the default model."""
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.interop.hf_minilm import export_note

    config = pretrain_config(POINT)
    assert export_note(config) is None
    config.model.arch = "my_lab.encoders:Gated"
    assert "will not export to Hugging Face" in export_note(config)


def our_outputs(model, tokens, classifier: bool = False) -> np.ndarray:
    """Our model's logits (a classifier's, or a masked LM's at every position) as one compiled
    program (run eagerly, op by op, a forward pass compiles each of its operations: seconds)."""
    from flax import nnx

    return np.asarray(nnx.jit(lambda m, t: m(t) if classifier else m.all_logits(t))(model, tokens))


def hf_batch(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    return tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ,
                     return_tensors="np")


def test_factorized_pretraining_run_exports_with_its_own_modeling_code(runs, tmp_path):
    """Fails on the old behaviour (``error: ... embed_projection=True``): the default recipe's
    model exports, loads through the Auto classes with trust_remote_code=True and gives our logits
    at every position of a padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from flax import nnx

    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.interop.__main__ import main
    from minilm_jax.model.models import build_mlm

    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(runs["pre"]), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "minilm_jax" and config["architectures"] == ["MinilmForMaskedLM"]
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_minilm.MinilmForMaskedLM"
    assert {"modeling_minilm.py", "configuration_minilm.py", "README.md", "run_config.json",
            "tok.model", "tokenizer.json", "model.safetensors"} <= {p.name for p in out.iterdir()}

    hf, info = transformers.AutoModelForMaskedLM.from_pretrained(
        str(out), trust_remote_code=True, output_loading_info=True)
    assert type(hf).__name__ == "MinilmForMaskedLM"
    assert not any(info.values()), info  # every tensor used, none missing
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=False)
    texts = wiki_lines()[900:906] + ["a short one", "the"]
    batch = hf_batch(hf_tok, texts)
    assert (batch["attention_mask"] == 0).any()  # padded rows
    with torch.no_grad():
        theirs = hf.eval()(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                           attention_mask=torch.from_numpy(batch["attention_mask"])).logits.numpy()
    run = PretrainedRun.open(runs["pre"])
    # shapes only (no initialisation, op by op): the run's state fills every variable
    ours = nnx.eval_shape(lambda: build_mlm(run.model))
    nnx.update(ours, run.model_state())
    mine = our_outputs(ours, batch["input_ids"].astype(np.int32))
    np.testing.assert_allclose(theirs, mine, atol=logits_tolerance(mine), rtol=0)  # padding too
    base = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True)
    assert type(base).__name__ == "MinilmModel"

    card = (out / "README.md").read_text()
    summary = json.loads((runs["pre"] / "summary.json").read_text())
    for fact in (POINT, "| E (embedding width) | 16 |", "| H (hidden width) | 32 |",
                 "| E->H projection | True |", f"{summary['params']['total']:,}",
                 "| token shards | shards |", "minilm-pretrain --config=pretrain:" + POINT,
                 "--config.data.shards=shards", "--config.train.num_steps=4",
                 "python -m minilm_jax.interop export", "trust_remote_code=True",
                 f"{summary['best']['validation_perplexity']:.4g}"):
        assert fact in card, fact


def exported_test_logits(hf, out: Path, data: Path) -> np.ndarray:
    """The exported model's logits on a table task's ``test.csv``, through its own tokenizer."""
    import torch
    import transformers

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=False)
    with open(data / "test.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    # The texts are WikiText's, which writes "<unk>": read as text in training, as
    # split_special_tokens=True does (by default the specials written in text are special tokens).
    batch = hf_tok(texts, padding=True, truncation=True, max_length=SEQ, return_tensors="pt",
                   split_special_tokens=True)
    with torch.no_grad():
        return hf.eval()(**batch).logits.numpy()


def test_finetuned_classifier_exports_and_predicts_as_the_run_did(runs, tmp_path):
    """The best member of a 3-class run (factorized encoder: remote code) gives the logits the run
    saved for its test split, from the raw texts through AutoTokenizer; labels and card carried."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minilm_jax.interop.__main__ import main

    summary = json.loads((runs["cls"] / "summary.json").read_text())
    scores = [m["score"] for m in summary["validation"]["members"]]
    member = int(np.argmax(scores))
    out = tmp_path / "cls"
    assert main(["export", "--workdir", str(runs["cls"]), "--out", str(out)]) == 0
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(out), trust_remote_code=True, output_loading_info=True)
    assert type(hf).__name__ == "MinilmForSequenceClassification" and not any(info.values())
    assert hf.config.id2label == dict(enumerate(CLASSES)) and hf.config.num_labels == 3
    assert hf.config.problem_type == "single_label_classification"
    theirs = exported_test_logits(hf, out, runs["root"] / "cls_data")
    saved = np.load(runs["cls"] / "predictions" / "test.selected.npy")[member]
    np.testing.assert_allclose(theirs, saved, atol=logits_tolerance(saved), rtol=0)

    card = (out / "README.md").read_text()
    for fact in ("table", f"seed {summary['seeds'][member]}", "alpha, beta, gamma",
                 "minilm-finetune --config=finetune:table", "--config.init.checkpoint=",
                 "AutoModelForSequenceClassification", "trust_remote_code=True",
                 f"{summary['selected']['members'][member]['score']:.4g}"):
        assert fact in card, fact
    other = tmp_path / "seed1_final"
    assert main(["export", "--workdir", str(runs["cls"]), "--out", str(other), "--seed", "1",
                 "--which", "final"]) == 0
    assert json.loads((other / "config.json").read_text())["minilm_jax"]["provenance"] == {
        "workdir": str(runs["cls"]), "task": "table", "seed": 1, "parameters": "final",
        "point": POINT}


def test_finetuned_regressor_of_roberta_shape_exports_as_roberta(runs, tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minilm_jax.interop.workdir import export_workdir

    out = export_workdir(runs["reg"], tmp_path / "reg")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "roberta" and "auto_map" not in config
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(out), output_loading_info=True)
    assert type(hf).__name__ == "RobertaForSequenceClassification" and not any(info.values())
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
    theirs = exported_test_logits(hf, out, runs["root"] / "reg_data")
    saved = np.load(runs["reg"] / "predictions" / "test.selected.npy")[0]
    np.testing.assert_allclose(theirs, saved, atol=logits_tolerance(saved), rtol=0)
    card = (out / "README.md").read_text()
    assert "regression (one output)" in card and "pearson" in card
    assert "trust_remote_code" not in card


def card_python(card: str) -> str:
    """The Python block of a model card's "How to load it"."""
    return card.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def pre_export(runs, tmp_path_factory) -> Path:
    """The pre-training run exported (the default recipe's model: our remote code)."""
    from minilm_jax.interop.__main__ import main

    out = tmp_path_factory.mktemp("pre_export") / "hf"
    assert main(["export", "--workdir", str(runs["pre"]), "--out", str(out)]) == 0
    return out


def test_pretraining_export_fills_the_mask_in_the_pipeline(pre_export):
    """Fails on the old export ("No mask_token (<mask>) found on the input": the BPE tokenizer
    spelled the card's "<mask>" out): transformers' fill-mask pipeline on the card's example gives
    the top 5 tokens of the vocabulary, probabilities in order."""
    transformers = pytest.importorskip("transformers")

    fill = transformers.pipeline("fill-mask", model=str(pre_export), trust_remote_code=True)
    predictions = fill("the <mask> sat on the mat")
    assert len(predictions) == 5
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    vocab_size = fill.model.config.vocab_size
    for p in predictions:
        assert 0 <= p["token"] < vocab_size and p["token_str"] == fill.tokenizer.decode([p["token"]])
        assert p["sequence"].endswith("sat on the mat") and "<mask>" not in p["sequence"]


def test_pretraining_card_runs_as_written_without_a_prompt(pre_export):
    """Fails on the old card (its AutoTokenizer line asked transformers' custom-code [y/N]
    question): the card's Python block runs with stdin closed, asks nothing, prints the fill-mask
    predictions; the tokenizer config names a standard class and no auto_map."""
    import subprocess
    import sys

    pytest.importorskip("transformers")
    tok_config = json.loads((pre_export / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast" and "auto_map" not in tok_config
    code = card_python((pre_export / "README.md").read_text())
    done = subprocess.run([sys.executable, "-c", code], cwd=pre_export, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    said = done.stdout + done.stderr
    assert "[y/N]" not in said and done.returncode == 0, said[-3000:]
    assert "'score'" in done.stdout and "'token_str'" in done.stdout
    assert "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)" in code


def test_pretraining_card_names_no_machine_folder(runs, pre_export):
    """Fails on the old card (the run, its shards and tokenizer by absolute path)."""
    card = (pre_export / "README.md").read_text()
    assert str(runs["root"]) not in card and str(pre_export.parent) not in card
    assert "| run | pre |" in card and "| token shards | shards |" in card
    assert "--workdir=pre" in card and "--out=hf" in card


def test_pretraining_card_puts_perplexity_beside_the_shards_baselines(runs, tmp_path):
    """Fails on the old card (no baselines): the run's validation perplexity beside the unigram and
    bigram perplexities its summary recorded, else those of its shards' baselines.json (an old
    run), else "none recorded"; one sentence when the model sits on the unigram plateau."""
    import shutil

    from minilm_jax.interop.workdir import export_workdir

    summary = json.loads((runs["pre"] / "summary.json").read_text())
    ref = summary["reference"]
    card = (export_workdir(runs["pre"], tmp_path / "hf") / "README.md").read_text()
    best = f"| best validation perplexity | {summary['best']['validation_perplexity']:.4g} |"
    unigram = f"| unigram perplexity (validation split of the shards) | {ref['unigram']:.4g} |"
    bigram = f"| bigram perplexity (validation split of the shards) | {ref['bigram']:.4g} |"
    assert best in card and unigram in card and bigram in card
    assert card.index(best) < card.index(unigram) < card.index(bigram)
    assert ("on the unigram plateau" in card) == (summary["learned"] is False)

    old = tmp_path / "old"  # a run from before summaries recorded the reference
    shutil.copytree(runs["pre"], old)
    del summary["reference"], summary["learned"]
    summary["best"]["validation_perplexity"] = ref["unigram"] * 0.95
    (old / "summary.json").write_text(json.dumps(summary))
    card = (export_workdir(old, tmp_path / "old_hf") / "README.md").read_text()
    assert unigram in card and bigram in card
    plateau = [line for line in card.splitlines() if "unigram plateau" in line]
    assert len(plateau) == 1 and "learned little beyond word frequencies" in plateau[0]
    config = json.loads((old / "config.json").read_text())
    config["data.shards"] = str(tmp_path / "moved")  # baselines.json out of reach
    (old / "config.json").write_text(json.dumps(config))
    card = (export_workdir(old, tmp_path / "moved_hf", tokenizer_path=str(runs["tokenizer"]))
            / "README.md").read_text()
    assert "| unigram / bigram perplexity of the shards | none recorded |" in card
    assert "unigram plateau" not in card and str(tmp_path) not in card


def test_classifier_card_states_its_random_init_twin(runs, tmp_path):
    """Fails on the old card: a member of init.mode=both (DIR/pretrained) names its random-init
    twin's score (DIR/random), and says plainly when the twin scored higher; no machine paths."""
    import shutil

    from minilm_jax.interop.workdir import export_workdir

    both = tmp_path / "sst"
    shutil.copytree(runs["cls"], both / "pretrained")
    summary = json.loads((runs["cls"] / "summary.json").read_text())
    (both / "random").mkdir()
    for gap, higher in ((12.5, True), (-12.5, False)):
        twin = json.loads(json.dumps(summary)) | {"init": "random", "pretrained": None}
        for which in ("final", "selected"):
            twin[which]["mean"]["score"] += gap
        (both / "random" / "summary.json").write_text(json.dumps(twin))
        card = (export_workdir(both / "pretrained", tmp_path / f"hf{gap}") / "README.md").read_text()
        want = summary["selected"]["mean"]["score"] + gap
        assert ("| random-init twin (random/) score, selected parameters (mean ± sd) | "
                f"{want:.2f} ± {summary['selected']['std']['score']:.2f} over 2 seeds |") in card
        said = [line for line in card.splitlines() if "scored higher" in line]
        assert len(said) == int(higher)
        assert not higher or said[0].startswith("Its random-init twin scored higher than this "
                                                "pre-trained model")
        assert str(tmp_path) not in card and str(runs["root"]) not in card
        assert "| run | sst/pretrained |" in card and "| pre-trained run | pre |" in card


def test_card_paths_are_written_as_names():
    from minilm_jax.interop.model_card import portable, portable_command

    assert portable("/home/me/runs/pre") == "pre"
    assert portable("/data/tok.model (sha256 abc, 600 tokens)") == "tok.model (sha256 abc, 600 tokens)"
    assert portable("gs://bucket/runs/sst2/pretrained/") == "sst2/pretrained"
    assert portable("~/corpus/shards, 1/2 of E->H / x") == "shards, 1/2 of E->H / x"
    assert portable("data.dir='/srv/data/rte'") == "data.dir='rte'"
    assert portable_command("minilm-pretrain '--workdir=/a b/run one' --config.data.shards=/s/x"
                            ) == "minilm-pretrain '--workdir=run one' --config.data.shards=x"


def test_bad_fine_tuning_exports_are_one_line(runs, tmp_path, capsys):
    from minilm_jax.interop.__main__ import main

    cases = [(["--workdir", str(runs["cls"]), "--seed", "7"], "the run trained the seeds [0, 1]"),
             (["--workdir", str(runs["cls"]), "--which", "latest"], "--which=latest"),
             (["--workdir", str(runs["pre"]), "--seed", "0"], "--seed is for fine-tuning runs")]
    for args, message in cases:
        assert main(["export", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    both = tmp_path / "both"
    (both / "pretrained").mkdir(parents=True)
    (both / "pretrained" / "config.json").write_text("{}")
    with pytest.raises(InteropError, match="init.mode=both"):
        from minilm_jax.interop.workdir import export_workdir

        export_workdir(both, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _perturbed(model, seed: int = 0):
    """Every parameter and statistic moved off its initial value (non-trivial biases, norms,
    BatchNorm statistics, pooler weights)."""
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        value = np.asarray(var.get_value())
        moved = (rng.uniform(0.5, 2.0, value.shape) if path[-1] == "var"
                 else value + rng.normal(0.0, 0.1, value.shape))
        var.set_value(jnp.asarray(moved.astype(value.dtype)))
    return model


@pytest.mark.parametrize("fields,classifier", [
    ({"arch": "bert_conv", "conv_layers": 2, "conv_channels": 3}, False),
    ({"arch": "bert_conv", "conv_layers": 1, "conv_channels": 2, "embed_projection": False,
      "emb_dim": 32, "norm_position": "pre", "pooler": "weighted_sum"}, True)])
def test_other_architectures_export_with_remote_code(fields, classifier, tmp_path):
    """Pre-LN with the weighted-sum pooler, study B's conv front end (BatchNorm statistics):
    transformers gives our outputs at every position of a padded batch. (Pre-LN and the pooler
    ride on the conv classifier: the front end only changes the embeddings the same layers and
    head read; a masked LM with the conv front end and the E->H projection is the other case.)"""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.model.models import build_classifier, build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(POINT, max_len=16, **fields)
    model = _perturbed(build_classifier(cfg, 2) if classifier else build_mlm(cfg))
    out = export_model(model, tmp_path / "hf", labels=["no", "yes"] if classifier else ())
    auto = (transformers.AutoModelForSequenceClassification if classifier
            else transformers.AutoModelForMaskedLM)
    hf, info = auto.from_pretrained(str(out), trust_remote_code=True, output_loading_info=True)
    assert not any(info.values()), info
    tokens = padded_tokens(cfg)
    with torch.no_grad():  # no attention_mask: the padding is pad_token_id, as ours
        theirs = hf.eval()(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    mine = our_outputs(model, tokens, classifier)
    np.testing.assert_allclose(theirs, mine, atol=logits_tolerance(mine), rtol=0)


def padded_tokens(cfg) -> np.ndarray:
    """Three rows of 16, 9 and 3 real tokens (``<s> ... </s>``), the rest ``pad_id``."""
    tokens = np.full((3, 16), cfg.pad_id, np.int32)
    rng = np.random.default_rng(1)
    for row, n in enumerate((16, 9, 3)):
        tokens[row, :n] = rng.integers(5, cfg.vocab_size, n)
        tokens[row, 0], tokens[row, n - 1] = 0, 2
    return tokens


# A user's encoder module (tests/encoder_variants.py) beside its PyTorch twin
# (tests/modeling_encoder_variants.py, named by the variants' ``torch_twin``).
TWIN_FILE = Path(__file__).resolve().parent / "modeling_encoder_variants.py"
BROKEN_VARIANTS = '''
from minilm_jax.model.encoder import TransformerEncoder


class HalfTwinEncoder(TransformerEncoder):
    torch_twin = "modeling_half.py"


class AbsentTwinEncoder(TransformerEncoder):
    torch_twin = "modeling_absent.py"


class StrayImportEncoder(TransformerEncoder):
    torch_twin = "modeling_stray.py"
'''


def test_a_custom_encoder_without_a_usable_torch_twin_is_refused_in_one_line(tmp_path,
                                                                              monkeypatch):
    """No ``torch_twin``: refused (export and pre-training's note) saying how to add one; a
    declared file that is absent, lacks a class or imports what the export does not ship: one
    line naming the file and what is wrong. Nothing is written."""
    from flax import nnx

    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.interop.hf_minilm import export_model, export_note, remote_problems
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(POINT, max_len=16, arch="encoder_variants:GatedEmbeddingEncoder")
    model = nnx.eval_shape(lambda: build_mlm(cfg))  # refused before any weight is read
    with pytest.raises(InteropError) as refused:
        export_model(model, tmp_path / "hf")
    said = str(refused.value)
    assert "\n" not in said and said.startswith("cannot export to Hugging Face: ")
    assert ("is a custom encoder with no PyTorch twin: declare torch_twin = \"modeling_x.py\" on "
            "GatedEmbeddingEncoder") in said and "GatedEmbeddingEncoderForMaskedLM" in said
    assert "see docs/interop.md" in said and not (tmp_path / "hf").exists()
    config = pretrain_config(POINT)
    config.model.arch = "encoder_variants:GatedEmbeddingEncoder"
    note = export_note(config)
    assert note.startswith("note: this model will not export") and "declare torch_twin" in note
    config.model.arch = "encoder_variants:SwiGLUEncoder"
    assert export_note(config) is None  # SwiGLU declares its twin
    assert remote_problems(cfg.replace(arch=config.model.arch)) == []

    user = (tmp_path / "user").resolve()  # as the messages name it
    user.mkdir()
    (user / "user_twins.py").write_text(BROKEN_VARIANTS)
    (user / "modeling_half.py").write_text(
        "from .modeling_minilm import MinilmForMaskedLM\n\n\n"
        "class HalfTwinEncoderForMaskedLM(MinilmForMaskedLM):\n    pass\n")
    (user / "modeling_stray.py").write_text(
        "from .modeling_minilm import MinilmForMaskedLM, MinilmForSequenceClassification\n"
        "from .helpers import gate\n\n\n"
        "class StrayImportEncoderForMaskedLM(MinilmForMaskedLM):\n    pass\n\n\n"
        "class StrayImportEncoderForSequenceClassification(MinilmForSequenceClassification):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(user))
    monkeypatch.setitem(sys.modules, "user_twins", None)  # so that it is dropped after the test
    monkeypatch.delitem(sys.modules, "user_twins")  # and imported here
    cases = {"HalfTwinEncoder": [f"torch_twin {user / 'modeling_half.py'} of ",
                                 "defines no HalfTwinEncoderForSequenceClassification"],
             "AbsentTwinEncoder": [f"torch_twin {user / 'modeling_absent.py'} of ",
                                   "does not exist"],
             "StrayImportEncoder": [f"torch_twin {user / 'modeling_stray.py'} of ",
                                    "imports .helpers, which the export does not ship"]}
    for name, wanted in cases.items():
        problems = remote_problems(cfg.replace(arch=f"user_twins:{name}"))
        assert len(problems) == 1 and "\n" not in problems[0], problems
        for part in wanted:
            assert part in problems[0], (name, problems)


def test_a_custom_encoder_never_exports_as_roberta(monkeypatch):
    """Fails on the old behaviour: a user's encoder registered as ``roberta``, at a RoBERTa-shaped
    point (E == H, no projection, post-LN), was written as stock RoBERTa, its SwiGLU weights with
    no name there; it exports with its own twin."""
    import encoder_variants
    from flax import nnx

    from minilm_jax.interop.hf_minilm import MLM, fits_roberta, minilm_hf_config
    from minilm_jax.interop.hf_roberta import export_problems
    from minilm_jax.model import registry
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point

    monkeypatch.setitem(registry.ENCODERS, "roberta", encoder_variants.SwiGLUEncoder)
    cfg = resolve_point(POINT, max_len=16, emb_dim=32, embed_projection=False)
    assert cfg.arch == "roberta" and export_problems(cfg) == []  # looks like RoBERTa
    model = nnx.eval_shape(lambda: build_mlm(cfg))
    assert hasattr(model.encoder.layers[0].ffn, "gate") and not fits_roberta(model)
    config = minilm_hf_config(cfg, MLM)
    assert config["architectures"] == ["SwiGLUEncoderForMaskedLM"]
    assert config["model_type"] == "minilm_jax"


@pytest.mark.parametrize("variant,field,fields,classifier", [
    ("SwiGLUEncoder", ("ffn_scale", 2 / 3), {"emb_dim": 32, "embed_projection": False}, False),
    ("RotaryEncoder", ("rope_base", 100.0), {"norm_position": "pre"}, True)])
def test_custom_encoders_export_with_their_own_pytorch_module(variant, field, fields, classifier,
                                                              tmp_path):
    """A user's variants (tests/encoder_variants.py) with their ``torch_twin``
    (tests/modeling_encoder_variants.py): SwiGLU through the layer hook at a RoBERTa-shaped point
    (still remote code), ``ffn_scale=2/3`` setting its width; rotary positions through the
    attention's ``position_qk`` with no position table, ``rope_base=100``, pre-LN, as a
    classifier. The twin file ships beside ours, ``auto_map`` names its classes, the variant's
    field reaches it as ``config.variant_fields``, every tensor loads by name and transformers
    gives our logits at every position of a padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.model.models import build_classifier, build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(POINT, max_len=16, arch=f"encoder_variants:{variant}",
                        **fields).replace(extra=(field,))
    model = _perturbed(build_classifier(cfg, 2) if classifier else build_mlm(cfg))
    # transformers keys a folder's remote code by the folder's name: in one process, a folder
    # named as one loaded before (tests above: "hf") would get the classes loaded from that one
    out = export_model(model, tmp_path / variant, labels=["no", "yes"] if classifier else ())
    kind = "SequenceClassification" if classifier else "MaskedLM"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "minilm_jax"
    assert config["architectures"] == [f"{variant}For{kind}"]
    assert config["variant_fields"] == dict([field])
    module = "modeling_encoder_variants"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_minilm.MinilmConfig", "AutoModel": f"{module}.{variant}Model",
        "AutoModelForMaskedLM": f"{module}.{variant}ForMaskedLM",
        "AutoModelForSequenceClassification": f"{module}.{variant}ForSequenceClassification"}
    assert (out / f"{module}.py").read_text() == TWIN_FILE.read_text()
    assert {"modeling_minilm.py", "configuration_minilm.py"} <= {p.name for p in out.iterdir()}

    auto = (transformers.AutoModelForSequenceClassification if classifier
            else transformers.AutoModelForMaskedLM)
    hf, info = auto.from_pretrained(str(out), trust_remote_code=True, output_loading_info=True)
    assert type(hf).__name__ == f"{variant}For{kind}" and not any(info.values()), info
    assert hf.config.variant_fields == dict([field])
    layer = hf.minilm.layers[0]
    if variant == "SwiGLUEncoder":  # round(64 x 2/3) wide, as ours
        assert tuple(layer.ffn.gate.weight.shape) == (43, 32)
        assert model.encoder.layers[0].ffn.gate.kernel.shape == (32, 43)
    else:
        assert not hasattr(hf.minilm, "position_embeddings") and layer.attention.base == 100.0
    tokens = padded_tokens(cfg)
    with torch.no_grad():  # no attention_mask: the padding is pad_token_id, as ours
        theirs = hf.eval()(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    mine = our_outputs(model, tokens, classifier)
    np.testing.assert_allclose(theirs, mine, atol=logits_tolerance(mine), rtol=0)
    base = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True)
    assert type(base).__name__ == f"{variant}Model"


@pytest.mark.parametrize("variant,classifier", [("AlibiEncoder", False),
                                                ("SharedLayerEncoder", False),
                                                ("SharedLayerEncoder", True)])
def test_hook_variants_round_trip_through_save_pretrained(variant, classifier, tmp_path):
    """ALiBi through the attention's ``score_bias`` and cross-layer sharing through
    ``make_layers`` (tests/encoder_variants.py, twins in tests/modeling_encoder_variants.py): the
    export loads with every tensor; transformers saves the loaded model to a new folder and loads
    that: no key missing or unexpected, our logits at every position of a padded batch. A shared
    layer is one module in the twin, written once (the keys and values of our export) and counted
    once (our tree's parameters)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.model.accounting import count_params
    from minilm_jax.model.models import build_classifier, build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(POINT, max_len=16, num_layers=3, arch=f"encoder_variants:{variant}")
    model = _perturbed(build_classifier(cfg, 2) if classifier else build_mlm(cfg))
    kind = "SequenceClassification" if classifier else "MaskedLM"
    out = export_model(model, tmp_path / f"{variant}_{kind}",
                       labels=["no", "yes"] if classifier else ())
    auto = (transformers.AutoModelForSequenceClassification if classifier
            else transformers.AutoModelForMaskedLM)
    first, info = auto.from_pretrained(str(out), trust_remote_code=True, output_loading_info=True)
    assert not any(info.values()), info
    saved = tmp_path / f"{variant}_{kind}_saved"  # a new name: its remote code is loaded anew
    first.save_pretrained(str(saved))
    ours, theirs_file = (load_file(str(d / "model.safetensors")) for d in (out, saved))
    assert set(theirs_file) == set(ours)
    for key, value in ours.items():
        np.testing.assert_array_equal(theirs_file[key], value, err_msg=key)
    hf, info = auto.from_pretrained(str(saved), trust_remote_code=True, output_loading_info=True)
    assert type(hf).__name__ == f"{variant}For{kind}" and not any(info.values()), info
    layers = hf.minilm.layers
    shared = variant == "SharedLayerEncoder"
    assert all(layer is layers[0] for layer in layers) == shared and len(layers) == 3
    assert any(".layers.1." in key for key in ours) != shared  # shared: written once
    assert sum(p.numel() for p in hf.parameters()) == count_params(model).total
    tokens = padded_tokens(cfg)
    with torch.no_grad():  # no attention_mask: the padding is pad_token_id, as ours
        theirs = hf.eval()(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    mine = our_outputs(model, tokens, classifier)
    np.testing.assert_allclose(theirs, mine, atol=logits_tolerance(mine), rtol=0)
