"""Token shards: splits, padded/packed rows, round trip through open_split, determinism, subsets, overlap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.corpus.constrained import FilterConfig
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.filter_stage import run_filter
from minilm_jax.corpus.overlap import run_overlap, token_overlap
from minilm_jax.corpus.shards_build import RowBuilder, ShardConfig, run_shards, split_assignment, split_sizes
from minilm_jax.corpus.sources import SourceSpec, iter_documents
from minilm_jax.corpus.subsets import run_subsets
from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.data.shards import open_split, read_manifest
from minilm_jax.tokenizer import load_tokenizer

SHARED = Path(os.environ.get("MINILM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VOCAB_CSV = SHARED / "vocab" / "AOChildes_word_frequency.csv"
AOCHILDES = SHARED / "aochildes" / "original_transcripts"
WIKI = SHARED / "wikitext2" / "tokenized"
SST2_DEV = SHARED / "glue" / "SST-2" / "dev.tsv"


def test_split_sizes_and_assignment():
    assert split_sizes(100, 0.1, 5) == (85, 10, 5)
    a = split_assignment(100, 0.1, 5, seed=0)
    assert np.bincount(a, minlength=3).tolist() == [85, 10, 5]
    assert np.array_equal(a, split_assignment(100, 0.1, 5, seed=0))
    assert not np.array_equal(a, split_assignment(100, 0.1, 5, seed=1))
    with pytest.raises(CorpusError, match="corpus too small: 10 texts cannot give 5 validation and 5 test"):
        split_sizes(10, 5, 5)


def test_row_builder_by_hand():
    cfg = ShardConfig(seq_len=8)
    b = RowBuilder(cfg, bos=0, eos=2, pad=1)
    b.add([5, 6, 7])
    b.add(list(range(10, 19)))  # 9 ids: 6 fit, 3 truncated
    b.add([])
    tokens, _ = b.buffer.arrays()
    assert tokens.tolist() == [[0, 5, 6, 7, 2, 1, 1, 1], [0, 10, 11, 12, 13, 14, 15, 2]]
    assert (b.truncated_tokens, b.empty_texts, b.texts) == (3, 1, 3)
    s = RowBuilder(ShardConfig(seq_len=8, overflow="split"), bos=0, eos=2, pad=1)
    s.add(list(range(10, 19)))
    assert s.buffer.arrays()[0].tolist() == [[0, 10, 11, 12, 13, 14, 15, 2], [0, 16, 17, 18, 2, 1, 1, 1]]
    p = RowBuilder(ShardConfig(seq_len=8, mode="packed"), bos=0, eos=2, pad=1)
    for ids in ([5, 6], [7], [8, 9, 10], list(range(20, 27))):
        p.add(ids)
    p.flush()
    tokens, segments = p.buffer.arrays()
    assert tokens.tolist() == [[0, 5, 6, 2, 0, 7, 2, 1], [0, 8, 9, 10, 2, 1, 1, 1],
                               [0, 20, 21, 22, 23, 24, 25, 2], [0, 26, 2, 1, 1, 1, 1, 1]]
    assert segments.tolist() == [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 0, 0, 0],
                                 [1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]]


def test_token_overlap_by_hand():
    present = np.zeros(10, dtype=bool)
    present[[5, 6, 7]] = True
    result = token_overlap(present, [[5, 5, 8, 0], [6, 9, 2]], special_ids=range(5))
    # task types {5, 6, 8, 9} (specials dropped), 2 shared; occurrences 5, 5, 8, 6, 9: 3 shared
    assert result == {"task_types": 4, "shared_types": 2, "task_tokens": 5, "shared_tokens": 3,
                      "type_share": 0.5, "occurrence_share": 0.6}


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory) -> tuple[Path, Path]:
    if not (VOCAB_CSV.is_file() and AOCHILDES.is_dir()):
        pytest.skip("shared data absent")
    root = tmp_path_factory.mktemp("shards")
    sources = [SourceSpec.parse(f"aochildes:{AOCHILDES / n}") for n in ("Bliss.csv", "Nelson.csv", "Bloom73.csv")]
    run_filter(sources, VOCAB_CSV, root / "constrained", cfg=FilterConfig(unit="sentence"))
    texts = list(iter_documents(f"corpus:{root / 'constrained'}"))
    model = root / "bpe-400.model"
    model.write_bytes(train_sentencepiece(texts, 400, "bpe"))
    return root / "constrained", model


def test_padded_shards_round_trip(corpus_and_tokenizer, tmp_path):
    corpus, model = corpus_and_tokenizer
    tok = load_tokenizer(model)
    cfg = ShardConfig(valid=20, test=0.05, seed=7)
    manifest = run_shards([SourceSpec.parse(f"corpus:{corpus}")], str(model), tmp_path / "s", cfg=cfg)
    texts = list(iter_documents(f"corpus:{corpus}"))
    assignment = split_assignment(len(texts), cfg.valid, cfg.test, cfg.seed)
    assert manifest["tokenizer"]["sha256"] == tok.sha256 and manifest["pad_id"] == tok.pad_id == 1
    for index, name in enumerate(("train", "validation", "test")):
        split = open_split(tmp_path / "s", name, verify=True)
        mine = [t for t, a in zip(texts, assignment) if a == index]
        assert split.num_sequences == len(mine) and split.segments is None
        for row, text in zip(split.tokens, mine):
            ids = tok.encode(text)[:126]
            expected = [0, *ids, 2] + [1] * (126 - len(ids))
            assert row.tolist() == expected
    counts = manifest["source"]["counts"]
    assert counts["validation"]["texts"] == 20 and sum(c["texts"] for c in counts.values()) == len(texts)
    # every built shard set carries its unigram / bigram baselines, as computed afresh
    from minilm_jax.data.baselines import CACHE, compute_baselines

    cached = json.loads((tmp_path / "s" / CACHE).read_text())
    assert cached["splits"] == compute_baselines(tmp_path / "s")["splits"]
    assert set(cached["splits"]) == {"validation", "test"}


def test_packed_shards_segments_and_determinism(corpus_and_tokenizer, tmp_path):
    corpus, model = corpus_and_tokenizer
    cfg = ShardConfig(mode="packed", seq_len=64, valid=0.1, test=0.1)
    sources = [SourceSpec.parse(f"corpus:{corpus}")]
    run_shards(sources, str(model), tmp_path / "a", cfg=cfg, workers=1)
    run_shards(sources, str(model), tmp_path / "b", cfg=cfg, workers=2)
    for name in ("train.npy", "train.segments.npy", "validation.npy", "test.npy", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    split = open_split(tmp_path / "a", "train", verify=True)
    tokens, segments = np.asarray(split.tokens), np.asarray(split.segments)
    assert np.array_equal(segments > 0, tokens != 1)
    for row, seg in zip(tokens[:200], segments[:200]):
        for s in range(1, seg.max() + 1):
            piece = row[seg == s]
            assert piece[0] == 0 and piece[-1] == 2 and not np.isin(piece[1:-1], [0, 1, 2]).any()


def test_shards_errors_write_nothing(corpus_and_tokenizer, tmp_path):
    corpus, model = corpus_and_tokenizer
    bad_model = tmp_path / "plain.model"
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c d e f g"] * 20), model_writer=buf,
                                   vocab_size=15, model_type="bpe", minloglevel=2)
    bad_model.write_bytes(buf.getvalue())
    from minilm_jax.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="lacks special tokens"):
        run_shards([SourceSpec.parse(f"corpus:{corpus}")], str(bad_model), tmp_path / "out")
    with pytest.raises(CorpusError, match="corpus too small"):
        run_shards([SourceSpec.parse(f"corpus:{corpus}")], str(model), tmp_path / "out",
                   cfg=ShardConfig(valid=0.6, test=0.5))
    with pytest.raises(CorpusError, match="not the output of"):
        run_shards([SourceSpec.parse(f"corpus:{tmp_path}")], str(model), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not (SST2_DEV.is_file() and AOCHILDES.is_dir()), reason="shared data absent")
def test_overlap_on_real_shards_and_tokenizer_mismatch(corpus_and_tokenizer, tmp_path):
    corpus, model = corpus_and_tokenizer
    run_shards([SourceSpec.parse(f"corpus:{corpus}")], str(model), tmp_path / "s")
    task = SourceSpec.parse(f"tsv:{SST2_DEV}#column=sentence,limit=100,name=sst2")
    result = run_overlap(tmp_path / "s", str(model), [task])
    r = result["tasks"]["sst2"]
    tok = load_tokenizer(model)
    ids = [i for t in iter_documents(task) for i in tok.encode(t) if i not in tok.special_ids]
    present = set(np.unique(np.asarray(open_split(tmp_path / "s", "train").tokens)).tolist()) - set(tok.special_ids)
    assert r["task_tokens"] == len(ids) and r["shared_tokens"] == sum(i in present for i in ids)
    assert r["task_types"] == len(set(ids)) and r["shared_types"] == len(set(ids) & present)
    other = tmp_path / "other.model"
    other.write_bytes(train_sentencepiece(list(iter_documents(f"corpus:{corpus}"))[:200], 300, "bpe"))
    with pytest.raises(CorpusError, match="tokenizer mismatch: the shards in .* were built with a tokenizer of sha256"):
        run_overlap(tmp_path / "s", str(other), [task])


def _wordpiece_vocab(path: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    lines = [line for line in (WIKI / "wiki.test.tokens").read_text(encoding="utf-8").splitlines() if line.strip()]
    hf = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.train_from_iterator(lines[:1500], trainers.WordPieceTrainer(vocab_size=1500, special_tokens=[]))
    vocab = hf.get_vocab()
    tokens = [t for t in sorted(vocab, key=vocab.get) if not t.startswith("[")]
    entries = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + tokens
    path.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return path


@pytest.mark.skipif(not WIKI.is_dir(), reason="shared data absent")
def test_study_b_subsets_nested_with_shared_validation(tmp_path):
    vocab = _wordpiece_vocab(tmp_path / "vocab.txt")
    tok = load_tokenizer(vocab)
    source = SourceSpec.parse(f"wikitext:{WIKI / 'wiki.valid.tokens'}")
    articles = list(iter_documents(source))
    result = run_subsets(source, str(vocab), tmp_path / "sub", sizes=[10, 25], valid=5, seed=3)
    assert result["articles_in_corpus"] == len(articles)
    small = open_split(tmp_path / "sub" / "n10", "train", verify=True).tokens
    large = open_split(tmp_path / "sub" / "n25", "train", verify=True).tokens
    valid = open_split(tmp_path / "sub" / "n25", "validation").tokens
    assert small.shape == (10, 128) and large.shape == (25, 128) and valid.shape == (5, 128)
    assert np.array_equal(small, large[:10])
    assert np.array_equal(valid, open_split(tmp_path / "sub" / "n10", "validation").tokens)
    # every row is the first 126 tokens of a distinct article, wrapped in [CLS] ... [SEP]
    heads = {tuple(tok.encode(a)[:126]) for a in articles}
    rows = [tuple(r[1:1 + 126].tolist()) for r in np.concatenate([valid, large])]
    assert all(r[0] == tok.bos_id for r in np.concatenate([valid, large]))
    trimmed = [tuple(x for x in r if x not in (tok.eos_id, tok.pad_id)) for r in rows]
    assert all(t in heads for t in trimmed) and len(set(trimmed)) == 30
    assert read_manifest(tmp_path / "sub" / "n10")["tokenizer"]["sha256"] == tok.sha256
    assert all((tmp_path / "sub" / n / "baselines.json").is_file() for n in ("n10", "n25"))
    other = run_subsets(source, str(vocab), tmp_path / "sub2", sizes=[10], valid=5, seed=4)
    assert other["subsets"]["n10"]["train"]["num_sequences"] == 10
    assert not np.array_equal(open_split(tmp_path / "sub2" / "n10", "train").tokens, small)
    with pytest.raises(CorpusError, match=f"has {len(articles)} articles"):
        run_subsets(source, str(vocab), tmp_path / "sub3", sizes=[len(articles)], valid=1)
    stage = json.loads((tmp_path / "sub" / "manifest.json").read_text())
    assert stage["stage"] == "subsets" and stage["parameters"]["sizes"] == [10, 25]
    special_ids_of_bert_layout_shards(tmp_path / "sub" / "n10", tok)


def special_ids_of_bert_layout_shards(shards: Path, tok) -> None:
    """Shards of a BERT vocab.txt record its special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP]
    102, [MASK] 103); their baselines leave [PAD], [UNK], [CLS] and [SEP] out (an add-one unigram
    counted here by hand), and pre-training with the RoBERTa-layout recipe is refused."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.data.shards import ShardError, recorded_special_ids
    from minilm_jax.model.sizes import SPARE_VOCAB_ROWS
    from minilm_jax.train.pretrainer import check_shards

    manifest = read_manifest(shards)
    bert = {"pad": 0, "unk": 100, "bos": 101, "eos": 102, "mask": 103}
    assert recorded_special_ids(manifest) == bert == tok.special_id_map
    baselines = json.loads((shards / "baselines.json").read_text())
    assert baselines["never_mask_ids"] == [0, 100, 101, 102]
    train = np.asarray(open_split(shards, "train").tokens).ravel()
    valid = np.asarray(open_split(shards, "validation").tokens).ravel()
    never = [0, 100, 101, 102]
    assert np.isin(train, [101, 102]).sum() == 20  # each row's [CLS] and [SEP], left out
    counts = np.bincount(train[~np.isin(train, never)], minlength=tok.vocab_size)
    p = (counts + 1.0) / (counts.sum() + tok.vocab_size)
    expected = -np.log(p[valid[~np.isin(valid, never)]]).mean()
    assert baselines["splits"]["validation"]["unigram"] == pytest.approx(expected, rel=1e-12)
    config = get_config()
    config.data.shards = str(shards)
    vocab = tok.vocab_size + SPARE_VOCAB_ROWS
    with pytest.raises(ShardError, match=r"mask token at id 103, mlm\.mask_id is 4"):
        check_shards(config, vocab, 128, 0)
    config.mlm.mask_id = 103
    with pytest.raises(ShardError, match=r"special tokens \[100, 101, 102\]"):
        check_shards(config, vocab, 128, 0)
    config.mlm.never_mask_ids = (0, 100, 101, 102)
    assert check_shards(config, vocab, 128, 0) == manifest


