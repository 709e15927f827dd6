"""Minimal-pair scoring throughput: pairs/s of each rule on a whole suite.

    python -m minilm_jax.evals.bench --suite zorro --point paper-1.25m
    python -m minilm_jax.evals.bench --suite path/to/pairs --workdir runs/tiny --batch_rows 512

Without ``--workdir`` the model is ``--point`` freshly initialised and the tokenizer a BPE model
of ``--vocab`` pieces trained on the suite's own sentences (scoring speed depends on the shape and
the number of tokens per sentence, not on the weights). Each rule is timed twice: the first pass
includes compiling one program per length bucket, the second is warm. Prints sentences, model rows
(masked copies for PLL rules), seconds and pairs/s per pass.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.errors import UserError

from .minimal_pairs import score_paradigms
from .scoring import RULES, encode_sentence, masked_rows
from .suites import open_suite


def _random_scorer(point: str, sentences: list[str], vocab: int, seed: int):
    import jax
    from flax import nnx

    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.model.models import MaskedLM
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.tokenizer import load_tokenizer

    from .scoring import mlm_target_logprobs

    path = Path(tempfile.mkdtemp(prefix="pairs-bench-")) / "suite-bpe.model"
    path.write_bytes(train_sentencepiece(sentences, vocab, "bpe"))
    tokenizer = load_tokenizer(path)
    cfg = resolve_point(point, max_len=128)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(f"--vocab {vocab} exceeds {point}'s vocabulary ({cfg.vocab_size})")
    model = MaskedLM(cfg, rngs=nnx.Rngs(params=seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.device_put((params, rest))
    return tokenizer, mlm_target_logprobs(graphdef, params, rest), point


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.evals.bench", description=__doc__)
    parser.add_argument("--suite", default="zorro", help="zorro, blimp or a path to pair files")
    parser.add_argument("--workdir", default="", help="score this pre-training run's checkpoint")
    parser.add_argument("--which", default="latest", help="its checkpoint (default: %(default)s)")
    parser.add_argument("--point", default="paper-1.25m",
                        help="without --workdir: the model shape (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=8000,
                        help="without --workdir: BPE pieces (default: %(default)s)")
    parser.add_argument("--paradigms", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated scoring rules")
    parser.add_argument("--batch_rows", type=int, default=256, help="model rows per batch")
    args = parser.parse_args(argv)
    import jax

    paradigms = open_suite(args.suite, paradigms=[p for p in args.paradigms.split(",") if p])
    sentences = sorted({s for p in paradigms for pair in p.pairs for s in (pair.good, pair.bad)})
    pairs = sum(len(p.pairs) for p in paradigms)
    if args.workdir:
        from .scoring_models import scoring_model

        model = scoring_model(args.workdir, args.which)
        tokenizer, fn = model.tokenizer, model.logprobs
        shape = f"{model.info['point']} (step {model.info['step']})"
    else:
        tokenizer, fn, shape = _random_scorer(args.point, sentences, args.vocab, 0)
    encoded = [encode_sentence(tokenizer, s) for s in sentences]
    tokens = sum(len(e.ids) for e in encoded)
    print(f"suite {args.suite}: {len(paradigms)} paradigms, {pairs:,} pairs, {len(sentences):,} "
          f"distinct sentences, {tokens / len(sentences):.1f} tokens per sentence; model "
          f"{shape}; {jax.devices()[0].platform} x {jax.device_count()}; batch_rows "
          f"{args.batch_rows}")
    print(f"{'rule':<14} {'pass':<5} {'model rows':>11} {'seconds':>9} {'pairs/s':>10}")
    for rule in [r.strip() for r in args.rules.split(",") if r.strip()]:
        rows = len(encoded) if rule == "holistic" else sum(len(masked_rows(e, rule))
                                                           for e in encoded)
        for label in ("cold", "warm"):
            start = time.perf_counter()
            results = score_paradigms(paradigms, tokenizer, fn, rule, batch_rows=args.batch_rows)
            seconds = time.perf_counter() - start
            scored = sum(r.scored for r in results)
            print(f"{rule:<14} {label:<5} {rows:>11,} {seconds:>9.1f} {scored / seconds:>10,.0f}")
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
