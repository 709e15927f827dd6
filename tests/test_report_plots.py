"""The report's figures carry what a reader needs without the tables: intervals as error bars,
majority / chance levels, distinct reference-line styles, labels that do not overlap. Each test
inspects the matplotlib objects a ``plot_*`` function returns (no pixels)."""

import itertools
import math

import numpy as np
import pytest

from minilm_jax.analysis.stats import t_interval
from minilm_jax.analysis.zero_shot import zero_shot_analyses
from minilm_jax.evals.minimal_pairs import wilson
from minilm_jax.report.analyses import analyse
from minilm_jax.report.downstream import analyse_downstream, plot_correlation
from minilm_jax.report.options import ReportOptions
from minilm_jax.report.plots import plot_downstream, plot_loss_vs_flops
from minilm_jax.report.zero_shot import plot_zero_shot

T, V, BATCH = 128, 19010, 256


# ---------------------------------------------------------------------------------------------
# rows shaped like minilm_jax.sweep.results writes them


def _identity(run, point, seed=None):
    return {"run": run, "workdir": f"runs/sweep/runs/{run}", "point": point, "group": "base",
            "base": "small", "factor": "", "factor_value": None, "params_total": 1_000_000,
            "params_non_embedding": 100_000, "design": run, "pretrain_seed": seed}


def _flops_per_sequence(point):
    e, h, i, layers, a = (int(part[1:]) for part in point.split("-")[:5])
    forward = (2 * T * V * e + 2 * T * e * h + layers * (6 * T * h * h + 2 * T * T * h + 3 * a * T * T)
               + layers * 4 * T * h * i + 2 * T * h * V)
    return 3 * forward


def validation_rows(run, point, steps=range(1000, 9000, 1000)):
    h = int(point.split("-")[1][1:])
    per_seq = _flops_per_sequence(point)
    rows = []
    for step in steps:
        loss = 1.0 + 2.2 * (32 / h) ** 0.5 + 2.5 * (step / 1000) ** -0.5
        rows.append({**_identity(run, point), "kind": "validation", "step": step,
                     "sequences_seen": step * BATCH, "flops_paper": step * BATCH * per_seq,
                     "flops_complete": step * BATCH * per_seq * 1.3, "loss": loss,
                     "perplexity": math.exp(loss)})
    return rows


def baseline_rows():
    return [{"kind": "baseline", "name": name, "split": split, "loss": loss,
             "perplexity": math.exp(loss), "shards": "data/shards"}
            for split in ("train", "validation") for name, loss in (("unigram", 6.4), ("bigram", 5.1))]


def downstream_row(run, point, task, init, scores, majority=None, step=8000, ppl=None):
    workdir = f"runs/sweep/runs/{run}"
    ft = (f"{workdir}/finetune/{task}/pretrained@{step}" if init == "pretrained"
          else f"runs/sweep/twins/{point}/{task}")
    return {**_identity(run, point), "kind": "downstream", "task": task, "init": init,
            "score": float(np.mean(scores)), "score_std": float(np.std(scores)),
            "score_n": len(scores), "seeds": list(range(len(scores))),
            "member_scores": list(scores), "selected_score": None, "metrics": {},
            "checkpoint_step": step if init == "pretrained" else None,
            "checkpoint_fraction": 1.0 if init == "pretrained" else None,
            "final_validation_perplexity": ppl if init == "pretrained" else None,
            "majority_score": majority, "unk_rate": 0.01, "finetune_workdir": ft,
            "flops_paper": 1e15, "flops_complete": 1.3e15}


def pair_rows(run, point, init, step, correct, scored=200, ppl=None, paradigms=2):
    """``minimal_pairs`` rows of one model: ``correct`` right answers per paradigm."""
    rows = []
    for k in range(paradigms):
        outcomes = "1" * correct + "0" * (scored - correct)
        rows.append({**_identity(run, point), "kind": "minimal_pairs", "evaluation": "zorro",
                     "suite": "zorro", "paradigm": f"p{k}", "phenomenon": f"ph{k}",
                     "rule": "pll", "accuracy": 100 * correct / scored,
                     "accuracy_low": 0.0, "accuracy_high": 0.0, "pairs": scored,
                     "scored": scored, "skipped_unk": 0, "skipped_vocab": 0, "skipped_long": 0,
                     "correct": correct, "outcomes": outcomes, "init": init, "step": step,
                     "validation_perplexity": ppl})
    return rows


def _sweep_rows(hidden=(16, 32, 64, 128)):
    rows = baseline_rows()
    for h in hidden:
        rows += validation_rows(f"small-h{h}", f"E32-H{h}-I128-L2-A2-V19010")
    return rows


