"""Command line: ``python -m minilm_jax.corpus <command> ...`` (``--help`` on each command).

User errors (missing or empty corpus, undecodable bytes, a bad vocabulary file, a tokenizer without
its special tokens, mismatched stages) print one ``error: ...`` line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence

from minilm_jax.corpus.errors import CorpusError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _sources(values: Sequence[str]) -> list:
    from minilm_jax.corpus.sources import SourceSpec

    return [SourceSpec.parse(v) for v in values]


def _command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], None],
             summary: str, description: str) -> argparse.ArgumentParser:
    """A sub-command's parser, which runs ``func``."""
    p = sub.add_parser(name, help=summary, description=description)
    p.set_defaults(func=func)
    return p


def _add_common(p: argparse.ArgumentParser, *, workers: bool = True, decode: bool = False) -> None:
    """The options every stage shares: --overwrite, --no_progress, and --workers / --on_decode_error."""
    if decode:
        p.add_argument("--on_decode_error", choices=("skip", "fail"), default="skip",
                       help="lines with undecodable (non UTF-8) bytes: skip and count them (default) or stop")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    if workers:
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")


def _vocab_path(args: argparse.Namespace):
    from minilm_jax.corpus.vocab import obtain_aochildes_vocab

    return obtain_aochildes_vocab(args.vocab_path, cache_dir=args.cache_dir, allow_download=not args.offline)


def _add_vocab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab_path", help="vocabulary file: AO-CHILDES CSV (,word,frequency) or one word per line; "
                   "default: the AO-CHILDES vocabulary from $MINILM_JAX_VOCAB, the cache, or a verified download")
    p.add_argument("--cache_dir", help="cache folder (default $MINILM_JAX_CACHE or ~/.cache/minilm_jax)")
    p.add_argument("--offline", action="store_true", help="never download")


