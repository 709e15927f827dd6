"""Hugging Face export of a trained workdir: AutoTokenizer encodes as we do on real text, transformers
gives our logits, the export is a fine-tuning init.checkpoint, and what RoBERTa cannot hold is refused
before anything is read."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import float32_tolerance, shared_path, write_line_shards

from minilm_jax.corpus.tokenizer_train import TrainConfig, train_sentencepiece
from minilm_jax.interop.hf_files import InteropError
from minilm_jax.interop.hf_tokenizer import bpe_merges, write_hf_tokenizer
from minilm_jax.tasks.encoding import build_inputs
from minilm_jax.tokenizer import load_tokenizer

SEQ = 64
POINT = "E32-H32-I64-L2-A2-V600"


def wiki_lines(name: str = "wiki.valid.tokens") -> list[str]:
    text = shared_path("wikitext2", "tokenized", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def sst2_pairs() -> list[tuple[str, str]]:
    """Real sentence pairs (RTE dev: premise, hypothesis)."""
    rows = shared_path("glue", "RTE", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:200]
    return [(r.split("\t")[1], r.split("\t")[2]) for r in rows if len(r.split("\t")) >= 3]


ODD = ["  leading and  double  spaces ", "tab\there", "Ünïcödé ＦＵＬＬ width ﬁ", "emoji 😀 中文",
       "", " ", "new\nline", "x\u3000y", "a <unk> b </s> <s> <pad>"]


def test_bpe_merges_rank_by_the_merged_piece():
    pieces = ["<s>", "a", "b", "c", "ab", "abc", "bc"]
    assert bpe_merges(pieces) == [("a", "b"), ("a", "bc"), ("ab", "c"), ("b", "c")]


@pytest.mark.parametrize("model_type,byte_fallback", [("unigram", False), ("bpe", False),
                                                      ("unigram", True), ("bpe", True)])
def test_auto_tokenizer_encodes_as_we_do_on_real_text(model_type, byte_fallback, tmp_path):
    transformers = pytest.importorskip("transformers")
    train = wiki_lines()
    path = tmp_path / "tok.model"
    path.write_bytes(train_sentencepiece(train[:3000], 800, model_type,
                                         TrainConfig(byte_fallback=byte_fallback)))
    ours = load_tokenizer(path)
    write_hf_tokenizer(ours, tmp_path, max_len=SEQ)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = wiki_lines("wiki.test.tokens")[:1500] + ODD  # unseen text, with "<unk>" written in it
    ids = ours.encode_batch(texts)
    # split_special_tokens=True reads the specials written in text as text, as our encode does.
    differ = [t for t, want in zip(texts, ids)
              if hf(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] != want]
    assert not differ, f"{len(differ)} of {len(texts)} differ, e.g. {differ[:3]}"
    literal = ("<unk>", "<s>", "</s>", "<pad>", "<mask>")
    plain = [(t, want) for t, want in zip(texts, ids) if not any(s in t for s in literal)]
    assert len(plain) > 300 and all(hf(t, add_special_tokens=False)["input_ids"] == want
                                     for t, want in plain)
    # By default the specials written in text are special tokens: "<mask>" for fill-mask, standing
    # for a whole word as in pre-training (no lone "▁" before it).
    assert hf("the <mask> sat on the mat")["input_ids"] == [
        ours.bos_id, *ours.encode("the"), ours.mask_id, *ours.encode("sat on the mat"), ours.eos_id]
    assert hf("a <unk> b </s>", add_special_tokens=False)["input_ids"] == [
        *ours.encode("a"), ours.unk_id, *ours.encode("b"), ours.eos_id]
    for a, b in sst2_pairs()[:100]:  # pairs and truncation: the layout fine-tuning uses
        want, _ = build_inputs(ours, ours.encode(a), ours.encode(b), SEQ)
        got = hf(a, b, truncation="longest_first", max_length=SEQ)["input_ids"]
        assert got == want
    assert hf.pad_token_id == ours.pad_id and hf.mask_token_id == ours.mask_id
    assert hf.decode(hf("the cat sat")["input_ids"], skip_special_tokens=True) == "the cat sat"


def test_auto_tokenizer_of_a_wordpiece_vocabulary(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = sorted({w for line in wiki_lines()[:2000] for w in line.lower().split()})[:3000]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    ours = load_tokenizer(tmp_path / "vocab.txt")
    out = tmp_path / "hf"
    out.mkdir()
    write_hf_tokenizer(ours, out, max_len=SEQ)
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    for a, b in sst2_pairs()[:100]:
        want, types = build_inputs(ours, ours.encode(a), ours.encode(b), SEQ)
        got = hf(a, b, truncation="longest_first", max_length=SEQ)
        assert got["input_ids"] == want and got["token_type_ids"] == types
    text = "the [MASK] sat on the [UNK] mat"  # every special is matched in text, as ours does
    assert hf(text)["input_ids"] == [ours.bos_id, *ours.encode(text), ours.eos_id]
    assert hf(text)["input_ids"].count(ours.mask_id) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A unigram tokenizer and a short pre-training run of an exportable model (E == H, no
    projection) on WikiText-2 shards. (A factorized run, E->H projection, exports with our own
    modeling code: tests/test_interop_export_models.py trains and exports one.)"""
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.train.pretrainer import Pretrainer

    root = tmp_path_factory.mktemp("export")
    lines = [line for line in wiki_lines() if len(line.split()) >= 12]
    tok_path = root / "tok.model"
    tok_path.write_bytes(train_sentencepiece(lines, 600, "unigram"))
    tok = load_tokenizer(tok_path)
    write_line_shards(root / "shards", tok, lines, SEQ)
    config = pretrain_config(POINT)
    config.model.max_len = SEQ
    config.model.embed_projection = False
    config.data.shards = str(root / "shards")
    config.train.num_steps = 10
    config.train.batch_size = 16
    config.train.progress = False
    config.eval.every_steps = 10
    config.eval.batch_size = 50
    config.mesh.data = 1
    config.checkpoint.every_steps = 10
    Pretrainer(config, root / "pre").run()
    return {"root": root, "tokenizer": tok_path, "pre": root / "pre"}


