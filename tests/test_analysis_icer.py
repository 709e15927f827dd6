"""One-factor-at-a-time cost-effectiveness (ICER), iso groups, and the results-table loader."""

import json
import math

import pytest

from minilm_jax.analysis.depth import depth_analysis
from minilm_jax.analysis.icer import icer_analysis
from minilm_jax.analysis.result_rows import ResultsError, load_results
from minilm_jax.analysis.results import (best_validation, downstream_scores, last_validation,
                                         summarize_runs)


def run_rows(run, point, group, base="b", factor="", value=None, curve=(), params=1000):
    """Validation rows of one run: ``curve`` = [(step, cumulative FLOPs, perplexity), ...]."""
    return [dict(run=run, workdir=f"/runs/{run}", point=point, group=group, base=base,
                 factor=factor, factor_value=value, params_total=params,
                 params_non_embedding=params // 2, kind="validation", step=step,
                 sequences_seen=step * 256, flops_paper=flops, flops_complete=1.5 * flops,
                 loss=math.log(ppl), perplexity=ppl)
            for step, flops, ppl in curve]


def hidden_sweep():
    """Base H=32 and hidden-size variants 16, 64, 128. Final FLOPs C / best perplexity:
    H16: 60 / 70, base: 100 / 50 (its last point, 52, is not its best), H64: 300 / 40,
    H128: 1000 / 45 (worse than H64)."""
    return (run_rows("h16", "E32-H16-I128-L2-A2", "ofat:model.hidden_dim", factor="model.hidden_dim",
                     value=16, curve=[(1, 30, 90), (2, 60, 70)])
            + run_rows("base", "E32-H32-I128-L2-A2", "base", curve=[(1, 50, 50), (2, 100, 52)])
            + run_rows("h64", "E32-H64-I128-L2-A2", "ofat:model.hidden_dim",
                       factor="model.hidden_dim", value=64, curve=[(1, 150, 48), (2, 300, 40)])
            + run_rows("h128", "E32-H128-I128-L2-A2", "ofat:model.hidden_dim",
                       factor="model.hidden_dim", value=128, curve=[(2, 1000, 45)]))


def layer_sweep():
    """Layers 1 (C 80, ppl 60) and 4 (C 400, ppl 30) around the same base (L=2: C 100, ppl 50)."""
    return (run_rows("l1", "E32-H32-I128-L1-A2", "ofat:model.num_layers", factor="model.num_layers",
                     value=1, curve=[(2, 80, 60)])
            + run_rows("l4", "E32-H32-I128-L4-A2", "ofat:model.num_layers",
                       factor="model.num_layers", value=4, curve=[(2, 400, 30)]))


def test_icer_hand_computed():
    runs = summarize_runs(hidden_sweep() + layer_sweep(), flops="paper")
    steps, factors = icer_analysis(runs.values())
    hidden = [s for s in steps if s.factor == "model.hidden_dim"]
    # Ordered by H: 16 (C 60, ppl 70) -> 32 base (C 100, ppl 50; its value 32 read from the point)
    #   -> 64 (C 300, ppl 40) -> 128 (C 1000, ppl 45).
    # 16 -> 32:  ΔC = 100 - 60  = 40,  gain = 70 - 50 = 20  -> ICER 2
    # 32 -> 64:  ΔC = 300 - 100 = 200, gain = 50 - 40 = 10  -> ICER 20
    # 64 -> 128: ΔC = 1000 - 300 = 700, gain = 40 - 45 = -5 -> dominated (inf)
    assert [(s.prev.run, s.next.run) for s in hidden] == [("h16", "base"), ("base", "h64"),
                                                          ("h64", "h128")]
    assert [s.delta_flops for s in hidden] == [40, 200, 700]
    assert [s.gain for s in hidden] == [20, 10, -5]
    assert [s.icer for s in hidden] == [2, 20, math.inf]
    assert [s.status for s in hidden] == ["helped", "helped", "dominated"]
    assert [s.side for s in hidden] == ["below base", "above base", "above base"]
    # Layers: 1 (C 80, ppl 60) -> 2 base (C 100, ppl 50) -> 4 (C 400, ppl 30)
    # ΔC 20 / gain 10 = 2; ΔC 300 / gain 20 = 15; median (2 + 15) / 2 = 8.5.
    layers = [s for s in steps if s.factor == "model.num_layers"]
    assert [s.icer for s in layers] == [2, 15]
    # Hidden: median of helpful steps (2, 20) = 11 > 8.5, so layers rank first here.
    assert [(f.factor, f.median_icer, f.n_steps, f.n_helped) for f in factors] == [
        ("model.num_layers", 8.5, 2, 2), ("model.hidden_dim", 11, 3, 2)]
    assert factors[1].best_step.next.run == "base"