def cmd_vocab(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.vocab import load_word_list, write_word_list
    from minilm_jax.corpus.words import top_words

    if args.top:
        from minilm_jax.corpus.sources import iter_many

        if not args.corpus or not args.out:
            raise CorpusError("vocab --top N needs --corpus SOURCE and --out FILE")
        counts = top_words((doc for _, doc in iter_many(_sources(args.corpus))), args.top)
        if not counts:
            raise CorpusError("corpus is empty: no words found")
        path = write_word_list(args.out, counts)
        print(f"wrote the {len(counts)} most frequent words to {path}")
        return
    path = _vocab_path(args)
    words = load_word_list(path)
    print(f"{path}\t{len(words)} words")


def cmd_filter(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.constrained import FilterConfig
    from minilm_jax.corpus.filter_stage import PackConfig, format_report, run_filter

    cfg = FilterConfig(unit=args.unit, window=args.window, stride=args.stride, min_words=args.min_words)
    dedup = None if args.dedup == "auto" else args.dedup == "on"
    pack = PackConfig(pack=not args.no_pack, max_len=args.max_len, ratio=args.ratio, dedup=dedup)
    report = run_filter(_sources(args.source), _vocab_path(args), args.out, cfg=cfg, pack=pack,
                        workers=args.workers, on_decode_error=args.on_decode_error, overwrite=args.overwrite,
                        progress=not args.no_progress)
    print(format_report(report, unit=args.unit))
    print(f"wrote {args.out}")


def cmd_control(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.control import format_control_report, run_control

    report = run_control(args.constrained, args.out, match=args.match, seed=args.seed, workers=args.workers,
                         overwrite=args.overwrite, progress=not args.no_progress)
    print(format_control_report(report))
    print(f"wrote {args.out}")


def cmd_train_tokenizer(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.tokenizer_train import TrainConfig, run_train_tokenizers

    cfg = TrainConfig(character_coverage=args.character_coverage, byte_fallback=args.byte_fallback,
                      threads=args.workers)
    result = run_train_tokenizers(_sources(args.corpus), args.out, sizes=args.sizes,
                                  model_types=args.model_types.split(","), sample=args.sample, seed=args.seed,
                                  cfg=cfg, overwrite=args.overwrite, progress=not args.no_progress,
                                  on_decode_error=args.on_decode_error)
    for name, model in result["models"].items():
        print(f"{name}\t{model['file']}\tsha256 {model['sha256'][:16]}")
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}")
    if result["skipped_note"]:
        print(result["skipped_note"])
    print(f"trained {len(result['models'])} model(s) on {result['sample_texts']} sampled texts; wrote {args.out}")


def cmd_select(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.select_stage import run_select

    report = run_select(args.tokenizers, _sources(args.corpus), args.out, downstream=_sources(args.downstream),
                        sample=args.sample, seed=args.seed, morphemes=args.morphemes, tolerance=args.tolerance,
                        overwrite=args.overwrite, progress=not args.no_progress)
    print(report["table"])
    print(f"rule: {report['rule']}")
    print(f"recommended: {report['recommended']}")
    print(f"wrote {args.out}/report.md, report.json, report.png")


def cmd_shards(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.shards_build import ShardConfig, run_shards

    cfg = ShardConfig(seq_len=args.seq_len, mode=args.mode, overflow=args.overflow, valid=args.valid,
                      test=args.test, seed=args.seed)
    manifest = run_shards(_sources(args.corpus), args.tokenizer, args.out, cfg=cfg, workers=args.workers,
                          on_decode_error=args.on_decode_error, overwrite=args.overwrite,
                          progress=not args.no_progress)
    for name, entry in manifest["splits"].items():
        counts = manifest["source"]["counts"][name]
        print(f"{name:<11} {entry['num_sequences']:>9} rows {entry['num_tokens']:>11} tokens "
              f"{counts['texts']:>9} texts {counts['truncated_tokens']:>8} truncated tokens")
    skipped = manifest["source"].get("undecodable_skipped", 0)
    if skipped:
        print(f"skipped {skipped} undecodable line(s) (first at "
              f"{manifest['source']['first_undecodable']})")
    print(baselines_line(args.out))
    print(f"wrote {args.out}")


def baselines_line(shard_dir: str) -> str:
    """What a pre-trained model of these shards must beat, from their ``baselines.json``."""
    from minilm_jax.data.baselines import load_baselines

    splits = load_baselines(shard_dir)["splits"]
    split = "validation" if "validation" in splits else next(iter(splits), None)
    if split is None:
        return "no evaluation split: no unigram / bigram baselines"
    ppl = {k: math.exp(splits[split][k]) for k in ("unigram", "bigram")}
    return (f"baselines on {split} ({splits[split]['tokens']:,} maskable tokens): unigram "
            f"perplexity {ppl['unigram']:.1f}, bigram {ppl['bigram']:.1f} (baselines.json); a "
            "pre-trained model that learned more than word frequencies is below the unigram one")


def cmd_subsets(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.sources import SourceSpec
    from minilm_jax.corpus.subsets import run_subsets

    result = run_subsets(SourceSpec.parse(args.corpus), args.tokenizer, args.out, sizes=args.sizes,
                         valid=args.valid, seed=args.seed, seq_len=args.seq_len, overwrite=args.overwrite,
                         progress=not args.no_progress)
    print(f"{result['articles_in_corpus']} articles in the corpus")
    for name, splits in result["subsets"].items():
        print(name + "\t" + "\t".join(f"{s}: {e['num_sequences']} rows, {e['num_tokens']} tokens"
                                      for s, e in splits.items()))
    print(f"wrote {args.out}")


def cmd_overlap(args: argparse.Namespace) -> None:
    from minilm_jax.corpus.overlap import format_overlap, run_overlap
    from minilm_jax.corpus.text_selection import dump_json

    result = run_overlap(args.shards, args.tokenizer, _sources(args.task), splits=args.splits.split(","))
    print(format_overlap(result))
    if args.json:
        from minilm_jax.storage import atomic_write_bytes

        atomic_write_bytes(args.json, (dump_json(result) + "\n").encode())
        print(f"wrote {args.json}")


SOURCE_HELP = ("source, KIND:LOCATION[#key=value,...] with KIND in text, textfiles, jsonl, csv, tsv, aochildes, "
               "wikitext, corpus, hf, tfds (e.g. aochildes:DIR, csv:FILE#column=text, corpus:FILTER_OUTPUT, "
               "hf:text-machine-lab/constrained_language#split=train,field=TEXT)")


def cmd_fetch(args: argparse.Namespace) -> None:
    from minilm_jax.corpus import hub
    from minilm_jax.corpus.sources import SourceSpec

    for item in args.sources:
        if item.startswith("hf-file:"):
            print(f"{item}\t{hub.fetch_file(item[len('hf-file:'):], args.out)}")
            continue
        spec = SourceSpec.parse(item)
        if spec.kind != "hf":
            raise CorpusError(f"fetch takes hf:OWNER/NAME#split=... or hf-file:OWNER/NAME/PATH, "
                              f"not {item!r}")
        files = hub.files_of(spec.location, dict(spec.options))
        size = sum(f.stat().st_size for f in files)
        print(f"{item}\t{len(files)} Parquet file(s), {size / 1e6:.1f} MB, in {files[0].parent}")


def build_parser() -> argparse.ArgumentParser:
    from minilm_jax.cli import tool_parser

    parser = tool_parser(prog="python -m minilm_jax.corpus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = _command(sub, "vocab", cmd_vocab, "obtain/check the AO-CHILDES vocabulary, or make a top-N word list",
                 "Without --top: find the AO-CHILDES vocabulary (path, cache or verified "
                 "download) and print its path and size. With --top N: write the N most frequent words "
                 "of a corpus as a vocabulary CSV.")
    _add_vocab_args(p)
    p.add_argument("--top", type=int, help="make a vocabulary of the N most frequent words of --corpus")
    p.add_argument("--corpus", action="append", help=SOURCE_HELP)
    p.add_argument("--out", help="output vocabulary CSV (with --top)")

    p = _command(sub, "filter", cmd_filter, "build the constrained corpus (study A filter + packing)",
                 "Filter sources against a reduced vocabulary (110-word windows, stride 30, "
                 "no out-of-vocabulary word, >40 words; or sentences) and pack kept units into sequences.")
    p.add_argument("--source", action="append", required=True, help=SOURCE_HELP + "; repeat for several")
    p.add_argument("--out", required=True, help="output folder (sequences.jsonl, report.json, manifest.json)")
    _add_vocab_args(p)
    p.add_argument("--unit", choices=("window", "sentence"), default="window",
                   help="kept unit: word windows (study A) or sentences")
    p.add_argument("--window", type=int, default=110, help="words per window")
    p.add_argument("--stride", type=int, default=30, help="words between window starts")
    p.add_argument("--min_words", type=int, help="keep units with MORE words than this (default 40 for windows, "
                   "0 for sentences)")
    p.add_argument("--dedup", choices=("auto", "on", "off"), default="auto",
                   help="drop exact duplicate units (auto: on for windows, off for sentences)")
    p.add_argument("--no_pack", action="store_true", help="write kept units as they are, unpacked")
    p.add_argument("--max_len", type=int, default=128, help="packing: words x ratio must stay below this")
    p.add_argument("--ratio", type=float, default=1.2, help="packing: estimated tokens per word")
    _add_common(p, decode=True)

    p = _command(sub, "control", cmd_control, "sample the unconstrained control matching a constrained corpus",
                 "Sample windows from the sources of a filter output, without the vocabulary "
                 "check, to match it per source in units or words; pack them the same way.")
    p.add_argument("--constrained", required=True, help="output folder of `filter`")
    p.add_argument("--out", required=True, help="output folder (as `filter` writes)")
    p.add_argument("--match", choices=("units", "words"), default="units",
                   help="match the constrained corpus per source in units or in words")
    p.add_argument("--seed", type=int, default=0, help="seed of the window sample")
    _add_common(p)

    p = _command(sub, "train-tokenizer", cmd_train_tokenizer,
                 "train SentencePiece BPE/unigram models for a grid of sizes",
                 "Train SentencePiece models (<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4) on a "
                 "seeded sample of a corpus, one per model type and vocabulary size.")
    p.add_argument("--corpus", action="append", required=True, help=SOURCE_HELP)
    p.add_argument("--out", required=True, help="output folder (one model per type and size)")
    p.add_argument("--sizes", type=_ints, required=True, help="vocabulary sizes, e.g. 8000,19000,32000")
    p.add_argument("--model_types", default="bpe", help="comma-separated: bpe, unigram (SentencePiece), wordpiece (BERT, uncased; default bpe)")
    p.add_argument("--sample", type=int, default=100_000, help="texts sampled for training")
    p.add_argument("--seed", type=int, default=0, help="seed of the training sample")
    p.add_argument("--character_coverage", type=float, default=0.9995,
                   help="SentencePiece: share of characters the vocabulary must cover")
    p.add_argument("--byte_fallback", action="store_true", help="byte pieces instead of <unk> for rare characters")
    _add_common(p, decode=True)

    p = _command(sub, "select-tokenizer", cmd_select,
                 "compare tokenizers (split ratio, ESMS, unk rate); recommend a size",
                 "Measure each tokenizer on a seeded corpus sample and downstream texts; "
                 "write report.md, report.json and report.png.")
    p.add_argument("--tokenizers", nargs="+", required=True, help="train-tokenizer output folders or model files")
    p.add_argument("--corpus", action="append", required=True, help=SOURCE_HELP)
    p.add_argument("--downstream", action="append", default=[], help="downstream texts for the unk rate (" +
                   SOURCE_HELP + ")")
    p.add_argument("--out", required=True, help="output folder (report.md, report.json, report.png)")
    p.add_argument("--sample", type=int, default=10_000, help="sampled sequences (paper: 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus sample")
    p.add_argument("--morphemes", help="reference segmentations word<TAB>m1 m2 ... (default: the project's list)")
    p.add_argument("--tolerance", type=float, default=0.05, help="split-ratio tolerance of the recommendation rule")
    _add_common(p, workers=False)

    p = _command(sub, "shards", cmd_shards, "tokenize a corpus into train/validation/test token shards",
                 "Tokenize texts into seq_len-token rows (<s> ... </s>, padded or packed) "
                 "and write the engine's shard format.")
    p.add_argument("--corpus", action="append", required=True, help=SOURCE_HELP)
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model or WordPiece vocab.txt")
    p.add_argument("--out", required=True, help="output shard folder (train, validation, test)")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per row, <s> and </s> included")
    p.add_argument("--mode", choices=("padded", "packed"), default="padded",
                   help="one text per row (padded) or texts packed end to end")
    p.add_argument("--overflow", choices=("truncate", "split"), default="truncate",
                   help="padded mode: cut a long text or continue it in further rows")
    p.add_argument("--valid", type=float, default=0.01, help="validation texts: a fraction (<1) or a count")
    p.add_argument("--test", type=float, default=0.01, help="test texts: a fraction (<1) or a count")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the row order")
    _add_common(p, decode=True)

    p = _command(sub, "subsets", cmd_subsets,
                 "study B: first-128-token shards of the first N articles of a shuffled corpus",
                 "One shard folder per N: the first seq_len tokens of each of the first N "
                 "articles of a seeded shuffle (nested subsets, shared validation split).")
    p.add_argument("--corpus", required=True, help=SOURCE_HELP + " (one document per article)")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model or WordPiece vocab.txt")
    p.add_argument("--out", required=True, help="output folder (one shard folder per size)")
    p.add_argument("--sizes", type=_ints, required=True, help="subset sizes, e.g. 20000,40000,90000")
    p.add_argument("--valid", type=int, default=0, help="validation articles (held out from every subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the article shuffle")
    p.add_argument("--seq_len", type=int, default=128, help="tokens kept per article")
    _add_common(p, workers=False)

    p = _command(sub, "fetch", cmd_fetch, "download Hugging Face datasets and files into the cache",
                 "Download (or find in the cache) the Parquet files of hf:OWNER/NAME#split=S[,revision=R] "
                 "dataset sources and hf-file:OWNER/NAME/PATH model-repository files (e.g. "
                 "hf-file:google-bert/bert-base-uncased/vocab.txt); every stage then reads hf: sources "
                 "from the cache, offline. $MINILM_HF_MIRROR (or #mirror=DIR) reads a local copy laid "
                 "out like the hub instead.")
    p.add_argument("sources", nargs="+", help="hf:OWNER/NAME#split=...,field=... or hf-file:OWNER/NAME/PATH")
    p.add_argument("--out", help="hf-file: also place the file in this folder")

    p = _command(sub, "overlap", cmd_overlap, "token overlap between pre-training shards and task texts",
                 "Type-level and occurrence-level share of task tokens whose type occurs in the "
                 "pre-training shards (special tokens excluded).")
    p.add_argument("--shards", required=True, help="shard folder")
    p.add_argument("--tokenizer", required=True, help="the tokenizer the shards were built with")
    p.add_argument("--task", action="append", required=True, help="task texts: " + SOURCE_HELP)
    p.add_argument("--splits", default="train", help="shard splits to count (comma-separated)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from minilm_jax.cli import status_of_user_errors

    args = build_parser().parse_args(argv)
    return status_of_user_errors(lambda: args.func(args))


def entry() -> None:
    from minilm_jax.cli import run_tool

    run_tool(main)


if __name__ == "__main__":
    entry()
