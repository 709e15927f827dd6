"""Zero-shot minimal-pair accuracy (Zorro, BLiMP or your own pairs) of a pre-training run's
checkpoint or a Hugging Face masked LM, read pair by pair against its random-init twin (same
architecture, untrained).

  python -m minilm_jax.evals --workdir runs/tiny --suite zorro --rules holistic,pll
  python -m minilm_jax.evals --workdir runs/tiny --suite my_pairs.jsonl --which step:1000
  python -m minilm_jax.evals --workdir exported_hf_folder --suite blimp

Writes ``minimal_pairs.jsonl`` (a row per model, rule and paradigm: accuracy, its 95% Wilson
interval, pairs scored and skipped) and ``minimal_pairs.md`` (per phenomenon and overall, the
paired pre-trained minus random difference with McNemar's p) to ``--out`` (default:
``<workdir>/minimal_pairs/<suite>``). Chance is 50%."""

from __future__ import annotations

import time
from pathlib import Path

from minilm_jax.cli import run_tool, tool_parser


def main(argv: list[str] | None = None) -> int:
    from .scoring import RULES
    from .suites import SUITES

    parser = tool_parser(prog="python -m minilm_jax.evals", description=__doc__)
    parser.add_argument("--workdir", required=True,
                        help="a pre-training run's folder, or a local Hugging Face masked-LM "
                             "folder (scored with transformers and its own tokenizer)")
    parser.add_argument("--which", default="best",
                        help="its checkpoint: best, latest or step:N (default: %(default)s)")
    parser.add_argument("--suite", default="zorro",
                        help=f"{' or '.join(SUITES)} (downloaded at a pinned commit and cached; "
                             "$MINILM_PAIRS_MIRROR reads a local copy) or a path to your own "
                             "pairs: Zorro .txt or BLiMP .jsonl files (default: %(default)s)")
    parser.add_argument("--paradigms", default="",
                        help="comma-separated paradigm names to keep (default: all)")
    parser.add_argument("--rules", default="holistic,pll",
                        help=f"scoring rules, comma-separated, of {', '.join(RULES)} "
                             "(default: %(default)s)")
    parser.add_argument("--word_list", default="",
                        help="aochildes or a word-list file (as data.vocab_filter reads it): "
                             "pairs with other words are skipped and counted")
    parser.add_argument("--drop_unknown_chars", action="store_true",
                        help="remove punctuation the tokenizer can only encode as <unk> from both "
                             "sentences of every pair (e.g. a tokenizer trained on transcripts "
                             "without punctuation)")
    parser.add_argument("--random_seed", type=int, default=0,
                        help="seed of the random-init twin (default: %(default)s)")
    parser.add_argument("--no_twin", action="store_true", help="skip the random-init twin")
    parser.add_argument("--batch_rows", type=int, default=256,
                        help="rows (masked copies) per device batch (default: %(default)s)")
    parser.add_argument("--out", default="", help="output folder (default: "
                                                  "<workdir>/minimal_pairs/<suite name>)")
    args = parser.parse_args(argv)
    # what scores (jax, flax) is imported once the flags are read: --help and a bad flag need none
    from minilm_jax.runs.running import refuse_population

    from .common import MinimalPairsEvaluator
    from .pair_tables import write_outputs
    from .scoring_models import scoring_model

    refuse_population(args.workdir, action="score")  # a population's folder: one line, its members
    suite_name = args.suite if args.suite in SUITES else Path(args.suite).stem
    evaluator = MinimalPairsEvaluator.from_config(suite_name, {
        "suite": args.suite, "rules": args.rules, "paradigms": args.paradigms,
        "word_list": args.word_list, "batch_rows": args.batch_rows,
        "drop_unknown_chars": args.drop_unknown_chars})
    first = scoring_model(args.workdir, args.which)  # a bad --workdir fails before any download
    evaluator.check()
    rows, info = [], None
    for seed in ([None] if args.no_twin else [None, args.random_seed]):
        model = first if seed is None else scoring_model(args.workdir, args.which, seed)
        info = info or model.info
        start = time.perf_counter()
        scored = evaluator.rows(model)
        seconds = time.perf_counter() - start
        pairs = sum(r["pairs"] for r in scored)
        print(f"{model.info['init']}: {pairs:,} pair scorings in {seconds:.1f} s "
              f"({pairs / max(seconds, 1e-9):,.0f} pairs/s)", flush=True)
        rows += [{**r, "run": str(args.workdir)} for r in scored]
    out = Path(args.out) if args.out else Path(args.workdir) / "minimal_pairs" / suite_name
    path = write_outputs(out, rows, f"Minimal pairs: {suite_name}, {info['point']} at step "
                                    f"{info['step']} ({args.workdir})")
    print(path.read_text())
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