def test_exported_workdir_matches_transformers_and_serves_as_init_checkpoint(trained, tmp_path):
    pytest.importorskip("safetensors")  # the hf extra
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.interop.__main__ import main

    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(trained["pre"]), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tok.model", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"} <= names
    meta = json.loads((out / "config.json").read_text())["minilm_jax"]["provenance"]
    assert meta["workdir"] == str(trained["pre"]) and meta["step"] == 10
    assert main(["export", "--workdir", str(trained["pre"]), "--out", str(out)]) == 2  # no overwrite

    # The export is an init.checkpoint: the same encoder, the same tokenizer identity.
    from_workdir, from_hf = PretrainedRun.open(trained["pre"]), PretrainedRun.open(out)
    assert from_hf.hugging_face and from_hf.tokenizer_sha256 == from_workdir.tokenizer_sha256
    a, b = from_workdir.encoder_state(), from_hf.encoder_state()
    flat_a, flat_b = dict(a.flat_state()), dict(b.flat_state())
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key].get_value(), flat_b[key].get_value())

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from flax import nnx

    from minilm_jax.model.models import build_mlm

    # shapes only (no initialisation, op by op): the run's state fills every variable
    ours = nnx.eval_shape(lambda: build_mlm(from_workdir.model))
    nnx.update(ours, from_workdir.model_state())
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    hf_model = transformers.RobertaForMaskedLM.from_pretrained(str(out)).eval()
    texts = wiki_lines("wiki.test.tokens")[:8]
    # WikiText writes "<unk>": text in training, as with split_special_tokens=True.
    batch = hf_tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np",
                   split_special_tokens=True)
    tok = load_tokenizer(trained["tokenizer"])
    for row, text in zip(batch["input_ids"], texts):
        want, _ = build_inputs(tok, tok.encode(text), None, SEQ)
        assert list(row[: len(want)]) == want
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                          attention_mask=torch.from_numpy(batch["attention_mask"])).logits.numpy()
    # one compiled program (eagerly, op by op, a forward pass compiles each operation: seconds)
    forward = nnx.jit(lambda m, t: m.all_logits(t))
    mine = np.asarray(forward(ours, batch["input_ids"].astype(np.int32)))
    real = batch["attention_mask"].astype(bool)
    # the same float32 weights in PyTorch and JAX: sums in other orders over each of 2 layers'
    # hidden and ffn widths, attention over SEQ positions, the head (tests/conftest.py)
    tol = float32_tolerance(float(np.max(np.abs(mine[real]))), 2 * (32 + 64) + SEQ + 32)
    assert np.max(np.abs(mine[real] - theirs[real])) < tol