def _finetune_rows(runs=("small-h16", "small-h64")):
    """Three fine-tuning seeds per run; sst2 and rte know their majority class, cola (MCC) and
    qnli do not (chance: 0 and 50)."""
    rows = []
    for j, run in enumerate(runs):
        point = f"E32-H{run.split('-h')[1]}-I128-L2-A2-V19010"
        for k, (task, majority) in enumerate((("sst2", 50.9), ("rte", 52.7), ("cola", None),
                                               ("qnli", None))):
            rows.append(downstream_row(run, point, task, "pretrained",
                                       [60.0 + 5 * j + k, 63.0 + 5 * j, 61.5 + 5 * j + 2 * k],
                                       majority, ppl=300.0 - 60 * j))
            rows.append(downstream_row(run, point, task, "random", [48.0, 51.0 + k, 50.0 + j],
                                       majority))
    return rows


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def _segments(container):
    """The (x, low, high) of each drawn error bar of an ``ErrorbarContainer``."""
    _, _, barcols = container.lines
    return [(seg[0, 0], min(seg[:, 1]), max(seg[:, 1]))
            for seg in barcols[0].get_segments() if len(seg)]


def test_downstream_error_bars_are_t_intervals_over_finetuning_seeds(tmp_path):
    rows = _finetune_rows()
    fig = plot_downstream(analyse_downstream(rows).gaps, tmp_path / "downstream.png")
    assert (tmp_path / "downstream.png").stat().st_size > 0
    panels = _panels(fig)
    assert set(panels) == {"sst2", "rte", "cola", "qnli"}
    for task, ax in panels.items():
        containers = {c.get_label(): c for c in ax.containers}
        assert set(containers) == {"pre-trained", "random init"}
        for init, name in (("pretrained", "pre-trained"), ("random", "random init")):
            bars = _segments(containers[name])
            assert len(bars) == 2  # one per run
            expected = [t_interval(r["member_scores"]) for r in rows
                        if r["task"] == task and r["init"] == init]
            for (x, low, high), want in zip(sorted(bars), expected):
                assert (low, high) == pytest.approx((want["low"], want["high"]))
        assert "score ×100" in ax.get_ylabel()
    title = fig._suptitle.get_text()
    assert "mean over 3 fine-tuning seeds" in title and "95% t interval" in title


def test_downstream_draws_the_majority_class_else_chance(tmp_path):
    fig = plot_downstream(analyse_downstream(_finetune_rows()).gaps, tmp_path / "d.png")
    panels = _panels(fig)

    def level(ax, gid):
        lines = [line for line in ax.lines if line.get_gid() == gid]
        assert len(lines) == 1, (ax.get_title(), gid)
        y = np.asarray(lines[0].get_ydata(), dtype=float)
        assert np.allclose(y, y[0])  # horizontal
        return float(y[0])

    assert level(panels["sst2"], "majority") == pytest.approx(50.9)
    assert level(panels["rte"], "majority") == pytest.approx(52.7)
    assert level(panels["cola"], "chance") == 0.0  # MCC of a guess
    assert level(panels["qnli"], "chance") == 50.0  # two classes
    assert not [line for line in panels["sst2"].lines if line.get_gid() == "chance"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("majority class") for t in legend)
    assert any(t.startswith("chance") for t in legend)


def test_perplexity_labels_do_not_overlap_and_title_gives_r_with_its_interval(tmp_path):
    rows = []
    for j in range(12):  # ten crowded checkpoints between two outliers, long names
        ppl, score = ((150.0, 75.0) if j == 10 else (300.0, 60.0) if j == 11
                      else (200.0 + 0.5 * j, 70.0 + 0.05 * (j % 3)))
        run = f"checkpoint-with-a-long-name-{j}"
        for task in ("sst2", "rte"):
            rows.append(downstream_row(run, "E32-H32-I128-L2-A2-V19010", task, "pretrained",
                                       [score - 0.5, score + 0.5], 50.0, ppl=ppl))
    analysis = analyse_downstream(rows)
    fig = plot_correlation(analysis, tmp_path / "corr.png")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    names = {p.label for p in analysis.correlation.points}
    labels = [t for t in ax.texts if t.get_text() in names]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(labels) >= 4
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
               for b in boxes)
    left_out = len(names) - len(labels)
    notes = [t.get_text() for t in ax.texts if "left out" in t.get_text()]
    assert notes == ([f"{left_out} crowded label(s) left out: see the table"] if left_out else [])
    r = analysis.correlation.result
    assert f"r = {r.r:.3f} [{r.low:.3f}, {r.high:.3f}] (95% CI, n = 12)" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("Fisher-z CI" in t for t in legend)


