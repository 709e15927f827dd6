r"""Study B's report from a finished ``study_b`` sweep: gaps with intervals, gap vs subset size and vs
token overlap, soft committees vs K against the 6-layer model, and latency of the trained models.

    python -m minilm_jax.report.study_b --config=configs/sweep.py:study_b --root=DIR \
        --config.data_root=DATA --config.finetune_data_dir=SHARED [--out=DIR/study_b]

Writes ``report.md``, ``study_b.json`` and ``gaps.png`` / ``committee.png`` (the analyses are in
``minilm_jax.analysis.study_b``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from minilm_jax.cli import run_main
from minilm_jax.report import fmt
from minilm_jax.storage import atomic_write_json
from minilm_jax.sweep.layout import SweepLayout

_CONFIG = config_flags.DEFINE_config_file("config", None, "the study B sweep: sweep:study_b (an installed recipe) or a file")
_ROOT = flags.DEFINE_string("root", None, "the sweep's --root")
_OUT = flags.DEFINE_string("out", "", "report folder (default ROOT/study_b)")
_REPEATS = flags.DEFINE_integer("latency_repeats", 30, "timed calls per latency row and batch size")
LATENCY_BATCHES = (1, 32)


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:.1f} [{d['low']:.1f}, {d['high']:.1f}] (sd {d['sd']:.1f}, n={d['n']})"


def _pearson(r) -> str:
    if r.undefined:
        return f"undefined ({r.undefined})"
    return (f"r = {r.r:+.2f} [{r.low:+.2f}, {r.high:+.2f}], n = {r.n}, p = {r.p_parametric:.3g} "
            f"(permutation p = {r.p_permutation:.3g})")


def latency(design, num_labels: int, repeats: int) -> dict[str, Any]:
    """Trained 1-layer member, 6-layer model and committees of all members, same device and batch."""
    from minilm_jax import latency as lat

    seq_len = int(design.runs["l1"].config.model.max_len)
    pre = {name: str(design.layout.pretrain_dir(name)) for name in design.members + ["l6"]}
    members = [lat.trained_member(pre[m], num_labels, seq_len, seed=i)
               for i, m in enumerate(design.members)]
    runners = [lat.single_runner("single", members[0]),
               lat.single_runner("deep", lat.trained_member(pre["l6"], num_labels, seq_len)),
               lat.fused_runner(members, "prob"), lat.sequential_runner(members, "prob")]
    rows = lat.time_runners(runners, LATENCY_BATCHES, seq_len=seq_len, repeats=repeats,
                            warmup=3, num_labels=num_labels)
    return {"environment": lat.environment(), "seq_len": seq_len, "rows": rows,
            "weights": "pre-trained encoders of the sweep's runs, 4-label heads"}


def build(sweep, root: Path, out: Path, repeats: int) -> dict[str, Any]:
    from minilm_jax.analysis import study_b as sb

    design = sb.Design.of(sweep, root)
    pretraining = sb.pretraining_rows(design)
    gaps = sb.gap_rows(design)
    size = sb.size_trend(design, gaps)
    overlap = sb.overlap_rows(design, gaps)
    overlap_r = sb.overlap_trend(overlap)
    committees = {task: {m: sb.committee(design, task, m) for m in ("prob", "logit")}
                  for task in sweep.finetune_tasks}
    timing = latency(design, 4, repeats)
    result = {"pretraining": pretraining, "gaps": gaps, "size": size, "overlap": overlap, "overlap_r": overlap_r,
              "committees": committees, "latency": timing, "members": design.members,
              "subsets": design.subsets}
    out.mkdir(parents=True, exist_ok=True)
    _plots(result, out)
    (out / "report.md").write_text(markdown(result, sweep))
    atomic_write_json(out / "study_b.json", _jsonable(result))
    return result


def _jsonable(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def markdown(result: dict[str, Any], sweep) -> str:
    lines = [f"# Study B ({sweep.name})", "",
             "Scores: test accuracy (%) of each fine-tuning seed's epoch selected on validation; "
             "intervals are 95% t intervals, gaps paired by fine-tuning seed.", "",
             "## Pre-training", "",
             "| run | point | subset | seed | updates | validation ppl | unigram ppl | bigram ppl |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['point']} | {r['subset']} | {r['seed']} | {r['steps']} | "
              f"{r['perplexity']:.1f} | {r['unigram']:.1f} | {r['bigram']:.1f} |"
              for r in result["pretraining"]]
    lines += ["", "## 1. Pre-trained vs random init", "",
             "| task | model | subset | pre-trained | random | majority | pre-trained - random |",
             "| --- | --- | ---: | --- | --- | ---: | --- |"]
    for r in result["gaps"]:
        g = r["gap"]
        lines.append(f"| {r['task']} | {r['model']} | {r['subset']} | {r['pretrained'].text(1)} | "
                     f"{r['random'].text(1)} | {fmt.num(r['majority'], 1)} | {g.text(1)} |")
    size = result["size"]
    lines += ["", f"## 2. Gap vs pre-training subset size ({size['smallest']} -> {size['largest']} "
              "paragraphs, 1-layer models)", "",
              "| task | pre-trained, largest - smallest subset [95% CI] |", "| --- | --- |"]
    lines += [f"| {task} | {gap.text(1)} |" for task, gap in size["per_task"].items()]
    lines += ["", f"Gap vs log10(subset size) over all (task, subset) points: "
              f"{_pearson(size['pearson'])}.", "",
              "## 3. Gap vs token overlap (1-layer models)", "",
              "Overlap: the share of the task's token occurrences (train, validation and test texts "
              "as sampled) whose token occurs in the subset's pre-training text (occurrence share), "
              "and the share of the task's token types that do (type share).", "",
              "| task | subset | occurrence share | type share | gap |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {p['task']} | {p['subset']} | {p['occurrence_share']:.3f} | {p['type_share']:.3f} | "
              f"{p['gap']:+.1f} |" for p in result["overlap"]]
    lines += ["", f"Occurrence share: {_pearson(result['overlap_r']['occurrence_share'])}.",
              f"Type share: {_pearson(result['overlap_r']['type_share'])}.",
              "Within a task overlap rises with subset size, so (2) and (3) are not separable here.",
              "", f"## 4. Soft committee of {len(result['members'])} independently pre-trained "
              "1-layer members vs the 6-layer model", ""]
    for task, by_method in result["committees"].items():
        for method, c in by_method.items():
            ks = " · ".join(f"K={k}: {_ci(v)} over {v['member_subsets']} member subset(s), "
                            f"sd {v['sd_over_subsets']:.1f} between them" for k, v in c["by_k"].items())
            lines.append(f"- **{task}**, {method} averaging: {ks}; 6-layer: {_ci(c['deep'])}; "
                         f"K={max(c['by_k'])} minus 6-layer: {c['largest_minus_deep'].text(1)}; "
                         f"one member minus 6-layer: {c['single_minus_deep'].text(1)}")
    t = result["latency"]
    env = t["environment"]
    lines += ["", f"## Latency ({env['device']}, jax {env['jax']}, seq {t['seq_len']}, "
              f"{t['weights']})", "", "| row | batch | median ms | p90 ms | params | vs 6-layer |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['name']} ({r['description']}) | {r['batch']} | {r['median_ms']:.2f} | "
              f"{r['p90_ms']:.2f} | {r['params']:,} | {r.get('vs_deep', float('nan')):.2f} |"
              for r in t["rows"]]
    return "\n".join(lines) + "\n"


def _plots(result: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    shallow = [r for r in result["gaps"] if r["model"] == "l1"]
    for task in sorted({r["task"] for r in shallow}):
        rows = sorted((r for r in shallow if r["task"] == task), key=lambda r: r["subset"])
        axes[0].errorbar([r["subset"] for r in rows], [r["gap"].mean for r in rows],
                         yerr=[[r["gap"].mean - r["gap"].low for r in rows],
                               [r["gap"].high - r["gap"].mean for r in rows]],
                         marker="o", capsize=3, label=task)
        pts = [p for p in result["overlap"] if p["task"] == task]
        axes[1].plot([p["occurrence_share"] for p in pts], [p["gap"] for p in pts], "o-", label=task)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("pre-training subset (paragraphs)")
    axes[0].set_ylabel("pre-trained - random (points)")
    axes[1].set_xlabel("token overlap (occurrence share)")
    for ax in axes:
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "gaps.png", dpi=110)
    plt.close(fig)
    tasks = list(result["committees"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        c = result["committees"][task]["prob"]
        ks = sorted(c["by_k"])
        ax.errorbar(ks, [c["by_k"][k]["mean"] for k in ks],
                    yerr=[c["by_k"][k]["mean"] - c["by_k"][k]["low"] for k in ks], marker="o",
                    capsize=3, label="committee")
        ax.axhline(c["deep"]["mean"], color="gray", linestyle="--", label="6-layer")
        ax.set_title(task)
        ax.set_xlabel("members K")
        ax.set_xticks(ks)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "committee.png", dpi=110)
    plt.close(fig)


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
