"""Zero-shot scoring of a Hugging Face folder and the pair suites, checked against independent
computations on tiny inputs: the scorer's log-probabilities against a plain transformers forward
pass of each unpadded row (rows chunked, padding, several positions, float32 from a bfloat16
file), word starts from a WordPiece vocabulary, the random twin's seeding (a folder, our
remote-code export, a checkpoint) and what its rows say, folder detection, how pair files are
read and named, the evaluator's longest input, and the numbers the tables print."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm_jax.errors import UserError
from minilm_jax.evals import suites
from minilm_jax.evals.suites import MinimalPair, load_pairs

WORDS = ["the", "dog", "dogs", "cat", "is", "are", "here", "there", "play", "run", "."]
PIECES = ["##ing", "##s", "##er"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STEP, PPL = 7, 12.5


def bert_folder(root, dtype=None):
    """A tiny BERT masked LM with a lower-casing WordPiece fast tokenizer, saved with a
    provenance block as an export writes it (step, validation perplexity)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minilm_jax.interop.hf_roberta import METADATA_KEY

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    root.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS + PIECES)}
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]").save_pretrained(str(root))
    torch.manual_seed(1234)  # not a twin's seed
    config = transformers.BertConfig(vocab_size=len(SPECIALS + WORDS + PIECES), hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=24)
    model = transformers.BertForMaskedLM(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(root))
    flat = json.loads((root / "config.json").read_text())
    flat[METADATA_KEY] = {"provenance": {"step": STEP, "validation_perplexity": PPL}}
    (root / "config.json").write_text(json.dumps(flat))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory, one_torch_thread):
    return bert_folder(tmp_path_factory.mktemp("audit_hf") / "bert")


def reference_logprobs(path, tokens, positions, targets, pad_id):
    """Each row alone, its padding cut off, through transformers with no attention mask: the
    log-softmax over the vocabulary of the logits at each position, read at its target."""
    import torch
    import transformers

    model = transformers.AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32)
    model = model.float().eval()
    out = np.zeros(positions.shape, np.float64)
    with torch.no_grad():
        for r in range(tokens.shape[0]):
            ids = tokens[r][tokens[r] != pad_id]
            logits = model(input_ids=torch.tensor(ids[None], dtype=torch.long)).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1).numpy()
            out[r] = logp[positions[r], targets[r]]
    return out


def rows_of(tok):
    """Three rows of unequal length (padded), one with a [MASK], four positions each."""
    t = tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id
    ids = [tok.encode(s) for s in ["the dogs are here .", "the cat is there", "dog ."]]
    tokens = np.full((3, 8), t[2], np.int32)
    for r, row in enumerate(ids):
        tokens[r, :len(row) + 2] = [t[0], *row, t[1]]
    tokens[1, 2] = t[3]
    positions = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 0]], np.int32)
    targets = np.array([[ids[0][i] for i in range(4)], [ids[1][i] for i in range(4)],
                        [ids[2][0], ids[2][1], t[1], t[0]]], np.int32)
    return tokens, positions, targets


def test_hf_logprobs_equal_a_plain_forward_pass_per_row_even_chunked(folder, monkeypatch):
    """Padding is masked out, not a [MASK]; the softmax runs over the vocabulary; rows split
    into chunks (a tiny logits budget) come back whole and in order."""
    from minilm_jax.evals import hf_scorer

    model = hf_scorer.hugging_face_model(folder)
    tokens, positions, targets = rows_of(model.tokenizer)
    want = reference_logprobs(folder, tokens, positions, targets, model.tokenizer.pad_id)
    np.testing.assert_allclose(model.logprobs(tokens, positions, targets), want, atol=2e-5)
    vocab = model.tokenizer.vocab_size
    monkeypatch.setattr(hf_scorer, "LOGITS_BUDGET", 4 * vocab * tokens.shape[1])  # a row each
    np.testing.assert_allclose(model.logprobs(tokens, positions, targets), want, atol=2e-5)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_bfloat16_file_is_scored_in_float32(tmp_path):
    """A folder saved in bfloat16 is scored with its weights cast up to float32: the numbers
    equal float32 arithmetic on those weights, not bfloat16's (off by ~1e-2)."""
    from minilm_jax.evals.hf_scorer import hugging_face_model

    torch = pytest.importorskip("torch")
    path = bert_folder(tmp_path / "bf16", dtype=torch.bfloat16)
    model = hugging_face_model(path)
    tokens, positions, targets = rows_of(model.tokenizer)
    want = reference_logprobs(path, tokens, positions, targets, model.tokenizer.pad_id)
    np.testing.assert_allclose(model.logprobs(tokens, positions, targets), want, atol=2e-5)


