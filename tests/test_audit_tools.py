"""The measurement and planning tools' numbers, each against a value worked out by hand: latency
timings (milliseconds, median, p90, first call in seconds) on a scripted clock, the rows' relative
latency, throughput and committee error as time_runners wires them, run_benchmark's and the
command's settings, a committee's member seeds and costs; the committee command's members, seeds,
combine method and reference read from real run folders; the own-data time estimate (folds, a
labels folder, the seeds argument, the load factor); and the points table's columns."""

from __future__ import annotations

import json
import types

import jax
import numpy as np
import pytest

from minilm_jax import committee as committee_cli
from minilm_jax import latency
from minilm_jax import own_data_estimate as est
from minilm_jax.model.sizes import resolve_point

POINT = "E16-H16-I32-L1-A2-V300"
OTHER = "E16-H16-I32-L1-A4-V300"  # another architecture (4 heads)


# ---------------------------------------------------------------------------------------- latency

class Clock:
    """A perf_counter the fake forwards advance by scripted seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_member(vocab: int):
    return types.SimpleNamespace(cfg=types.SimpleNamespace(vocab_size=vocab))


def fake_runner(name, clock, seconds, members, combine="none", offset=None):
    """A row whose call takes ``seconds(batch, call_index)`` on ``clock`` and returns uniform
    probabilities over 2 labels plus ``offset[:batch]`` (if given)."""
    calls = []

    def forward(tokens_bt):
        batch = np.asarray(tokens_bt).shape[0]
        calls.append(batch)
        clock.now += seconds(batch, len(calls))
        return np.full((batch, 2), 0.5) + (0.0 if offset is None else offset[:batch])

    runner = latency.Runner(name, name, forward, tuple(members), combine)
    return runner, calls


@pytest.fixture
def fake_stack(monkeypatch):
    """Scripted clock; runner_cost and reference_probs stubbed (the rows' wiring is under test;
    the tokens, reference and costs are recorded)."""
    clock, seen = Clock(), {"tokens": [], "costs": [], "refs": []}
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    real_tokens = latency.synthetic_tokens

    def tokens(batch, seq_len, vocab, seed=0):
        seen["tokens"].append((batch, seq_len, vocab, seed))
        return real_tokens(batch, seq_len, vocab, seed)

    def cost(runner, seq_len, num_labels):
        seen["costs"].append((runner.name, seq_len, num_labels))
        return {"params": 1000 * len(runner.members), "flops_per_seq": 2e9 * len(runner.members)}

    def reference(members, tokens_bt, method):
        seen["refs"].append(method)
        return np.full((tokens_bt.shape[0], 2), 0.5), 7.0

    monkeypatch.setattr(latency, "synthetic_tokens", tokens)
    monkeypatch.setattr(latency, "runner_cost", cost)
    monkeypatch.setattr(latency, "reference_probs", reference)
    return clock, seen


def test_time_forwards_reports_milliseconds_median_p90_and_first_call_seconds(monkeypatch):
    """Calls of 2 s (first, compiles), 0.5 s (warm-up), then 1, 2, 3, 4, 10 ms timed."""
    clock = Clock()
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    durations = iter([2.0, 0.5, 0.001, 0.002, 0.003, 0.004, 0.010])

    def forward(tokens_bt):
        clock.now += next(durations)

    (timing,) = latency.time_forwards([forward], np.zeros(1), repeats=5, warmup=2)
    # sorted 1, 2, 3, 4, 10 ms: median 3; p90 at rank 0.9 * 4 = 3.6: 4 + 0.6 * (10 - 4) = 7.6
    assert timing["median_ms"] == pytest.approx(3.0)
    assert timing["p90_ms"] == pytest.approx(7.6)
    assert timing["min_ms"] == pytest.approx(1.0)
    assert timing["first_call_s"] == pytest.approx(2.0)


def test_time_runners_relative_latency_throughput_error_and_vocab(fake_stack):
    """Rows at two batch sizes: vs_deep against the deep row of the same batch, seq/s from the
    median, max_abs_err the largest deviation from the reference, tokens below every member's
    vocabulary."""
    clock, seen = fake_stack
    ms = {("single", 1): 1, ("deep", 1): 4, ("committee-seq", 1): 2,
          ("single", 8): 2, ("deep", 8): 8, ("committee-seq", 8): 6}

    def timed(name):
        return lambda batch, call: ms[(name, batch)] / 1000.0

    offset = np.array([[0.1, -0.1], [0.0, 0.0]] + [[0.0, 0.0]] * 6)  # one example off by 0.1
    single, _ = fake_runner("single", clock, timed("single"), [fake_member(500)])
    deep, _ = fake_runner("deep", clock, timed("deep"), [fake_member(300)])
    committee, _ = fake_runner("committee-seq", clock, timed("committee-seq"),
                               [fake_member(500), fake_member(400)], combine="prob",
                               offset=offset)
    rows = latency.time_runners([single, deep, committee], (1, 8), seq_len=16, repeats=3,
                                warmup=1, num_labels=3)
    by = {(r["name"], r["batch"]): r for r in rows}
    for (name, batch), want_ms in ms.items():
        row = by[(name, batch)]
        assert row["median_ms"] == pytest.approx(want_ms)
        assert row["vs_deep"] == pytest.approx(want_ms / ms[("deep", batch)])
        assert row["seqs_per_s"] == pytest.approx(batch * 1000.0 / want_ms)
    assert by[("committee-seq", 8)]["max_abs_err"] == pytest.approx(0.1)
    assert by[("committee-seq", 1)]["max_abs_err"] == pytest.approx(0.1)
    assert by[("committee-seq", 1)]["logit_scale"] == 7.0
    assert "max_abs_err" not in by[("single", 1)]
    # tokens drawn below the smallest vocabulary (300), one seed per batch size
    assert [(b, v, s) for b, _, v, s in seen["tokens"]] == [(1, 300, 1), (8, 300, 8)]
    assert {c[1:] for c in seen["costs"]} == {(16, 3)}


def test_format_row_prints_millions_of_params_and_gflops():
    row = {"name": "committee-seq", "description": "2 x p", "batch": 4, "median_ms": 12.5,
           "p90_ms": 20.0, "seqs_per_s": 320.0, "params": 3_200_000, "flops_per_seq": 2.5e9,
           "vs_deep": 0.5, "max_abs_err": 1e-7}
    fields = latency.format_row(row).split()
    assert fields[-4:] == ["3.2M", "2.50", "0.50", "1.0e-07"]


def test_run_benchmark_and_command_pass_repeats_warmup_and_labels(fake_stack, monkeypatch,
                                                                  tmp_path):
    """Call i takes i ms: after 2 untimed calls, 5 timed ones take 3..7 ms (median 5, min 3); the
    command's --num_labels reaches the settings and the costs."""
    clock, seen = fake_stack

    def build(**kwargs):
        runner, _ = fake_runner("single", clock, lambda batch, call: call / 1000.0,
                                [fake_member(300)])
        return [runner], []

    monkeypatch.setattr(latency, "build_runners", build)
    results = latency.run_benchmark(batch_sizes=(2,), seq_len=16, repeats=5, warmup=2)
    (row,) = results["rows"]
    assert row["median_ms"] == pytest.approx(5.0) and row["min_ms"] == pytest.approx(3.0)
    assert results["settings"]["repeats"] == 5 and results["settings"]["warmup"] == 2
    out = tmp_path / "latency.json"
    assert latency.main(["--members=x", "--deep=", "--batch_sizes=2", "--seq_len=16",
                         "--repeats=4", "--warmup=1", "--num_labels=3", f"--json={out}"]) == 0
    saved = json.loads(out.read_text())
    assert saved["settings"]["num_labels"] == 3 and saved["settings"]["repeats"] == 4
    assert seen["costs"][-1] == ("single", 16, 3)