# A `corpus shards` command that stops after writing its first rows (into its temporary folder) and
# says so on stdout, then waits on stdin: the test kills it there, as a user or a scheduler would.
_STOPPED_SHARDS = """
import runpy, sys
from minilm_jax.data import shards
real = shards.ShardWriter.append
def append(self, *args, **kwargs):
    real(self, *args, **kwargs)
    print("writing", flush=True)
    sys.stdin.readline()
shards.ShardWriter.append = append
sys.argv = ["minilm-corpus", "shards", *sys.argv[1:]]
runpy.run_module("minilm_jax.corpus", run_name="__main__", alter_sys=True)
"""


def test_killed_shards_run_is_cleaned_up_by_the_next_run(corpus_and_tokenizer, tmp_path):
    """SIGKILL leaves the stage's temporary folder behind; the next run into the same output removes
    it, but never the folder of a run that is still going."""
    import signal
    import subprocess
    import sys

    corpus, model = corpus_and_tokenizer
    sources = [SourceSpec.parse(f"corpus:{corpus}")]
    out = tmp_path / "s"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-c", _STOPPED_SHARDS, "--corpus", f"corpus:{corpus}",
                              "--tokenizer", str(model), "--out", str(out), "--workers", "1",
                              "--no_progress"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "writing"  # its first rows are on disk
        (live,) = [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]
        assert any(live.iterdir())
        run_shards(sources, str(model), out, workers=1)  # meanwhile, into the same output
        assert live.is_dir()  # the running command's folder is not touched
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and live.is_dir()  # what a killed run leaves
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run_shards(sources, str(model), out, workers=1, overwrite=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    for name in ("train", "validation", "test"):
        assert open_split(out, name, verify=True).tokens.shape[0] > 0