def test_word_starts_come_from_word_ids_first_piece_included(folder):
    """WordPiece: ``play ##ing`` is one word, its first piece a start, also when it is the whole
    sentence; the tokenizer lower-cases (BERT's default) and its vocabulary counts every token."""
    import transformers

    from minilm_jax.evals.hf_scorer import HuggingFaceTokenizer

    tok = HuggingFaceTokenizer(folder)
    vocab = SPECIALS + WORDS + PIECES
    assert tok.encode_words("playing") == ([vocab.index("play"), vocab.index("##ing")],
                                           [True, False])
    ids, starts = tok.encode_words("The Dogs playing there")
    assert ids == [vocab.index(w) for w in ["the", "dogs", "play", "##ing", "there"]]
    assert starts == [True, True, True, False, True]
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.mask_id) == (2, 3, 0, 1, 4)
    assert tok.vocab_size == len(transformers.AutoTokenizer.from_pretrained(str(folder)))


def test_added_tokens_count_in_the_vocabulary_size(folder, tmp_path):
    """A token added to the tokenizer (beyond its base vocabulary) counts in ``vocab_size``."""
    import shutil

    import transformers

    from minilm_jax.evals.hf_scorer import HuggingFaceTokenizer

    path = shutil.copytree(folder, tmp_path / "added")
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    tok.add_tokens(["zebra"])
    tok.save_pretrained(str(path))
    assert HuggingFaceTokenizer(path).vocab_size == len(SPECIALS + WORDS + PIECES) + 1


def test_random_twin_is_seeded_and_says_it_is_untrained(folder):
    """The twin of seed s is the same model on every call, another for another seed; seed 0 is
    a twin too, not the pre-trained weights; its info has step 0 and no perplexity while the
    pre-trained model's has the export's provenance."""
    from minilm_jax.evals.hf_scorer import hugging_face_model

    pre = hugging_face_model(folder)
    tokens, positions, targets = rows_of(pre.tokenizer)

    def scores(model):
        return model.logprobs(tokens, positions, targets)

    twins = {seed: hugging_face_model(folder, random_seed=seed) for seed in (0, 3)}
    np.testing.assert_array_equal(scores(hugging_face_model(folder, random_seed=3)),
                                  scores(twins[3]))
    assert np.max(np.abs(scores(twins[3]) - scores(twins[0]))) > 1e-3
    assert np.max(np.abs(scores(twins[0]) - scores(pre))) > 1e-3
    assert (pre.info["init"], pre.info["step"], pre.info["validation_perplexity"]) == (
        "pretrained", STEP, PPL)
    for twin in twins.values():
        assert (twin.info["init"], twin.info["step"], twin.info["validation_perplexity"]) == (
            "random", 0, None)


def test_longest_input_is_the_smaller_limit():
    """The tokenizer's limit and the model's positions: the smaller; an unset (huge) one is
    ignored, no positions means no limit."""
    from types import SimpleNamespace

    from minilm_jax.evals.hf_scorer import longest_input

    def tok(limit):
        return SimpleNamespace(_tok=SimpleNamespace(model_max_length=limit))

    assert longest_input(tok(512), 24) == 24
    assert longest_input(tok(16), 24) == 16
    assert longest_input(tok(int(1e30)), 24) == 24
    assert longest_input(tok(16), 0) is None


def test_a_partly_loaded_model_is_refused_for_missing_or_reshaped_tensors(tmp_path):
    from minilm_jax.evals.hf_scorer import refuse_partial_load

    refuse_partial_load(tmp_path, {"missing_keys": [], "mismatched_keys": []})
    for loading in ({"missing_keys": ["a.weight"]},
                    {"missing_keys": [], "mismatched_keys": [("b.weight", (2,), (3,))]}):
        with pytest.raises(UserError, match="weights do not fit"):
            refuse_partial_load(tmp_path, loading)