def test_committee_members_have_seeds_zero_to_k_minus_one():
    """Member k of a committee (stacked or not) is the point's classifier built with seed k."""
    def leaves(member):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(member.params)]

    def same(a, b):
        return all(np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(leaves(a), leaves(b)))

    mixed, stacked = latency.make_committee([POINT, OTHER, POINT], 2, "float32", 16)
    assert stacked is None
    assert same(mixed[2], latency.make_member(POINT, 2, 2, "float32", 16))
    assert not same(mixed[2], latency.make_member(POINT, 0, 2, "float32", 16))
    alike, stacked = latency.make_committee([POINT, POINT], 2, "float32", 16)
    assert stacked is not None
    assert same(alike[0], latency.make_member(POINT, 0, 2, "float32", 16))
    assert same(alike[1], latency.make_member(POINT, 1, 2, "float32", 16))


def test_runner_cost_counts_the_classifier_head_of_num_labels():
    """7 labels instead of 2: 5 more outputs of an H=16 head: 5 * 17 params, 2 * 16 * 5 FLOPs."""
    member = latency.make_member(POINT, 0, 7, "float32", 16)
    small = latency.make_member(POINT, 0, 2, "float32", 16)
    seven = latency.runner_cost(latency.Runner("a", "", None, (member,), "none"), 16, 7)
    two = latency.runner_cost(latency.Runner("b", "", None, (small,), "none"), 16, 2)
    assert seven["params"] - two["params"] == 5 * 17
    assert seven["flops_per_seq"] - two["flops_per_seq"] == 2 * 16 * 5


