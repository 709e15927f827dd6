"""TFDS sources against a real TFDS dataset: built offline from WikiText-2 lines, read via ``tfds.data_source``.

The dataset is prepared in the ArrayRecord format by a small ``GeneratorBasedBuilder`` (no TensorFlow
needed to prepare or read it) and opened by name from its data_dir, as a user's prepared dataset is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from minilm_jax.corpus.errors import CorpusError
from minilm_jax.corpus.shards_build import ShardConfig, run_shards
from minilm_jax.corpus.sources import SourceSpec, iter_documents
from minilm_jax.corpus.tokenizer_train import train_sentencepiece
from minilm_jax.data.shards import open_split

tfds = pytest.importorskip("tensorflow_datasets")

TRAIN, VALIDATION = 250, 50


class WikiLines(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """WikiText-2 lines: ``train`` and ``validation`` splits of ``{"TEXT": line, "line": index}``."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, lines: list[str], **kwargs) -> None:
        self._lines = lines
        super().__init__(**kwargs)

    def _info(self):
        features = tfds.features.FeaturesDict({"TEXT": tfds.features.Text(), "line": np.int64})
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, TRAIN),
                "validation": self._generate_examples(TRAIN, TRAIN + VALIDATION)}

    def _generate_examples(self, start: int, stop: int):
        for index in range(start, stop):
            yield index, {"TEXT": self._lines[index], "line": index}


@pytest.fixture(scope="module")
def wiki_tfds(tmp_path_factory) -> tuple[Path, list[str]]:
    """A prepared ``wiki_lines`` dataset in a temporary data_dir, and the lines it holds."""
    text = shared_path("wikitext2", "tokenized", "wiki.test.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if len(line.split()) > 5][:TRAIN + VALIDATION]
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.disable_progress_bar()
    WikiLines(lines=lines, data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir, lines


def test_tfds_source_reads_a_prepared_dataset(wiki_tfds):
    data_dir, lines = wiki_tfds
    spec = f"tfds:wiki_lines#split=validation,field=TEXT,data_dir={data_dir},download=false"
    docs = list(iter_documents(spec))
    assert sorted(docs) == sorted(lines[TRAIN:])  # TFDS stores records in its own (hashed) order
    assert docs == list(iter_documents(spec))  # ... the same on every read
    source = tfds.data_source("wiki_lines", split="validation", data_dir=str(data_dir), download=False)
    assert docs == [source[i]["TEXT"].decode("utf-8") for i in range(len(source))]
    assert len(list(iter_documents(f"tfds:wiki_lines#split=train,field=TEXT,data_dir={data_dir}"))) == TRAIN
    sliced = list(iter_documents(f"tfds:wiki_lines#split=train[:10],field=TEXT,data_dir={data_dir},name=w"))
    assert len(sliced) == 10 and set(sliced) <= set(lines[:TRAIN])


def test_tfds_source_errors(wiki_tfds):
    data_dir, _ = wiki_tfds
    with pytest.raises(CorpusError, match="no feature 'text' \\(features: TEXT, line\\)"):
        list(iter_documents(f"tfds:wiki_lines#split=train,data_dir={data_dir}"))
    with pytest.raises(CorpusError, match="tfds could not open the dataset \\(DatasetNotFoundError"):
        list(iter_documents(f"tfds:no_such_dataset#data_dir={data_dir},download=false"))


def test_tfds_source_through_the_shards_stage(wiki_tfds, tmp_path):
    data_dir, lines = wiki_tfds
    model = tmp_path / "bpe.model"
    model.write_bytes(train_sentencepiece(lines, 300, "bpe"))
    source = SourceSpec.parse(f"tfds:wiki_lines#split=train,field=TEXT,data_dir={data_dir},download=false")
    manifest = run_shards([source], str(model), tmp_path / "shards", cfg=ShardConfig(seq_len=64, valid=20, test=10),
                          block_rows=16)
    counts = manifest["source"]["counts"]
    assert [counts[s]["texts"] for s in ("train", "validation", "test")] == [TRAIN - 30, 20, 10]
    assert manifest["source"]["inputs"][0]["split"] == "train"
    assert open_split(tmp_path / "shards", "train", verify=True).num_sequences == TRAIN - 30