def test_folder_detection_reads_model_type_or_architectures(tmp_path):
    """A config.json with only ``model_type`` (or only ``architectures``) is a Hugging Face
    folder; one with neither (e.g. our run's config) is not."""
    from minilm_jax.evals.hf_scorer import is_hugging_face_dir

    for name, flat in [("type", {"model_type": "bert"}), ("arch", {"architectures": ["X"]}),
                       ("neither", {"model": {"point": "tiny"}})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(flat))
    assert is_hugging_face_dir(tmp_path / "type") and is_hugging_face_dir(tmp_path / "arch")
    assert not is_hugging_face_dir(tmp_path / "neither")


def test_a_config_listing_a_masked_lm_among_task_heads_is_scored(folder, tmp_path):
    """Only a folder whose architectures are all task heads is refused as not a masked LM."""
    import shutil

    from minilm_jax.evals.hf_folders import inspect_folder

    path = shutil.copytree(folder, tmp_path / "both")
    flat = json.loads((path / "config.json").read_text())
    flat["architectures"] = ["BertForMaskedLM", "BertForSequenceClassification"]
    (path / "config.json").write_text(json.dumps(flat))
    assert inspect_folder(path).config["architectures"][0] == "BertForMaskedLM"
    flat["architectures"] = ["BertForSequenceClassification"]
    (path / "config.json").write_text(json.dumps(flat))
    with pytest.raises(UserError, match="not a masked LM"):
        inspect_folder(path)


def test_command_titles_the_pretrained_step_and_writes_both_models(folder, tmp_path):
    """``python -m minilm_jax.evals`` on a folder: the report's title names the export's step
    (not the twin's 0); rows of both models, their info as loaded."""
    from minilm_jax.evals.__main__ import main

    pairs = tmp_path / "mine.jsonl"
    pairs.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b
                             in [("the dog is here .", "the dog are here ."),
                                 ("the dogs are here .", "the dogs is here .")]))
    out = tmp_path / "scores"
    assert main(["--workdir", str(folder), "--suite", str(pairs), "--rules", "pll",
                 "--out", str(out)]) == 0
    title = (out / "minimal_pairs.md").read_text().splitlines()[0]
    assert f"at step {STEP} " in title
    rows = [json.loads(line) for line in (out / "minimal_pairs.jsonl").read_text().splitlines()]
    assert [(r["init"], r["step"], r["validation_perplexity"], r["scored"]) for r in rows] == [
        ("pretrained", STEP, PPL, 2), ("random", 0, None, 2)]


def write_jsonl(path, pairs, **fields):
    path.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, **fields}) + "\n"
                            for g, b in pairs))
    return path


def test_evaluator_skips_pairs_longer_than_the_model_and_keeps_its_info(folder, tmp_path):
    """The evaluator hands the model's longest input to scoring: a pair with a sentence of more
    than ``max_len - 2`` tokens is counted as too long, the rest scored; rows carry the model's
    step and validation perplexity."""
    import dataclasses

    from minilm_jax.evals.common import MinimalPairsEvaluator
    from minilm_jax.evals.hf_scorer import hugging_face_model

    pairs = write_jsonl(tmp_path / "p.jsonl", [("dog .", "dogs ."),  # 2 ids: scored
                                               ("the dogs are here .", "the dogs is here .")])
    model = dataclasses.replace(hugging_face_model(folder), max_len=6)  # 4 ids at most
    evaluator = MinimalPairsEvaluator.from_config("mine", {"suite": str(pairs), "rules": "pll"})
    (row,) = evaluator.rows(model)
    assert (row["pairs"], row["scored"], row["skipped_long"], row["skipped_unk"]) == (2, 1, 1, 0)
    assert (row["step"], row["validation_perplexity"], row["init"]) == (STEP, PPL, "pretrained")


# --- pair files -------------------------------------------------------------------------------