# -------------------------------------------------------------------------------------- committee

def write_run(root, name, seeds, logits, labels, *, selected=None, reported=("test",)):
    """A finished fine-tuning run folder as the committee reads it."""
    run = root / name
    (run / "predictions").mkdir(parents=True)
    np.save(run / "predictions" / "test.final.npy", np.asarray(logits, float))
    if selected is not None:
        np.save(run / "predictions" / "test.selected.npy", np.asarray(selected, float))
    np.save(run / "predictions" / "test.labels.npy", np.asarray(labels))
    (run / "summary.json").write_text(json.dumps({
        "status": "completed", "task": "sst2", "init": "pretrained", "seeds": seeds,
        "point": name, "reported_splits": list(reported)}))
    return str(run)


def test_committee_reads_every_seed_and_combines_by_the_chosen_method(tmp_path):
    """Members (4, 0), (0, 1) x 3 on one class-0 example: logit averaging (1, 0.75) is right,
    probability averaging is wrong (test_committee's hand example), at K = 4."""
    a = write_run(tmp_path, "a", [5], [[[4.0, 0.0]]], [0], reported=("test", "validation"))
    b = write_run(tmp_path, "b", [3, 7, 9], [[[0.0, 1.0]]] * 3, [0])
    assert committee_cli.reported_split([a, b]) == "test"
    by_method = {m: committee_cli.write_committee([a, b], tmp_path / m, method=m)
                 for m in ("prob", "logit")}
    assert by_method["logit"]["points"][-1]["accuracy"] == 1.0
    assert by_method["prob"]["points"][-1]["accuracy"] == 0.0
    assert by_method["logit"]["members"] == [f"a#seed5 ({a})", f"b#seed3 ({b})",
                                             f"b#seed7 ({b})", f"b#seed9 ({b})"]
    saved = json.loads((tmp_path / "logit" / "committee.json").read_text())
    assert saved["combine"] == "logit" and saved["points"][-1]["accuracy"] == 1.0