def test_what_no_layout_can_hold_is_refused_before_reading(trained, tmp_path, capsys,
                                                            monkeypatch):
    """What RoBERTa cannot hold (the E->H projection) exports with our own modeling code
    (tests/test_interop_export_models.py: test_factorized_pretraining_run_exports_with_its_own_
    modeling_code); a custom encoder that declares no PyTorch twin (``torch_twin``) is refused
    in one line before any weight is read."""
    pytest.importorskip("safetensors")  # the hf extra
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.interop.__main__ import main

    custom = tmp_path / "custom"
    shutil.copytree(trained["pre"], custom)
    config = json.loads((custom / "config.json").read_text())
    config["model.arch"] = "my_lab.encoders:Gated"
    (custom / "config.json").write_text(json.dumps(config))

    def read(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(PretrainedRun, "model_state", read)
    out = tmp_path / "c"
    assert main(["export", "--workdir", str(custom), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot export") and "custom encoder" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert main(["export", "--workdir", str(tmp_path / "absent"), "--out", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(InteropError, match="records no tokenizer|not found"):
        from minilm_jax.interop.workdir import export_workdir

        export_workdir(trained["pre"], out, tokenizer_path=str(tmp_path / "moved.model"))


def test_fine_tuning_starts_from_an_exported_directory(trained, tmp_path):
    pytest.importorskip("safetensors")  # the hf extra
    from minilm_jax.finetune.finetuner import Finetuner
    from minilm_jax.interop.workdir import export_workdir
    from minilm_jax.configs.finetune import get_config as finetune_config

    out = export_workdir(trained["pre"], tmp_path / "hf")
    config = finetune_config("ag_news")
    config.init.checkpoint = str(out)
    config.data.dir = str(shared_path("ag_news"))
    config.data.max_len = SEQ
    config.data.train_per_class = 20
    config.data.eval_per_class = 10
    config.train.epochs = 1
    config.train.seeds = (0,)
    config.train.progress = False
    config.eval.batch_size = 40
    config.mesh.data = 1
    summary = Finetuner(config, tmp_path / "ft", "pretrained").run()
    assert summary["status"] == "completed"
    assert summary["pretrained"]["format"] == "hugging_face"
    assert summary["pretrained"]["step"] == 10
    assert summary["tokenizer"]["sha256"] == load_tokenizer(trained["tokenizer"]).sha256


def fake_safetensors(monkeypatch) -> None:
    """A stand-in for ``safetensors.numpy`` (the hf extra, not installed everywhere) whose
    save_file writes the tensors with numpy: enough for an export to run to its end where
    transformers is not installed either (where it is, the export loads what it wrote)."""
    st_numpy = types.ModuleType("safetensors.numpy")
    st_numpy.save_file = lambda tensors, path, metadata=None: np.savez(open(path, "wb"), **tensors)
    package = types.ModuleType("safetensors")
    package.numpy = st_numpy
    monkeypatch.setitem(sys.modules, "safetensors", package)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", st_numpy)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_export_never_replaces_the_run_it_exports(trained, tmp_path, monkeypatch, capsys):
    """--out the workdir, a folder holding it, or one of its checkpoint folders (however written:
    relative, trailing slash, through a symlink) is refused with one line naming both paths,
    --overwrite or not, and nothing is deleted; another folder inside the workdir is fine."""
    from minilm_jax.interop.__main__ import main

    if importlib.util.find_spec("safetensors") is None:  # the hf extra is not installed:
        fake_safetensors(monkeypatch)  # were the export to go ahead, it would reach its end
    runs = tmp_path / "runs"
    run = runs / "pre"
    shutil.copytree(trained["pre"], run)  # this test's own copy, which a regression would delete
    (tmp_path / "link").symlink_to(run)
    before = files_of(runs)
    outs = [run, f"{run}/", runs, tmp_path, os.path.relpath(runs), tmp_path / "link",
            run / "checkpoints", run / "best" / "10", run / "snapshots" / "new"]
    for out in outs:
        for overwrite in (["--overwrite"], []):
            assert main(["export", "--workdir", str(run), "--out", str(out), *overwrite]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: --out ")
            assert str(out) in err[0] and str(run) in err[0], err[0]
    assert main(["export", "--workdir", f"{runs}/./pre/", "--out", str(runs),
                 "--overwrite"]) == 2  # the workdir written another way
    capsys.readouterr()
    assert files_of(runs) == before
    assert main(["export", "--workdir", str(run), "--out", str(run / "hf"), "--overwrite"]) == 0
    assert (run / "hf" / "config.json").is_file()
    assert {k: v for k, v in files_of(runs).items() if not k.startswith("pre/hf/")} == before


def test_export_refuses_an_out_over_a_remote_workdir_before_reading_it(monkeypatch):
    from minilm_jax.runs.pretrained import PretrainedRun
    from minilm_jax.interop import workdir as workdir_module
    from minilm_jax.interop.workdir import export_workdir

    def opened(*args, **kwargs):
        raise AssertionError("the workdir was opened")

    monkeypatch.setattr(PretrainedRun, "open", opened)
    monkeypatch.setattr(workdir_module, "_run_config", opened)  # reading config.json opens it too
    for out in ("gs://bucket/runs/a", "gs://bucket/runs/a/", "gs://bucket/runs", "gs://bucket",
                "gs://bucket/runs/a/checkpoints/40"):
        with pytest.raises(InteropError, match=f"--out {out} .*gs://bucket/runs/a"):
            export_workdir("gs://bucket/runs/a", out, overwrite=True)
    with pytest.raises(AssertionError, match="opened"):  # a sibling sharing a prefix is no parent
        export_workdir("gs://bucket/runs/ab", "runs/hf", overwrite=True)
    with pytest.raises(InteropError, match="writes a local folder"):  # never a local 'gs:' folder
        export_workdir("gs://bucket/runs/ab", "gs://bucket/runs/a", overwrite=True)


def test_export_without_the_hf_extra_is_one_line(trained, tmp_path, monkeypatch, capsys):
    from minilm_jax.interop.__main__ import main

    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(trained["pre"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "'safetensors'" in err[0]
    assert "pip install 'minilm-jax[hf]'" in err[0]
    assert not out.exists()


def test_demo_without_the_hf_extra_is_one_line(tmp_path):
    """The command itself (absl's app.run around main): one error line, exit status 2."""
    from test_pretrain import REPO, cli_env

    out = tmp_path / "demo"
    code = ("import runpy, sys; sys.modules['safetensors'] = sys.modules['safetensors.numpy'] = None;"
            f" sys.argv = ['minilm-interop', 'demo', '--point', 'E16-H16-I32-L1-A2-V100', "
            f"'--max_len', '8', '--out', {str(out)!r}];"
            " runpy.run_module('minilm_jax.interop', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'safetensors'" in lines[0]
    assert "pip install 'minilm-jax[hf]'" in lines[0] and not out.exists()
