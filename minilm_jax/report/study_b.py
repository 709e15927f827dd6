r"""Study B's report from a finished ``study_b`` sweep: gaps with intervals, gap vs subset size and vs
token overlap, soft committees vs K against the 6-layer model, each per pre-training run
(fine-tuning seeds as the unit) and over pre-training seeds (the unit of replication), and latency
of the trained models.

    python -m minilm_jax.report.study_b --config=configs/sweep.py:study_b --root=DIR \
        --config.data_root=DATA --config.finetune_data_dir=SHARED [--out=DIR/study_b]

Writes ``report.md``, ``study_b.json`` and ``gaps.png`` / ``committee.png`` (the analyses are in
``minilm_jax.analysis.study_b`` and ``minilm_jax.analysis.study_b_seeds``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main
from minilm_jax.report.study_b_markdown import jsonable, markdown, plots
from minilm_jax.storage import atomic_write_json
from minilm_jax.sweep.layout import SweepLayout

_CONFIG = config_flags.DEFINE_config_file("config", None, "the study B sweep: sweep:study_b (an installed recipe) or a file")
_ROOT = flags.DEFINE_string("root", None, "the sweep's --root")
_OUT = flags.DEFINE_string("out", "", "report folder (default ROOT/study_b)")
_REPEATS = flags.DEFINE_integer("latency_repeats", 30, "timed calls per latency row and batch size")
LATENCY_BATCHES = (1, 32)


def latency(design, num_labels: int, repeats: int) -> dict[str, Any]:
    """Trained 1-layer member, 6-layer model and committees of all members, same device and batch."""
    from minilm_jax import latency as lat

    seq_len = int(design.runs[design.members[0]].config.model.max_len)
    deep = design.deep[min(design.deep)]
    pre = {name: str(design.layout.pretrain_dir(name)) for name in design.members + [deep]}
    members = [lat.trained_member(pre[m], num_labels, seq_len, seed=i)
               for i, m in enumerate(design.members)]
    runners = [lat.single_runner("single", members[0]),
               lat.single_runner("deep", lat.trained_member(pre[deep], num_labels, seq_len)),
               lat.fused_runner(members, "prob"), lat.sequential_runner(members, "prob")]
    rows = lat.time_runners(runners, LATENCY_BATCHES, seq_len=seq_len, repeats=repeats,
                            warmup=3, num_labels=num_labels)
    return {"environment": lat.environment(), "seq_len": seq_len, "rows": rows,
            "weights": f"pre-trained encoders of the sweep's runs (6-layer: {deep}), 4-label heads"}


def build(sweep, root: Path, out: Path, repeats: int) -> dict[str, Any]:
    from minilm_jax.analysis import study_b as sb
    from minilm_jax.analysis import study_b_seeds as sbs

    design = sb.Design.of(sweep, root)
    pretraining = sb.pretraining_rows(design)
    gaps = sb.gap_rows(design)
    size = sb.size_trend(design, gaps)
    overlap = sb.overlap_rows(design, gaps)
    committees = {task: {m: sb.committee(design, task, m) for m in ("prob", "logit")}
                  for task in sweep.finetune_tasks}
    seeds = {"gaps": sbs.gaps_over_seeds(gaps), "size": sbs.size_over_seeds(gaps),
             "overlap": sbs.overlap_over_seeds(gaps, overlap),
             "committees": {task: {m: sbs.committee_over_seeds(c) for m, c in by.items()}
                            for task, by in committees.items()}}
    timing = latency(design, 4, repeats)
    result = {"pretraining": pretraining, "gaps": gaps, "size": size, "overlap": overlap,
              "committees": committees, "seeds": seeds, "latency": timing,
              "members": design.members, "deep": design.deep, "subsets": design.subsets}
    out.mkdir(parents=True, exist_ok=True)
    plots(result, out)
    (out / "report.md").write_text(markdown(result, sweep))
    atomic_write_json(out / "study_b.json", jsonable(result))
    return result


def main(argv: list[str]) -> None:
    del argv
    from minilm_jax.errors import UserError

    if _CONFIG.value is None or not _ROOT.value:
        raise UserError("--config=configs/sweep.py:<study_b sweep> and --root=DIR are required")
    if "://" in _ROOT.value or "://" in (_OUT.value or ""):
        raise UserError(f"study B's report reads and writes local folders (--root={_ROOT.value}); "
                        "copy the sweep root first, e.g. gcloud storage rsync --recursive "
                        f"{_ROOT.value} study_b_root, and pass --root=study_b_root")
    root = Path(_ROOT.value)
    out = Path(_OUT.value) if _OUT.value else SweepLayout(root).study_b_report_dir
    build(_CONFIG.value, root, out, _REPEATS.value)
    print(f"wrote {out / 'report.md'}")


def _entry() -> None:
    run_main(main, recipe="sweep:study_b")


if __name__ == "__main__":
    _entry()