def test_icer_uses_the_chosen_flops_definition_and_flags_dominant_steps():
    rows = (run_rows("base", "E32-H32-I128-L2-A2", "base", curve=[(2, 100, 50)])
            + run_rows("a4", "E32-H32-I128-L2-A4", "ofat:model.num_heads", factor="model.num_heads",
                       value=4, curve=[(2, 100, 45)])
            + run_rows("a8", "E32-H32-I128-L2-A8", "ofat:model.num_heads", factor="model.num_heads",
                       value=8, curve=[(2, 100, 45)]))
    steps, factors = icer_analysis(summarize_runs(rows, flops="complete").values())
    # 2 -> 4 heads: ΔC = 150 - 150 = 0 with gain 5 -> dominant (ICER 0); 4 -> 8: gain 0 -> dominated.
    assert [(s.status, s.icer) for s in steps] == [("dominant", 0.0), ("dominated", math.inf)]
    assert factors[0].median_icer == 0.0


def test_icer_without_a_known_base_value_leaves_the_base_out():
    rows = (run_rows("base", "custom-point", "base", curve=[(2, 100, 50)])
            + run_rows("lr1", "custom-point", "ofat:train.lr", factor="train.lr", value=1e-4,
                       curve=[(2, 100, 60)])
            + run_rows("lr2", "custom-point", "ofat:train.lr", factor="train.lr", value=5e-4,
                       curve=[(2, 100, 55)]))
    steps, factors = icer_analysis(summarize_runs(rows).values())
    assert [(s.prev.run, s.next.run) for s in steps] == [("lr1", "lr2")]
    assert "base left out" in factors[0].note


def iso_rows():
    deep = run_rows("deep", "E64-H32-I128-L8-A1", "iso_param:g3", curve=[(10, 1e12, 40)])
    wide = run_rows("wide", "E64-H32-I256-L4-A1", "iso_param:g3", curve=[(10, 9e11, 38)])
    rows = deep + wide
    common = dict(workdir="", point="", group="iso_param:g3", base="b", factor="",
                  factor_value=None, params_total=1000, params_non_embedding=500,
                  kind="downstream", metrics={}, flops_paper=1e12, flops_complete=1.5e12)
    for run, sst2, rte, cola in (("deep", 80, 60, 10), ("wide", 70, 55, 30)):
        for task, score in (("sst2", sst2), ("rte", rte), ("cola", cola)):
            if run == "wide" and task == "cola":
                continue  # not scored on every member: left out of the means
            rows.append({**common, "run": run, "workdir": f"/runs/{run}",
                         "point": deep[0]["point"] if run == "deep" else wide[0]["point"],
                         "task": task, "init": "pretrained", "score": score,
                         "final_validation_perplexity": 40.0})
    return rows


def test_depth_groups_winners_use_common_tasks():
    rows = iso_rows()
    runs = summarize_runs(rows)
    (group,) = depth_analysis(runs.values(), downstream_scores(rows))
    assert group.kind == "iso_param" and group.tasks == ["rte", "sst2"]
    assert [(m.summary.run, m.summary.num_layers, m.downstream_mean) for m in group.members] == [
        ("wide", 4, 62.5), ("deep", 8, 70.0)]  # (70 + 55) / 2, (80 + 60) / 2
    assert group.perplexity_winner == "wide" and group.downstream_winner == "deep"
    assert runs["deep"].flops_per_step == 1e11  # 1e12 FLOPs over 10 steps


# --- loader ------------------------------------------------------------------------------------

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_results_selects_last_and_best(tmp_path):
    rows = load_results(write_jsonl(tmp_path / "r.jsonl", hidden_sweep()))
    assert last_validation(rows)["base"]["step"] == 2
    assert best_validation(rows)["base"]["perplexity"] == 50
    assert rows[0]["line"] == 1 and rows[0]["metrics"] == {}


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("loss"), r"r\.jsonl:3: missing field 'loss' \(kind 'validation'\)"),
    (lambda r: r.update(step="two"), r"r\.jsonl:3: field 'step' must be an integer"),
    (lambda r: r.update(kind="train"), r"r\.jsonl:3: field 'kind' must be one of"),
    (lambda r: r.update(workdir="/elsewhere"), r"r\.jsonl:3: field 'workdir' of run 'h16'"),
])
def test_load_results_names_file_line_and_field(tmp_path, edit, message):
    rows = hidden_sweep()
    rows.insert(1, rows[1].copy())
    edit(rows[2])
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(ResultsError, match=message):
        load_results(path)


