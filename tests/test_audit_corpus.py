"""Corpus building and task-data loading pinned on tiny inputs counted by hand: the packing limit,
the tokenizer-selection rule and unknown-text rate, the filter's check words and eligible words,
packing per source, the control's target, split sizes and packed rows of shards, BBC sentence
bounds and order labels, mismatched headlines, per-class holdouts, own-table labels, FewRel entity
positions and TFDS class labels."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from configs.finetune import get_config
from minilm_jax.corpus.constrained import (FilterConfig, FilterCounts, VocabularyChecker,
                                           filter_document)
from minilm_jax.corpus.control import run_control
from minilm_jax.corpus.filter_stage import PackConfig, SequenceSink, run_filter
from minilm_jax.corpus.manifest import JsonlWriter
from minilm_jax.corpus.sequence_packing import pack
from minilm_jax.corpus.shards_build import RowBuilder, ShardConfig, split_assignment, split_sizes
from minilm_jax.corpus.sources import SourceSpec
from minilm_jax.corpus.text_selection import recommend, unk_rates
from minilm_jax.tasks import bbc
from minilm_jax.tasks.base import Example, TaskDataError
from minilm_jax.tasks.classification import load_fewrel
from minilm_jax.tasks.loaders import headline_examples, holdout_split
from minilm_jax.tasks.table import table_task
from minilm_jax.tasks.tfds_source import as_class_label


# ------------------------------------------------------------------------------ corpus stages
def test_packing_closes_a_sequence_when_words_times_ratio_reach_the_limit_exactly():
    """A sequence grows while words x ratio < max_len: reaching max_len exactly closes it."""
    units = ["x x x x x", "y y y y y", "z"]
    # 5 -> 5 + 5 = 10 (10 x 1.0 = 10, not < 10): close; then 5 + 1 = 6 < 10
    assert list(pack(units, max_len=10, ratio=1.0)) == ["x x x x x", "y y y y y z"]
    # ratio 0.5 (exact in binary): 5 + 5 = 10 words x 0.5 = 5 = max_len: close as well
    assert list(pack(units, max_len=5, ratio=0.5)) == ["x x x x x", "y y y y y z"]


def test_recommendation_tolerance_is_relative_to_the_lowest_split_ratio():
    """Candidates lie within tolerance x the lowest split ratio, not tolerance added to it."""
    rows = [{"model_type": "bpe", "vocab_size": v, "split_ratio": s, "esms": e}
            for v, s, e in ((1000, 2.30, 0.90), (2000, 2.08, 0.50), (4000, 2.00, 0.30))]
    # 5% of 2.00 -> bound 2.10: 2000 and 4000 are candidates; 2000 has the higher ESMS
    assert recommend(rows) == {"bpe": 2000}
    assert recommend(rows, tolerance=0.03) == {"bpe": 4000}  # bound 2.06: 4000 alone


class _UnkTokenizer:
    """One token per whitespace word; the word ``x`` is unknown (id 3)."""

    unk_id = 3

    def encode_batch(self, texts):
        return [[3 if w == "x" else 9 for w in t.split()] for t in texts]


def test_unknown_text_rate_counts_a_text_once_whatever_its_unknown_tokens():
    """Two texts, one holding two unknown tokens: half the texts, 2 of 4 tokens."""
    rates = unk_rates(_UnkTokenizer(), ["x x y", "y"])
    assert rates == {"unk_token_rate": 2 / 4, "unk_text_rate": 1 / 2}


def test_single_character_words_are_not_check_words_even_in_the_vocabulary():
    """'a' is in the vocabulary but has one character: no check word, not out of vocabulary."""
    checker = VocabularyChecker(frozenset({"a", "ab"}))
    assert checker.word_info("a") == (0, ())
    assert checker.word_info("ab") == (1, ())
    counts, oov = FilterCounts(), Counter()
    # 5 whitespace words, 3 check words: not more than min_words=3 -> too short
    kept = filter_document("a ab ab ab a", checker, FilterConfig(window=5, stride=5, min_words=3),
                           counts, oov)
    assert kept == [] and (counts.units, counts.too_short, counts.kept) == (1, 1, 0)
    counts = FilterCounts()
    kept = filter_document("a ab ab ab ab a", checker,
                           FilterConfig(window=6, stride=6, min_words=3), counts, Counter())
    assert kept == ["a ab ab ab ab a"] and counts.kept == 1  # 4 check words > 3


def test_eligible_words_count_whitespace_words_not_check_words():
    """The control's word budget counts a window's whitespace words (6), not its check words (3)."""
    checker = VocabularyChecker(frozenset({"ab", "cd", "ef"}))
    counts = FilterCounts()
    kept = filter_document("a b ab cd ef x", checker, FilterConfig(window=6, stride=6, min_words=2),
                           counts, Counter())
    assert kept == ["a b ab cd ef x"]
    assert (counts.eligible, counts.eligible_words) == (1, 6)


def test_packing_never_joins_units_of_two_sources(tmp_path):
    """Switching source closes the sequence being packed; each sequence keeps its own source."""
    path = tmp_path / "s.jsonl"
    with JsonlWriter(path) as writer:
        sink = SequenceSink(writer, PackConfig(), dedup=False)
        sink.add("a", ["one two", "three"])
        sink.add("b", ["four five six"])
        sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"text": "one two three", "source": "a"},
                    {"text": "four five six", "source": "b"}]
    assert sink.sequences == Counter({"a": 1, "b": 1})
    assert sink.words == Counter({"a": 3, "b": 3})


def test_control_target_is_the_constrained_corpus_units_after_duplicates(tmp_path):
    """Three copies of one 10-word document: windows [0:10] and [5:10] each, 6 kept, 4 duplicates;
    the control must match the 2 units the constrained corpus holds."""
    words = "the dog sat big cat ran the cat sat big"
    src = tmp_path / "docs.txt"
    src.write_text("\n".join([words] * 3) + "\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(sorted(set(words.split()))) + "\n")
    cfg = FilterConfig(window=10, stride=5, min_words=4)
    report = run_filter([SourceSpec.parse(f"text:{src}#name=docs")], vocab, tmp_path / "c", cfg=cfg)
    entry = report["sources"]["docs"]
    assert (entry["kept"], entry["duplicates"]) == (6, 4)
    control = run_control(tmp_path / "c", tmp_path / "u")["sources"]["docs"]
    assert control["target"] == 2 and control["units"] == 2


def test_split_sizes_round_fractions_to_the_nearest_count():
    """10 texts: 0.17 -> 1.7 -> 2 validation, 0.26 -> 2.6 -> 3 test, 5 train (not floored)."""
    assert split_sizes(10, 0.17, 0.26) == (5, 2, 3)
    assert split_sizes(10, 2, 3) == (5, 2, 3)  # counts at or above 1 are taken as they are
    assignment = split_assignment(10, 0.17, 0.26, seed=0)
    assert np.bincount(assignment, minlength=3).tolist() == [5, 2, 3]


def test_packed_row_takes_a_piece_that_fills_it_exactly():
    """seq_len 6: pieces <s> 7 </s> and <s> 8 </s> (3 + 3 = 6) share one row, segments 1 and 2."""
    builder = RowBuilder(ShardConfig(seq_len=6, mode="packed", valid=0, test=0), 1, 2, 0)
    for ids in ([7], [8], [9, 9]):
        builder.add(ids)
    builder.finish()
    tokens, segments = builder.buffer.arrays()
    np.testing.assert_array_equal(tokens, [[1, 7, 2, 1, 8, 2], [1, 9, 9, 2, 0, 0]])
    np.testing.assert_array_equal(segments, [[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 0, 0]])


# ------------------------------------------------------------------------------ BBC tasks
def _sentence(n: int, tag: str) -> str:
    return " ".join([f"{tag.capitalize()}"] + [f"{tag}{k}" for k in range(1, n)]) + "."


def test_bbc_sentences_keep_eight_to_forty_words_inclusive():
    body = " ".join(_sentence(n, t) for n, t in ((7, "a"), (8, "b"), (40, "c"), (41, "d")))
    assert [len(s.split()) for s in bbc.sentences(body)] == [8, 40]


def _heldout(rel: str) -> bool:
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 5 == 0


def _article_folder(root: Path) -> dict[str, list[str]]:
    """Two classes of six articles, each a title and three 8-12 word sentences; the sentences of
    every article by relative path."""
    bodies = {}
    for cls in ("sport", "tech"):
        (root / cls).mkdir(parents=True)
        for a in range(6):
            sents = [_sentence(8 + 2 * s, f"{cls[0]}{a}w{s}x") for s in range(3)]
            text = f"Title {cls} {a}\n\n" + " ".join(sents) + "\n"
            (root / cls / f"{a:03d}.txt").write_text(text)
            bodies[f"{cls}/{a:03d}.txt"] = sents
    return bodies


def test_bbc_order_labels_original_sentences_one_and_permuted_zero(tmp_path):
    """Label 1: the lowercased sentence itself; label 0: its words in another order."""
    bodies = _article_folder(tmp_path / "bbc")
    for split, held in (("train", False), ("test", True)):
        examples, spec = bbc.load_bbc_task(bbc.ORDER, split, seed=1, root=tmp_path / "bbc")
        expected = {f"{rel}#{i}": s.lower() for rel, sents in bodies.items()
                    if _heldout(rel) == held for i, s in enumerate(sents)}
        assert spec.label_names == ("permuted", "original")
        assert sorted(ex.uid.split("/", 2)[2] for ex in examples) == sorted(expected)
        for ex in examples:
            original = expected[ex.uid.split("/", 2)[2]]
            if ex.label == 1:
                assert ex.text_a == original
            else:
                assert ex.text_a != original
                assert sorted(ex.text_a[:-1].split()) == sorted(original[:-1].split())
                assert ex.text_a.endswith(".")
        assert {ex.label for ex in examples} == {0, 1}


# ------------------------------------------------------------------------------ loaders
def _headline_folder(root: Path) -> list[tuple[str, str]]:
    docs = []
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            title, body = f"Headline {cls}{k}", f"First part {cls}{k}. Second part {cls}{k}."
            (root / cls / f"{k}.txt").write_text(f"{title}\n{body}\n")
            docs.append((title, body))
    return docs


def test_mismatched_headline_is_always_another_articles(tmp_path):
    """Label 0 pairs a first sentence with a headline of a different article, never its own."""
    docs = _headline_folder(tmp_path / "f")
    titles = [t for t, _ in docs]
    mismatches = 0
    for seed in range(10):
        examples, _ = headline_examples(tmp_path / "f", "bbc_headlines", seed)
        assert len(examples) == len(docs)
        for (title, body), ex in zip(docs, examples):
            assert ex.text_b == body.split(". ")[0]
            if ex.label == 1:
                assert ex.text_a == title
            else:
                mismatches += 1
                assert ex.text_a in titles and ex.text_a != title
    assert mismatches >= 10  # half the pairs, over 40 pairs


def test_headline_draw_matches_a_reimplementation(tmp_path):
    """The seeded draw: per article, random() < 0.5 mismatches, then randrange over the others."""
    docs = _headline_folder(tmp_path / "f")
    examples, _ = headline_examples(tmp_path / "f", "bbc_headlines", 7)
    rng = random.Random(7)
    for i, ex in enumerate(examples):
        if rng.random() < 0.5:
            others = [k for k in range(len(docs)) if k != i]
            assert (ex.label, ex.text_a) == (0, docs[others[rng.randrange(len(docs) - 1)]][0])
        else:
            assert (ex.label, ex.text_a) == (1, docs[i][0])


def test_holdout_takes_at_least_one_example_of_every_class():
    """fraction 0.2: 10 examples -> 2 held; 2 examples -> round(0.4) = 0, raised to 1."""
    examples = [Example(f"t{i}", None, 0 if i < 10 else 1, str(i)) for i in range(12)]
    train, held = holdout_split(examples, 0.2, seed=0)
    assert Counter(ex.label for ex in held) == Counter({0: 2, 1: 1})
    assert Counter(ex.label for ex in train) == Counter({0: 8, 1: 1})
    assert sorted(ex.uid for ex in train + held) == sorted(ex.uid for ex in examples)


def test_holdout_never_takes_a_class_s_last_example():
    """A folder task's holdout (as an own table's): fraction 0.8 of a two-example class rounds
    to 2 and of a one-example class to 1; each keeps one example to train on."""
    labels = [0] * 5 + [1, 1, 2]
    examples = [Example(f"t{i}", None, label, str(i)) for i, label in enumerate(labels)]
    train, held = holdout_split(examples, 0.8, seed=3)
    assert Counter(ex.label for ex in held) == Counter({0: 4, 1: 1})
    assert Counter(ex.label for ex in train) == Counter({0: 1, 1: 1, 2: 1})


def test_table_labels_are_stripped_before_classes_are_made(tmp_path):
    """A CSV label written ' pos' (space after the comma) is the class 'pos', not a third class."""
    path = tmp_path / "all.csv"
    path.write_text("text,label\ngood film, pos\nfine film,pos\nbad film,neg \nsad film,neg\n")
    data = get_config("table").data
    data.dir = str(path)
    spec, examples, one_file = table_task("table", data)
    assert one_file and spec.label_names == ("neg", "pos")
    assert [ex.label for ex in examples["all"]] == [1, 1, 0, 0]


def test_fewrel_entity_position_past_the_sentence_is_a_named_data_error(tmp_path):
    """A tail at index len(tokens) is outside the sentence; the last index is inside."""
    def instance(tail: int) -> dict:
        return {"tokens": ["Ann", "met", "Bob"], "h": ["ann", "Q1", [[0]]],
                "t": ["bob", "Q2", [[tail]]]}

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"P1": [instance(2)]}))
    examples, _ = load_fewrel(good)
    assert examples[0].text_a == "[E1] Ann [/E1] met [E2] Bob [/E2]"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"P1": [instance(3)]}))
    with pytest.raises(TaskDataError, match="instance 0: malformed"):
        load_fewrel(bad)


def test_tfds_class_label_must_be_below_the_number_of_labels():
    assert as_class_label(np.int64(3), 4, "r") == 3
    assert as_class_label(-1, 4, "r") is None
    with pytest.raises(TaskDataError, match="outside 0..3"):
        as_class_label(4, 4, "r")