def test_zorro_lines_are_stripped_and_a_blank_line_is_refused(tmp_path):
    """Spaces around a sentence are not part of it; a line of spaces is a blank line."""
    (tmp_path / "p.txt").write_text("  the dog are here . \nthe dog is here .  \r\n")
    (paradigm,) = load_pairs(tmp_path / "p.txt")
    assert paradigm.pairs == (MinimalPair(good="the dog is here .", bad="the dog are here ."),)
    (tmp_path / "q.txt").write_text("a b\n   \nc d\ne f\n")
    with pytest.raises(UserError, match="line 2 is blank"):
        load_pairs(tmp_path / "q.txt")


def test_a_folder_skips_hidden_folders_and_readme_in_any_case(tmp_path):
    """Only the pair files are read: not a hidden folder's copies (e.g. .ipynb_checkpoints), not
    a readme.txt or License.txt whatever their case."""
    write_jsonl(tmp_path / "mine.jsonl", [("a dog .", "a dogs .")])
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_jsonl(tmp_path / ".ipynb_checkpoints" / "old.jsonl", [("x .", "y .")])
    (tmp_path / "readme.txt").write_text("how to read\nthese files\n")
    (tmp_path / "License.txt").write_text("MIT\nlicence\n")
    assert [p.name for p in load_pairs(tmp_path)] == ["mine"]


def test_blimp_phenomenon_is_the_linguistics_term_before_the_field(tmp_path):
    path = write_jsonl(tmp_path / "isl.jsonl", [("a .", "b ."), ("c .", "d .")],
                       field="syntax", linguistics_term="island_effects")
    (paradigm,) = load_pairs(path, "blimp")
    assert (paradigm.phenomenon, len(paradigm.pairs)) == ("island_effects", 2)
    (paradigm,) = load_pairs(write_jsonl(tmp_path / "f.jsonl", [("a .", "b .")], field="syntax"))
    assert paradigm.phenomenon == "syntax"


def test_a_paradigm_asked_for_twice_is_read_once(offline_zorro, tmp_path):
    """Zorro with a paradigm named twice: its 2,000 pairs once (not counted twice in pooled
    accuracy); a custom folder filtered to one paradigm keeps only that one."""
    name = "irregular-verb"
    got = suites.open_suite("zorro", paradigms=[name, name])
    assert [(p.name, len(p.pairs)) for p in got] == [(name, 2000)]
    write_jsonl(tmp_path / "a.jsonl", [("a .", "b .")])
    write_jsonl(tmp_path / "b.jsonl", [("c .", "d .")])
    assert [p.name for p in suites.open_suite(str(tmp_path), paradigms=["b", "b"])] == ["b"]


# --- tables -----------------------------------------------------------------------------------


def row(phenomenon, outcomes, unk=0, vocab=0, long=0, init="pretrained"):
    """A paradigm row as the evaluator writes it, from its per-pair outcomes (1, 0, t = tie)."""
    scored = len(outcomes)
    return {"suite": "custom", "rule": "pll", "init": init, "step": 5, "paradigm": phenomenon,
            "phenomenon": phenomenon, "pairs": scored + unk + vocab + long, "scored": scored,
            "correct": outcomes.count("1"), "ties": outcomes.count("t"), "skipped_unk": unk,
            "skipped_vocab": vocab, "skipped_long": long,
            "outcomes": outcomes.replace("t", "0") + "-" * (unk + vocab + long)}


def test_model_table_counts_scored_pairs_ties_and_each_skip_reason():
    """Per phenomenon and overall: pairs scored (not pairs read), ties, and the skipped counts in
    the order the header names them (unk / word list / too long)."""
    from minilm_jax.evals.pair_tables import model_table

    rows = [row("a", "11t0", unk=2, vocab=5, long=1), row("b", "1t", unk=3)]
    lines = model_table(rows)
    assert "skipped (unk / word list / too long)" in lines[0]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:6]]
             for line in lines[2:]}
    assert cells == {"a": ["1", "4", "1", "2 / 5 / 1"], "b": ["1", "2", "1", "3 / 0 / 0"],
                     "**overall**": ["2", "6", "2", "5 / 5 / 1"]}


