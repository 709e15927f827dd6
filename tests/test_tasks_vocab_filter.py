"""Vocabulary filter (SPEC A6): hand cases and survival rates on the real GLUE files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minilm_jax.tasks import filter_examples, load_glue
from minilm_jax.tasks.base import Example
from minilm_jax.tasks.vocab_filter import content_words


def shared_data() -> Path:
    env = os.environ.get("MINILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_content_words_rules():
    # Proper nouns dropped except sentence-initially; digits/punctuation deleted; stubs ignored.
    assert content_words("John saw Mary in Paris. Then he left!") == \
        ["john", "saw", "in", "then", "he", "left"]
    assert content_words("He did n't buy Dominick 's 2 cars .") == ["he", "did", "buy", "cars"]
    assert content_words("I won't go, it's 5pm.") == ["i", "wont", "go", "its", "pm"]
    assert content_words('" The pie " , he said . " Good "') == ["the", "pie", "he", "said", "good"]
    assert content_words("a three-minute alert 1998", split_hyphens=False) == ["a", "threeminute", "alert"]
    assert content_words("a three-minute alert 1998") == ["a", "three", "minute", "alert"]
    assert content_words("a three-minute alert", split_hyphens=True) == ["a", "three", "minute", "alert"]
    assert content_words("we 're here 'll d ve", stubs=frozenset({"re"})) == \
        ["we", "here", "ll", "d", "ve"]


def test_filter_examples_keeps_order_and_counts():
    vocab = frozenset({"the", "cat", "sat", "a", "dog", "ran"})
    exs = {"train": [Example("The cat sat.", None, 1, "t/train/0"),
                     Example("The cat sat on Tom.", None, 0, "t/train/1"),   # 'on' unknown
                     Example("A dog ran.", "The Bob cat ran.", 1, "t/train/2")],
           "dev": [Example("The cow sat.", None, 0, "t/dev/0"),
                   Example("Rex ran.", "Sat 42.", 1, "t/dev/1")]}
    kept, report = filter_examples(exs, vocab)
    assert [e.uid for e in kept["train"]] == ["t/train/0", "t/train/2"]
    assert [e.uid for e in kept["dev"]] == []   # 'rex' is sentence-initial, so it is checked
    assert report.total == {"train": 3, "dev": 2} and report.kept == {"train": 2, "dev": 0}
    assert report.rate() == pytest.approx(2 / 5) and report.rate("train") == pytest.approx(2 / 3)
    assert report.oov == {"on": 1, "cow": 1, "rex": 1}
    flat, flat_report = filter_examples(exs["train"], vocab)
    assert flat == kept["train"] and flat_report.total == {"all": 3}


# Survival rates on pooled splits from the authors' notebook (SPEC A6).
PAPER = {"cola": 0.62, "sst2": 0.31, "mrpc": 0.10, "stsb": 0.40, "rte": 0.06, "wnli": 0.42}


def test_filter_on_real_glue(capsys):
    data = shared_data()
    vocab_path = data / "vocab" / "AOChildes_word_frequency.csv"
    if not (vocab_path.exists() and (data / "glue").is_dir()):
        pytest.skip("shared GLUE data or vocabulary not available")
    from minilm_jax.corpus.vocab import load_word_list
    vocab = load_word_list(vocab_path)
    assert len(vocab) > 20_000
    rates = {}
    for task, paper in PAPER.items():
        splits = {s: load_glue(task, s, data_dir=data / "glue") for s in ("train", "dev")}
        kept, report = filter_examples(splits, vocab)
        rates[task] = report.rate()
        with capsys.disabled():
            print(f"\n{task}: {report.summary()} (paper, pooled: {100 * paper:.0f}%)")
        # Every kept example is a subset of its split, in order.
        for split, exs in kept.items():
            index = {}  # uid -> its first position (list.index per kept example: quadratic)
            for i, e in enumerate(splits[split]):
                index.setdefault(e.uid, i)
            idx = [index[e.uid] for e in exs]
            assert idx == sorted(idx)
        # Loose agreement with the paper's notebook (different vocabulary file / splits).
        assert abs(rates[task] - paper) < 0.08, (task, rates[task])
    # The ordering of the paper's rates is reproduced at the extremes.
    assert max(rates, key=rates.get) == "cola" and min(rates, key=rates.get) == "rte"
