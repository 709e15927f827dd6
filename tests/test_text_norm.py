"""One normalisation across corpus filter, task filter, tokenizer training and task encoding."""

from minilm_jax.corpus.words import check_words
from minilm_jax.tasks.vocab_filter import content_words
from minilm_jax.text_norm import join_contractions, normalize

SENTENCE = "the kids didn't see the well-known dog's bone, and it's rock'n'roll; they won't do n't stop!"


def test_corpus_and_task_filters_see_the_same_words():
    corpus_words = check_words(SENTENCE)
    task_words = content_words(SENTENCE)
    assert corpus_words == task_words
    assert "didnt" in corpus_words and "wont" in corpus_words and "its" in corpus_words
    assert "well" in corpus_words and "known" in corpus_words and "nt" not in corpus_words


def test_capitals_and_digits_documented_difference():
    text = "The 3 kids didn't see Mary's well-known dog!"
    # Capitalised words other than the first are proper nouns for the task filter only (SPEC A6);
    # digits become 'number' in the corpus check (SPEC A1) and vanish in the task filter.
    assert check_words(text) == ["the", "number", "kids", "didnt", "see", "marys", "well", "known",
                                 "dog"]
    assert content_words(text) == ["the", "kids", "didnt", "see", "well", "known", "dog"]


def test_join_contractions_keeps_spaces():
    text = "don\u2019t  stop 'quoted' it's"
    joined = join_contractions(text)
    assert joined == "dont  stop 'quoted' its"
    assert joined.count(" ") == text.count(" ")
    assert normalize("Doesn't") == "doesnt"


def test_trained_tokenizer_lowercases_at_encode_time(tmp_path):
    from minilm_jax.corpus.tokenizer_train import TrainConfig, train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer

    texts = [f"the dog and the cat saw {w} in the park today" for w in
             ("a bird", "the ball", "some kids", "a tree", "the man")] * 40
    model = train_sentencepiece(texts, 60, "bpe", TrainConfig())
    path = tmp_path / "tok.model"
    path.write_bytes(model)
    tok = load_tokenizer(str(path))
    assert tok.encode("The Dog SAW the Cat") == tok.encode("the dog saw the cat")
    assert tok.unk_id not in tok.encode("The Dog SAW the Cat")
