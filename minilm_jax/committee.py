"""Soft committees from fine-tuned runs: accuracy as a function of the number of members K.

    python -m minilm_jax.committee RUN_DIR [RUN_DIR ...] --out=DIR [--split=SPLIT]
        [--combine=prob|logit] [--which=final|selected] [--reference=RUN_DIR]

Members are every seed of every run (runs may differ in architecture, e.g. the BERT-1 variants);
their saved evaluation logits (``predictions/<split>.<which>.npy``) are combined by averaging
softmax probabilities (or logits). ``--reference`` (e.g. the 6-layer model) is drawn as a line.
Writes ``committee.json``, ``committee.md`` and ``committee.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.errors import UserError
from minilm_jax.runs.running import refuse_population
from minilm_jax.train.records import SUMMARY, is_done, read_finetune_summary
from minilm_jax.storage import atomic_write_bytes, atomic_write_json
from minilm_jax.tasks.committee_math import accuracy_vs_k


class CommitteeError(UserError, ValueError):
    """Runs that cannot form a committee (missing predictions, different examples)."""


def check_member_run(run: str) -> None:
    """One line unless ``run`` is a fine-tuning run that finished: a pre-training run (or a
    population's folder) holds no predictions, and a run still training has not written them all."""
    refuse_population(run, action="fine-tune")
    try:
        flat = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        flat = {}
    if isinstance(flat, dict) and "task" not in flat and any(k.startswith("model.") for k in flat):
        raise CommitteeError(f"{run} is a pre-training run: a committee combines fine-tuning runs "
                             "(fine-tune from it, then pass the fine-tuning run folders)")
    summary_path = Path(run) / SUMMARY
    if flat and not summary_path.is_file():
        raise CommitteeError(f"{run} has no {SUMMARY}: it is still training (or was stopped); a "
                             "committee reads finished fine-tuning runs: finish it first")
    if summary_path.is_file() and not is_done(run):
        status = read_finetune_summary(run).status
        raise CommitteeError(f"{run} has status {status!r}: not a finished fine-tuning run; "
                             "finish it (run its command again), then form the committee")


def reported_split(runs: list[str]) -> str:
    """The split the runs report (the first of their ``reported_splits``; they must agree)."""
    splits = set()
    for run in runs:
        check_member_run(run)
        reported = read_finetune_summary(run).reported_splits or []
        if not reported:
            raise CommitteeError(f"{run} reports no split: pass --split")
        splits.add(reported[0])
    if len(splits) > 1:
        raise CommitteeError(f"the runs report different splits ({', '.join(sorted(splits))}): "
                             "pass --split")
    return splits.pop()


def load_members(runs: list[str], split: str, which: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stacked member logits ``[K, N, C]``, labels ``[N]`` and a name per member (finished
    fine-tuning runs only: :func:`check_member_run`)."""
    logits, names, labels = [], [], None
    for run in runs:
        check_member_run(run)
        pred_dir = Path(run) / "predictions"
        path = pred_dir / f"{split}.{which}.npy"
        if not path.is_file():
            have = sorted(p.name.split(".")[0] for p in pred_dir.glob(f"*.{which}.npy"))
            raise CommitteeError(f"{run}: no logits of split '{split}' ({path.name}); it has "
                                 f"{', '.join(have) or 'none'}: pass --split="
                                 f"{have[0] if have else '...'}")
        run_logits = np.load(path)  # [S, N, C]
        run_labels = np.load(pred_dir / f"{split}.labels.npy")
        if labels is None:
            labels = run_labels
        elif run_labels.shape != labels.shape or not np.array_equal(run_labels, labels):
            raise CommitteeError(f"{run}: its {split} examples differ from {runs[0]}'s; members must "
                                 "be evaluated on the same examples")
        if logits and run_logits.shape[2] != logits[0].shape[-1]:
            raise CommitteeError(f"{run}: {run_logits.shape[2]} classes, others have "
                                 f"{logits[0].shape[-1]}")
        summary = read_finetune_summary(run)
        for s, seed in enumerate(summary.seeds):
            logits.append(run_logits[s])
            names.append(f"{summary.point}#seed{seed} ({run})")
    return np.stack(logits), labels, names


def reference_accuracy(run: str, split: str, which: str) -> float:
    """Mean accuracy over the seeds of a reference run."""
    logits, labels, _ = load_members([run], split, which)
    return float(np.mean(logits.argmax(-1) == labels[None]))


def write_committee(runs: list[str], out: str | Path, split: str = "test", method: str = "prob",
                    which: str = "final", reference: str = "") -> dict[str, Any]:
    """Compute accuracy vs K and write JSON, Markdown and a plot to ``out``."""
    logits, labels, names = load_members(runs, split, which)
    points = accuracy_vs_k(logits, labels, method=method)
    ref = reference_accuracy(reference, split, which) if reference else None
    result = {"split": split, "combine": method, "which": which, "members": names,
              "points": [p.__dict__ for p in points], "reference": reference or None,
              "reference_accuracy": ref}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Soft committee ({method} averaging, {split} split, {len(names)} members)", "",
             "| K | accuracy | std over subsets | subsets |", "| --- | --- | --- | --- |"]
    lines += [f"| {p.k} | {100 * p.accuracy:.2f} | {100 * p.std:.2f} | {p.n_subsets} |" for p in points]
    if ref is not None:
        lines += ["", f"Reference `{reference}`: {100 * ref:.2f}"]
    lines += ["", "Members:", *[f"- {n}" for n in names]]
    atomic_write_bytes(out / "committee.md", "\n".join(lines).encode())
    atomic_write_json(out / "committee.json", result)
    _plot(points, ref, out / "committee.png")
    return result


def _plot(points, ref: float | None, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [p.k for p in points]
    ax.errorbar(ks, [100 * p.accuracy for p in points], yerr=[100 * p.std for p in points],
                marker="o", capsize=3, label="committee")
    if ref is not None:
        ax.axhline(100 * ref, color="gray", linestyle="--", label="reference")
    ax.set_xlabel("members K")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(ks)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.committee", description=__doc__)
    parser.add_argument("runs", nargs="+", help="fine-tuning run folders (each seed a member)")
    parser.add_argument("--out", required=True, help="output folder (committee.json, .md, .png)")
    parser.add_argument("--split", default="", help="evaluation split whose saved logits are "
                        "combined (default: the runs' reported split, e.g. test, or holdout for "
                        "your own labelled file)")
    parser.add_argument("--combine", default="prob", choices=("prob", "logit"),
                        help="average softmax probabilities or logits")
    parser.add_argument("--which", default="final", choices=("final", "selected"),
                        help="each seed's final or validation-selected parameters' logits")
    parser.add_argument("--reference", default="",
                        help="a run drawn as a reference line (e.g. the 6-layer model)")
    args = parser.parse_args(argv)
    try:
        split = args.split or reported_split(args.runs)
        write_committee(args.runs, args.out, split, args.combine, args.which, args.reference)
    except KeyError as err:  # a record without a field the committee needs
        raise UserError(f"committee: run record lacks {err}") from err
    print((Path(args.out) / "committee.md").read_text())
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