def test_load_results_rejects_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(hidden_sweep()[0]) + "\n\n{not json\n")
    with pytest.raises(ResultsError, match=r"r\.jsonl:3: not valid JSON"):
        load_results(path)
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "missing.jsonl")
    assert issubclass(ResultsError, ValueError)


# --- duplicate rows: identical ones counted once, same identity with other values refused ----------

def _downstream(run, task, init, score, workdir, seeds=(0, 1), step=2):
    return dict(run=run, workdir=f"/runs/{run}", point="E32-H32-I128-L2-A2", group="base", base="b",
                factor="", factor_value=None, params_total=1000, params_non_embedding=500,
                kind="downstream", task=task, init=init, score=score, flops_paper=100.0,
                flops_complete=150.0, seeds=list(seeds), checkpoint_step=step,
                finetune_workdir=workdir)


def _table():
    base = next(r for r in hidden_sweep() if r["run"] == "base")
    return (hidden_sweep()
            + [{**base, "kind": "test", "step": 1, "loss": 4.0, "perplexity": math.exp(4.0)}]
            + [_downstream("base", "sst2", "pretrained", 70.0, "/ft/base/sst2"),
               _downstream("base", "sst2", "random", 55.0, "/ft/random/sst2", step=None),
               _downstream("base", "cola", "pretrained", 20.0, "/ft/base/cola")]
            + [{"kind": "baseline", "name": "unigram", "split": "validation", "loss": 7.0,
                "perplexity": math.exp(7.0), "shards": "/shards"}])


def test_load_results_counts_identical_rows_once_and_warns(tmp_path, capsys):
    rows = _table()
    plain = load_results(write_jsonl(tmp_path / "plain.jsonl", rows))
    path = write_jsonl(tmp_path / "r.jsonl", [r for r in rows for _ in range(2)])
    doubled = load_results(path)
    assert [{k: v for k, v in r.items() if k != "line"} for r in doubled] == \
        [{k: v for k, v in r.items() if k != "line"} for r in plain]
    assert [r["line"] for r in doubled] == list(range(1, 2 * len(rows), 2))  # first copies kept
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {path}: {len(rows)} duplicate rows dropped (each identical to an earlier line, "
        "e.g. line 2 repeats line 1); each row counted once"]
    assert summarize_runs(doubled) == summarize_runs(plain)
    assert downstream_scores(doubled) == downstream_scores(plain)
    assert downstream_scores(doubled)[("base", "sst2", "pretrained")].n == 1


@pytest.mark.parametrize("index, edit, identity", [
    (1, lambda r: r.update(perplexity=71), r"validation row of run 'h16' at step 2"),
    (7, lambda r: r.update(loss=4.5), r"test row of run 'base'"),
    (8, lambda r: r.update(score=71.0), r"downstream row of run 'base' fine-tuned in '/ft/base/sst2'"),
    (11, lambda r: r.update(loss=7.5), r"baseline row 'unigram' of split 'validation' of shards"),
])
def test_load_results_refuses_one_row_with_two_values(tmp_path, index, edit, identity):
    rows = _table()
    other = dict(rows[index])
    edit(other)
    path = write_jsonl(tmp_path / "r.jsonl", rows + [other])
    with pytest.raises(ResultsError, match=rf"r\.jsonl: lines {index + 1} and {len(rows) + 1} are "
                                           rf"the same {identity}"):
        load_results(path)


def test_load_results_keeps_distinct_rows_that_share_no_identity(tmp_path, capsys):
    """Other seeds of a task, another checkpoint, the same run under another group name and
    hand-made per-seed rows (no fine-tuning workdir, no seeds) are distinct rows."""
    rows = _table()
    extra = [_downstream("base", "sst2", "pretrained", 71.0, "/ft/base/sst2-more", seeds=(2, 3)),
             _downstream("base", "sst2", "pretrained", 60.0, "/ft/base/sst2@1", step=1),
             {**rows[8], "run": "base@iso_flop:g1", "group": "iso_flop:g1"}]
    hand = [{**_downstream("base", "rte", "random", s, None), "seeds": None} for s in (50.0, 52.0)]
    loaded = load_results(write_jsonl(tmp_path / "r.jsonl", rows + extra + hand))
    assert len(loaded) == len(rows + extra + hand)
    assert capsys.readouterr().err == ""
