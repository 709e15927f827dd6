"""Data pipeline details pinned on tiny inputs counted by hand: pair truncation and its budget,
training and evaluation rows read from shards, folds and held-out shares, class order, repeated
texts of pair tasks, the token-range check of shards, token overlap over long inputs, the
vocabulary filter's report and WordPiece lower-casing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minilm_jax.corpus.overlap import token_overlap
from minilm_jax.data.shards import ShardError, ShardSplit, open_split, write_shards
from minilm_jax.tasks.base import Example, TaskDataError
from minilm_jax.tasks.encoding import build_inputs, truncate_pair
from minilm_jax.tasks.sampling import fold_assignment, split_off_fraction
from minilm_jax.tasks.table import check_repeated_texts, class_names
from minilm_jax.tasks.vocab_filter import filter_examples
from minilm_jax.tokenizer import TokenizerInfo, WordPieceTokenizer
from minilm_jax.train.batches import BatchIndexer, eval_batch, train_batch


class _WordPiece:
    kind, pad_id, bos_id, eos_id, unk_id, mask_id, vocab_size = "wordpiece", 0, 1, 2, 3, 4, 100


def _split(n: int = 10, t: int = 4) -> ShardSplit:
    """Row ``i`` holds tokens ``10 * i + 5 ...``; segments give the row number + 1 at every slot."""
    tokens = (10 * np.arange(n)[:, None] + 5 + np.arange(t)[None, :]).astype(np.int32)
    segments = np.repeat(np.arange(1, n + 1, dtype=np.int32)[:, None], t, axis=1)
    return ShardSplit(tokens=tokens, segments=segments)


def test_pair_truncation_on_ties_pops_the_second_text():
    """Equal lengths lose a token from B first, as BERT's _truncate_seq_pair."""
    # (3,3) -> B; (3,2) -> A; (2,2) -> B: by hand
    assert truncate_pair([1, 2, 3], [4, 5, 6], 3) == ([1, 2], [4])
    assert truncate_pair([1, 2], [3, 4], 3) == ([1, 2], [3])


def test_bert_pair_fills_max_len_with_three_special_tokens():
    """A truncated BERT pair is exactly max_len long: [CLS] A [SEP] B [SEP]."""
    toks, types = build_inputs(_WordPiece(), list(range(10, 20)), list(range(30, 40)), max_len=8)
    assert len(toks) == len(types) == 8
    assert toks == [1, 10, 11, 12, 2, 30, 31, 2]  # budget 5: A keeps 3, B keeps 2 (by hand)


def test_training_rows_keep_the_batch_order_for_tokens_and_segments():
    """Each training row's tokens and segments are those of the indexer's row, in its order."""
    split = _split(10)
    indexer = BatchIndexer(3, 10, 6)
    for step in range(3):
        rows = indexer.indices(step)
        batch = train_batch(split, indexer, step, pad_id=1)
        np.testing.assert_array_equal(batch["tokens"][0, 0], split.tokens[rows])
        np.testing.assert_array_equal(batch["segments"][0, 0], split.segments[rows])


def test_evaluation_batches_mark_only_real_rows_valid():
    """A short last evaluation batch pads with copies of row ``start``, marked invalid."""
    split = _split(10)
    last = eval_batch(split, 8, 10, 4, pad_id=1)
    assert last["valid"].tolist() == [1, 1, 0, 0]
    np.testing.assert_array_equal(last["tokens"], split.tokens[[8, 9, 8, 8]])
    counted = Counter()
    for start in range(0, 10, 4):
        b = eval_batch(split, start, min(start + 4, 10), 4, pad_id=1)
        counted.update(int(r[0]) for r, v in zip(b["segments"], b["valid"]) if v)
    assert counted == Counter(range(1, 11))


def test_stratified_folds_have_sizes_within_one_across_classes():
    """Dealing continues from class to class: 3 classes of 4 rows in 3 folds give 4 rows each."""
    examples = [Example(f"t{i}", None, i // 4, f"u{i}") for i in range(12)]
    fold = fold_assignment(examples, 3, seed=0)
    assert sorted(Counter(fold).values()) == [4, 4, 4]
    for label in range(3):
        per = Counter(f for f, ex in zip(fold, examples) if ex.label == label)
        assert sorted(per.values()) == [1, 1, 2]


def test_a_one_example_class_is_never_held_out():
    """A class of one row stays in the training part; a class of 10 gives round(0.3 * 10) rows."""
    examples = [Example(f"t{i}", None, 0, f"u{i}") for i in range(10)]
    examples.append(Example("lonely", None, 1, "u10"))
    for seed in range(5):
        rest, part = split_off_fraction(examples, 0.3, seed)
        assert [ex.label for ex in part] == [0, 0, 0]
        assert examples[-1] in rest and len(rest) == 8


def test_integer_class_names_sort_numerically():
    """Integer labels order as numbers (2 before 10), so class indices follow the numbers."""
    assert class_names({"10", "2", "1", "-3"}) == ("-3", "1", "2", "10")


def test_pair_tasks_tell_texts_apart_by_both_sentences(tmp_path):
    """The same first sentence with another second sentence is another text, not a conflict."""
    rows = [("a cat", "it sleeps", "yes", 2), ("a cat", "it barks", "no", 3)]
    check_repeated_texts(tmp_path / "pairs.csv", rows, regression=False, one_file=True)
    with pytest.raises(TaskDataError):
        check_repeated_texts(tmp_path / "pairs.csv", rows + [("a cat", "it barks", "yes", 4)],
                             regression=False, one_file=True)


def test_a_token_id_out_of_range_in_the_last_row_is_refused(tmp_path):
    """Opening a shard checks the last row's token ids against the tokenizer's size."""
    tokens = np.full((5, 4), 7, np.int32)
    tokens[-1, 2] = 50  # vocab_size 50: ids 0..49
    write_shards(tmp_path, {"train": tokens}, pad_id=1,
                 tokenizer=TokenizerInfo(sha256="0" * 64, vocab_size=50))
    with pytest.raises(ShardError):
        open_split(tmp_path, "train")


def test_token_overlap_counts_each_occurrence_once_over_a_million_tokens():
    """Occurrence counts over more than 2**20 task tokens equal a plain bincount of them."""
    seqs = [np.full(1 << 20, 5), np.arange(10), np.full(7, 6)]
    present = np.zeros(10, bool)
    present[[5, 7]] = True
    got = token_overlap(present, seqs, special_ids=[0])
    counts = np.bincount(np.concatenate(seqs), minlength=10)
    counts[0] = 0
    assert got["task_tokens"] == counts.sum() == (1 << 20) + 9 + 7
    assert got["shared_tokens"] == counts[5] + counts[7] == (1 << 20) + 2


def test_filter_report_counts_examples_per_unknown_word():
    """``oov`` counts the examples a word rejected, not its occurrences."""
    examples = [Example("the zork zork zork", None, 0, "u0"), Example("zork", "the", 1, "u1"),
                Example("the", None, 0, "u2")]
    kept, report = filter_examples(examples, frozenset({"the"}))
    assert kept == examples[2:] and report.oov == Counter({"zork": 2})


def test_wordpiece_tokenizer_config_decides_lowercasing(tmp_path):
    """do_lower_case in tokenizer_config.json wins over the lowercase argument."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tmp_path / "vocab.txt").write_text("\n".join(specials + ["cat", "Cat"]) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tok = WordPieceTokenizer(Path(tmp_path / "vocab.txt"), lowercase=True)
    assert tok.lowercase is False and tok.encode("Cat cat") == [6, 5]
