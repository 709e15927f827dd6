"""Hugging Face interop commands.

    python -m minilm_jax.interop export --workdir=RUN --out=DIR [--which=best|latest|step:N]
    python -m minilm_jax.interop export --workdir=FT_RUN --out=DIR [--which=best|final] [--seed=S]
    python -m minilm_jax.interop demo --out=DIR [--point=E64-H64-I256-L2-A4-V1000]

``export`` writes a trained run as a Hugging Face directory with a tokenizer ``AutoTokenizer``
loads and a model card (``README.md``): a pre-training workdir as a masked LM, a finished
fine-tuning run as a sequence classifier (one seed's member). A model RoBERTa can hold becomes
``RobertaForMaskedLM`` / ``RobertaForSequenceClassification`` (a RoBERTa masked LM also serves as a
fine-tuning ``init.checkpoint``); any other (the default factorized embeddings with the E->H
projection, pre-LN, the conv front end, the weighted-sum pooler) ships its own PyTorch code, loaded
with ``trust_remote_code=True``. Where torch is installed the export is checked by its numbers
before it is written (:mod:`minilm_jax.interop.twin_check`; a mismatch is one ``error:`` line,
nothing written); the command prints what the check found. ``demo`` builds a fresh point, exports it, imports it back and
compares with ``transformers`` if installed.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from minilm_jax.cli import run_tool, status_of_user_errors, tool_parser
from minilm_jax.interop.hf_files import safetensors_numpy
from minilm_jax.model.config import ModelConfig


def _export(args: argparse.Namespace) -> int:
    from minilm_jax.interop.workdir import export_workdir

    notes: list[str] = []
    out = export_workdir(args.workdir, args.out, which=args.which, tokenizer_path=args.tokenizer,
                         overwrite=args.overwrite, seed=args.seed, notes=notes)
    print(f"exported {args.workdir} ({args.which}) to {out}: "
          f"{', '.join(sorted(p.name for p in out.iterdir()))}")
    for note in notes:  # whether the PyTorch side was checked by its logits
        print(note)
    return 0


def _demo_tokens(cfg: ModelConfig, seed: int) -> np.ndarray:
    """Two sequences ``<s> ... </s>``, the second right-padded."""
    from minilm_jax.interop.hf_roberta import BOS_ID, EOS_ID

    rng = np.random.default_rng(seed)
    t = min(cfg.max_len, 32)
    tokens = np.full((2, t), cfg.pad_id, np.int32)
    for row, n in enumerate((t, max(3, t // 2))):
        tokens[row, :n] = rng.integers(5, cfg.vocab_size, n)
        tokens[row, 0], tokens[row, n - 1] = BOS_ID, EOS_ID
    return tokens


def _demo(args: argparse.Namespace) -> int:
    # jax and flax are imported by the subcommand that builds a model: --help needs neither
    import jax.numpy as jnp

    from minilm_jax.interop.hf_import import import_roberta
    from minilm_jax.interop.hf_roberta import _flat_params, export_roberta
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(args.point, embed_projection=False, max_len=args.max_len)
    safetensors_numpy()  # the hf extra: one line naming it, before any work
    model = build_mlm(cfg, seed=args.seed)
    out = export_roberta(model, args.out, overwrite=args.overwrite)
    print(f"exported {cfg.point} (max_len={cfg.max_len}) to {out}: "
          f"{', '.join(sorted(p.name for p in out.iterdir()))}")
    back = import_roberta(out)
    a, b = _flat_params(model), _flat_params(back)
    same = a.keys() == b.keys() and all(
        np.array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value())) for k in a)
    print(f"import_roberta round trip: parameters identical = {same}")
    tokens = _demo_tokens(cfg, args.seed)
    ours = np.asarray(model.all_logits(jnp.asarray(tokens)))
    real = tokens != cfg.pad_id
    try:
        import torch
        import transformers
    except ImportError:
        print("torch/transformers not installed: skipped the comparison with transformers")
        return 0 if same else 1
    hf = transformers.RobertaForMaskedLM.from_pretrained(str(out), attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                    attention_mask=torch.from_numpy(real.astype(np.int64))).logits.numpy()
    diff = float(np.max(np.abs(ours[real] - theirs[real])))
    print(f"transformers {transformers.__version__} RobertaForMaskedLM logits vs ours at real "
          f"positions: max abs diff {diff:.3g}")
    return 0 if same and diff < 1e-4 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(prog="python -m minilm_jax.interop", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help="write a trained run as a Hugging Face directory",
        description="Write a trained run (pre-training: a masked LM; fine-tuning: a classifier, "
                    "one seed) as a Hugging Face directory: model.safetensors, config, tokenizer "
                    "files and a model card, loadable with transformers (AutoModelForMaskedLM, "
                    "pipeline('fill-mask', ...)); a run still training is read from its newest "
                    "sealed best or latest step. Where torch and transformers are installed the "
                    "folder is loaded with them before it is written and its logits compared "
                    "with ours (at the exported and at perturbed parameters): a mismatch writes "
                    "nothing.")
    export.add_argument("--workdir", required=True,
                        help="pre-training workdir or finished fine-tuning run folder")
    export.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    export.add_argument("--which", default="best",
                        help="pre-training: best | latest | step:N; fine-tuning: best (= selected) "
                             "| final")
    export.add_argument("--seed", type=int, default=None,
                        help="fine-tuning: the member trained with this seed (default: the best "
                             "validation score)")
    export.add_argument("--tokenizer", default="",
                        help="the run's tokenizer file, if it moved since training")
    export.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out (never the workdir or a folder holding it)")
    export.set_defaults(func=_export)
    demo = sub.add_parser("demo", help="build a fresh point, export it, import it back, compare")
    demo.add_argument("--point", default="E64-H64-I256-L2-A4-V1000",
                      help="model point (grammar string or name); built with embed_projection=False")
    demo.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    demo.add_argument("--max_len", type=int, default=128, help="longest input of the built model")
    demo.add_argument("--seed", type=int, default=0, help="seed of its random initialisation")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    return status_of_user_errors(lambda: args.func(args))


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