def test_break_and_baseline_lines_have_their_own_styles(tmp_path):
    analyses = analyse(_sweep_rows(), ReportOptions(bootstrap=20))
    curve = analyses.curves["paper"]
    assert curve.comparison is not None and curve.comparison.two is not None
    fig = plot_loss_vs_flops(analyses, curve, tmp_path / "loss.png")
    ax = fig.axes[0]

    def line(prefix):
        found = [x for x in ax.lines if x.get_label().startswith(prefix)]
        assert len(found) == 1, prefix
        return found[0]

    kinds = {"break": line("break of the two-segment fit"), "unigram": line("unigram baseline"),
             "bigram": line("bigram baseline")}
    segments = [x for x in ax.lines if x.get_label().startswith("two-segment fit")]
    assert len(segments) == 2 and {s.get_linestyle() for s in segments} == {"-"}
    styles = {name: x.get_linestyle() for name, x in kinds.items()}
    assert len(set(styles.values())) == 3 and "-" not in styles.values(), styles
    colors = {name: x.get_color() for name, x in kinds.items()}
    assert len(set(colors.values())) == 3, colors
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(x.get_label() in legend for x in (*kinds.values(), *segments))
    assert ax.get_xscale() == "log" and "FLOPs" in ax.get_xlabel()
    assert "nats" in ax.get_ylabel()


def test_zero_shot_has_a_dashed_chance_line_and_wilson_error_bars(tmp_path):
    rows = []
    correct = {"small-h16": (100, 120, 140), "small-h64": (104, 130, 160)}
    for run, point in (("small-h16", "E32-H16-I128-L2-A2-V19010"),
                       ("small-h64", "E32-H64-I128-L2-A2-V19010")):
        for step, c in zip((1000, 4000, 8000), correct[run]):
            rows += pair_rows(run, point, "pretrained", step, c, ppl=300.0 - step / 100)
        rows += pair_rows(run, point, "random", 0, 97)
    (found,) = zero_shot_analyses(rows)
    fig = plot_zero_shot(found, tmp_path / "zero.png")
    ax = fig.axes[0]
    chance = [x for x in ax.lines if x.get_gid() == "chance"]
    assert len(chance) == 1 and chance[0].get_linestyle() == "--"
    assert np.allclose(chance[0].get_ydata(), 50.0)
    assert chance[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
    containers = {c.get_label(): c for c in ax.containers}
    assert set(containers) == {"small-h16", "small-h64"}
    for run, container in containers.items():
        bars = sorted(_segments(container))
        assert len(bars) == 3
        for (x, low, high), step, c in zip(bars, (1000, 4000, 8000), correct[run]):
            assert x == pytest.approx(step, rel=0.05)
            assert (low, high) == pytest.approx(wilson(2 * c, 2 * 200))  # two paradigms pooled
    twins = [x for x in ax.lines if x.get_gid() == "random twin"]
    assert len(twins) == 2 and {x.get_linestyle() for x in twins} == {":"}
    assert ax.get_xscale() == "log"


def test_report_draws_and_links_the_new_figures(tmp_path, monkeypatch):
    from minilm_jax.report import publish

    figures = {}

    def keep(name):
        plot = getattr(publish, name)

        def wrapper(*args, **kwargs):
            figures[name] = plot(*args, **kwargs)
            return figures[name]
        monkeypatch.setattr(publish, name, wrapper)

    for name in ("plot_downstream", "plot_correlation", "plot_zero_shot"):
        keep(name)
    rows = _sweep_rows() + _finetune_rows(("small-h16", "small-h32", "small-h64", "small-h128"))
    for step, c in ((1000, 100), (8000, 150)):
        rows += pair_rows("small-h16", "E32-H16-I128-L2-A2-V19010", "pretrained", step, c,
                          ppl=300.0 - step / 100)
    rows += pair_rows("small-h16", "E32-H16-I128-L2-A2-V19010", "random", 0, 97)
    source = tmp_path / "results.jsonl"
    source.write_text("")
    out = tmp_path / "report"
    out.mkdir()
    text = publish.write_report(rows, out, ReportOptions(bootstrap=20), source).read_text()
    for name in ("downstream.png", "perplexity_vs_downstream.png", "zero_shot_0.png",
                 "loss_vs_flops_paper.png"):
        assert (out / name).stat().st_size > 0
        assert f"]({name})" in text
    assert len(figures["plot_downstream"].axes[0].containers) == 2  # error bars per init
    assert "Fisher-z" in " ".join(t.get_text() for t in
                                  figures["plot_correlation"].axes[0].get_legend().get_texts())
    assert [x for x in figures["plot_zero_shot"].axes[0].lines if x.get_gid() == "chance"]