def test_committee_markdown_in_percent_and_reference_of_the_chosen_parameters(tmp_path):
    """K = 1 over members right on 1 and 0 of 2 examples: 25 % +- sample std 35.36 %; the
    reference's selected logits (all right) rather than its final ones (half right)."""
    labels = [0, 1]
    right, half = [[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [2.0, 0.0]]
    wrong = [[0.0, 2.0], [2.0, 0.0]]
    members = write_run(tmp_path, "m", [0, 1], [half, wrong], labels, selected=[half, wrong])
    ref = write_run(tmp_path, "ref", [0], [half], labels, selected=[right])
    result = committee_cli.write_committee([members], tmp_path / "out", which="selected",
                                           reference=ref)
    assert result["reference_accuracy"] == 1.0
    k1 = result["points"][0]
    std = np.std([0.5, 0.0], ddof=1)
    assert k1["accuracy"] == 0.25 and k1["std"] == pytest.approx(std)
    md = (tmp_path / "out" / "committee.md").read_text()
    assert f"| 1 | 25.00 | {100 * std:.2f} | 2 |" in md
    assert f"Reference `{ref}`: 100.00" in md


# ------------------------------------------------------------------------------ own-data estimate

def test_estimate_trains_each_row_in_folds_minus_one_fold_runs():
    # 100 rows x 2 seeds x 2 inits x (5 - 1) fold runs x 0.006 s, plus the 40 s start
    assert est.estimate_seconds(0.0, 0, 100, 2, cores=2, folds=5) == pytest.approx(
        40 + 100 * 2 * 2 * 4 * 0.006)


@pytest.fixture
def idle_two_cores(monkeypatch):
    monkeypatch.setattr(est.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(est.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(est.os, "cpu_count", lambda: 2)


def test_a_labels_folder_counts_every_file_and_ignores_folds(tmp_path, idle_two_cores, capsys):
    """2 files of 1000 rows, 3 seeds given as 0,1,2: 2000 x 3 x 2 x 0.006 = 72 s + 40 s: 2 min
    (folds apply only to one cross-validated file)."""
    folder = tmp_path / "labels"
    folder.mkdir()
    for name in ("train.tsv", "test.tsv"):  # a header row each, then 1000 rows
        (folder / name).write_text("text\tlabel\n"
                                   + "".join(f"text {i}\t{i % 2}\n" for i in range(1000)))
    (folder / "README.md").write_text("how the labels were made\n" * 50)  # not a labels file
    assert est.labelled_rows(str(folder)) == 2000
    est.main(["-", str(folder), "0", "0,1,2", "5"])
    line = capsys.readouterr().out
    assert line.startswith(f"estimate: about {(40 + 72) / 60:.0f} min ")
    assert "2000 labelled rows x 3 seeds x 2 inits" in line


def test_the_load_factor_uses_the_machines_cores_not_the_jobs(monkeypatch):
    """Load average 3 on an 8-core machine, the job pinned to 1 core: (3 + 1) / 8 < 1: idle."""
    monkeypatch.setattr(est.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(est.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    monkeypatch.setattr(est.os, "cpu_count", lambda: 8)
    line = est.estimate_line("-", "-", 0, 1)
    assert line.startswith("estimate: about 1 min ") and "idle enough" in line


# ---------------------------------------------------------------------------------------- points

def test_points_table_columns_by_hand():
    """Params, embedding, non-embedding and both FLOP columns of one point, the FLOPs from
    SPEC A5's paper formula and 3x a complete forward with the MLM head at 32 positions."""
    from minilm_jax.model import accounting
    from minilm_jax.points import table

    point = "E16-H32-I64-L2-A2-V300"
    cfg = resolve_point(point)
    t, e, h, i, l, v, a = (cfg.max_len, cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.num_layers,
                           cfg.vocab_size, cfg.num_heads)
    paper = 3 * (2 * t * v * e + 2 * t * e * h
                 + l * (6 * t * h * h + 2 * t * t * h + 3 * a * t * t + 4 * t * h * i)
                 + 2 * t * h * v)
    complete = 3 * (2 * t * e * h + l * (8 * t * h * h + 4 * t * t * h + 4 * t * h * i)
                    + 2 * 32 * h * h + 2 * 32 * h * v)
    counts = accounting.formula_params(cfg)
    assert counts.embedding > 0 and counts.non_embedding > 0
    assert counts.embedding != counts.non_embedding
    row = table([point]).splitlines()[2].split()
    assert row[0] == point
    assert row[3:] == [f"{counts.total:,}", f"{counts.embedding:,}", f"{counts.non_embedding:,}",
                       f"{paper:.3e}", f"{complete:.3e}"]