def test_tie_note_counts_each_models_own_ties():
    from minilm_jax.evals.pair_tables import tie_note

    note = tie_note([row("a", "1tt0")], [row("a", "t100", init="random")])
    assert "2 pairs tied for the pre-trained model, 1 for the random init" in note
    assert tie_note([row("a", "10")], [row("a", "01", init="random")]) is None


def test_outputs_write_infinite_and_nan_values_as_null(tmp_path):
    from minilm_jax.evals.pair_tables import strict_json, write_outputs

    assert strict_json({"a": [float("inf"), -float("inf"), float("nan"), 1.5]}) == {
        "a": [None, None, None, 1.5]}
    write_outputs(tmp_path, [{**row("a", "10"), "validation_perplexity": float("inf")}], "t")
    line = json.loads((tmp_path / "minimal_pairs.jsonl").read_text())
    assert line["validation_perplexity"] is None and line["correct"] == 1


# --- our checkpoints and remote-code exports: the twin's weights ------------------------------


def params_of(model):
    """A model's parameters as a flat list of numpy arrays."""
    import jax
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def state_params(scoring):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(scoring.state[1])]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_checkpoint_twin_is_a_fresh_init_of_its_seed(tmp_path, monkeypatch):
    """A run's twin of seed s holds exactly ``MaskedLM(cfg, seed s)``'s weights (another seed,
    others), step 0; the pre-trained model the checkpoint's weights and step (the run is a
    stand-in: what ``PretrainedRun.open`` returns)."""
    from types import SimpleNamespace

    from flax import nnx

    from minilm_jax.evals import scoring_models
    from minilm_jax.model import build_mlm
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.runs import pretrained as pretrained_runs

    cfg = resolve_point("E16-H16-I32-L1-A2-V64", embed_projection=False, max_len=16)
    trained = build_mlm(cfg, seed=11)
    run = SimpleNamespace(model=trained.cfg, tokenizer_path=str(tmp_path / "tok.model"), step=9,
                          validation_perplexity=3.5, code_changes=[],
                          library_version_changes=[], check_tokenizer=lambda tok: None,
                          model_state=lambda: nnx.state(trained))
    (tmp_path / "tok.model").write_text("stand-in")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(pretrained_runs.PretrainedRun, "open", lambda workdir, which: run)
    monkeypatch.setattr(scoring_models, "load_tokenizer", lambda path: "tokenizer")
    pre = scoring_models.checkpoint_model(tmp_path)
    assert same(state_params(pre), params_of(trained))
    assert (pre.info["step"], pre.info["validation_perplexity"]) == (9, 3.5)
    for seed in (0, 4):
        twin = scoring_models.checkpoint_model(tmp_path, random_seed=seed)
        assert same(state_params(twin), params_of(build_mlm(trained.cfg, seed=seed))), seed
        assert (twin.info["init"], twin.info["step"], twin.info["validation_perplexity"]) == (
            "random", 0, None)


def test_remote_export_twin_is_a_fresh_init_and_needs_our_tokenizer_json(folder, tmp_path):
    """Our remote-code export: the pre-trained model is its weights, the twin of seed 0 a fresh
    init of seed 0 (not the export's weights); without its tokenizer.json the folder is refused
    even with a slow tokenizer's vocab.txt beside it."""
    import shutil

    from minilm_jax.evals.hf_folders import inspect_folder
    from minilm_jax.evals.hf_scorer import hugging_face_model
    from minilm_jax.interop.hf_minilm import export_model
    from minilm_jax.model import build_mlm
    from minilm_jax.model.sizes import resolve_point

    model = build_mlm(resolve_point("E8-H16-I32-L1-A2-V64", max_len=16), seed=5)
    out = export_model(model, tmp_path / "minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    pre = hugging_face_model(out)
    assert same(state_params(pre), params_of(model))
    twin = hugging_face_model(out, random_seed=0)
    assert same(state_params(twin), params_of(build_mlm(model.cfg, seed=0)))
    assert twin.info["init"] == "random" and not same(state_params(twin), params_of(model))
    (out / "tokenizer.json").rename(out / "vocab.txt")
    with pytest.raises(UserError, match="tokenizer.json is missing"):
        inspect_folder(out)
