"""Downstream analyses count each fine-tuning run once and pair pre-trained with random by seed."""

import pytest

from minilm_jax.analysis.downstream import (final_gap_rows, finetune_runs, gap_rows,
                                            perplexity_correlation)


def _row(run, workdir, task, init, scores, step=None, ppl=None, point="E32-H32-I128-L1-A2",
         ft=None):
    return {"kind": "downstream", "run": run, "workdir": workdir, "point": point, "task": task,
            "init": init, "score": sum(scores) / len(scores), "seeds": list(range(len(scores))),
            "member_scores": scores, "checkpoint_step": step, "final_validation_perplexity": ppl,
            "checkpoint_fraction": None if step is None else step / 100,
            "finetune_workdir": ft or f"{workdir}/ft/{task}/{init}@{step}"}


def _sweep():
    rows = []
    for run, point, base in (("a", "P1", 0.0), ("b", "P2", 5.0)):
        for step, ppl in ((40, 600.0), (70, 500.0), (100, 400.0)):
            for task in ("t1", "t2"):
                scores = [base + (700 - ppl) / 10 + s for s in (0.0, 1.0, 2.0)]
                rows.append(_row(run, f"/r/{run}", task, "pretrained", scores, step, ppl + base,
                                 point))
        for task in ("t1", "t2"):
            rows.append(_row(run, f"/r/{run}", task, "random", [1.0, 2.0, 2.5], point=point,
                             ft=f"/random/{point}/{task}"))
    # run 'a' also belongs to a second group: its rows are repeated under another name.
    rows += [{**r, "run": "a@iso_flop:g"} for r in rows if r["run"] == "a"]
    return rows


def test_group_copies_and_shared_twins_count_once():
    runs = finetune_runs(_sweep())
    assert len(runs) == 2 * 3 * 2 + 2 * 2
    assert len(perplexity_correlation(runs).points) == 6  # 2 runs x 3 checkpoints, not 9


def test_gap_pairs_by_seed_with_the_architectures_twin():
    gaps = gap_rows(finetune_runs(_sweep()))
    assert len(gaps) == 12
    g = next(g for g in gaps if g.run == "a" and g.step == 100 and g.task == "t1")
    # pre-trained seeds 30, 31, 32 vs random 1, 2, 2.5: differences 29, 29, 29.5
    assert g.gap.mean == pytest.approx((29 + 29 + 29.5) / 3) and g.gap.method == "paired t"
    assert g.gap.verdict() == "pre-trained better"
    assert {(g.run, g.step) for g in final_gap_rows(gaps)} == {("a", 100), ("b", 100)}


def test_correlation_is_negative_and_names_its_tasks():
    c = perplexity_correlation(finetune_runs(_sweep()))
    assert c.tasks == ["t1", "t2"] and c.result.r < -0.9
    assert c.result.agreement(-1).startswith("agrees") or "includes 0" in c.result.agreement(-1)
    assert any("n = 6 < 10" in note for note in c.notes)


def test_task_missing_on_one_checkpoint_is_named_not_silent():
    rows = [r for r in _sweep() if not (r["run"] == "b" and r["task"] == "t2"
                                        and r["init"] == "pretrained" and r["checkpoint_step"] == 40)]
    c = perplexity_correlation(finetune_runs(rows))
    assert c.tasks == ["t1"] and any("t2" in note for note in c.notes)


def test_constant_scores_are_undefined_not_a_crash():
    rows = [_row("a", "/r/a", "t", "pretrained", [50.0, 50.0], s, p) for s, p in
            ((1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0))]
    c = perplexity_correlation(finetune_runs(rows))
    assert "constant" in c.result.undefined
