"""The committee latency benchmark on tiny points: structure of the results, committee correctness.
No assertions on speed."""

import json

import jax
import numpy as np
import pytest

from conftest import float32_tolerance
from minilm_jax import latency

MEMBER = "E32-H32-I128-L1-A2-V500"
OTHER = "E32-H64-I128-L1-A4-V500"
DEEP = "E32-H32-I128-L2-A2-V500"  # deeper than a member: all the "deep" row needs
SEQ_LEN = 32
ROWS = ("single", "deep", "committee-vmap", "committee-fused", "committee-seq")
# A member's forward pass (the widest of MEMBER and OTHER): hidden and ffn widths, attention over
# SEQ_LEN positions, the pooler, the 4 labels.
TERMS = 64 + 128 + SEQ_LEN + 64 + 4


def probs_tolerance(logit_scale: float, members: int) -> float:
    """Committee probabilities against the members run one by one: the logits of another program
    within float32_tolerance at their scale; a probability p moves by at most 2 p times that
    (p <= 1); plus the float32 softmax over 4 labels and mean over the members."""
    return 2 * float32_tolerance(logit_scale, TERMS) + float32_tolerance(1.0, 4 + members)


def logit_scale(members: list[str], batches, runners=None) -> float:
    """The largest logit of the committee's members (seeds 0..2) on the rows' inputs (``runners``:
    those already built for ``members``)."""
    if runners is None:
        runners, _ = latency.build_runners(k=3, members=members, deep=None, seq_len=SEQ_LEN,
                                           num_labels=4)
    committee = next(r for r in runners if r.name == "committee-seq")
    return max(float(np.max(np.abs(np.asarray(m.logits(latency.synthetic_tokens(
        b, SEQ_LEN, 500, seed=b)))))) for m in committee.members for b in batches)


@pytest.fixture(scope="module")
def benchmark():
    """run_benchmark's results, and the runners it built (seen on the way through build_runners):
    the tests below read those instead of building and compiling the same committee again."""
    built, build = [], latency.build_runners

    def recording(**kwargs):
        built.append(build(**kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latency, "build_runners", recording)
        results = latency.run_benchmark(k=3, members=[MEMBER], deep=DEEP, batch_sizes=(1, 4),
                                        seq_len=SEQ_LEN, repeats=3, warmup=1, num_labels=4)
    assert len(built) == 1
    return results, built[0][0]


@pytest.fixture(scope="module")
def results(benchmark):
    return benchmark[0]


def test_all_rows_present_with_sane_figures(results, benchmark):
    rows = results["rows"]
    assert [(r["name"], r["batch"]) for r in rows] == [(n, b) for b in (1, 4) for n in ROWS]
    assert results["skipped"] == []
    for row in rows:
        assert row["p90_ms"] >= row["median_ms"] > 0
        assert row["seqs_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1000))
        assert row["params"] > 0 and row["flops_per_seq"] > 0
        assert row["vs_deep"] > 0
    by_name = {r["name"]: r for r in rows if r["batch"] == 1}
    # the rows record their members' logit scale (the tolerance's basis): the one computed here
    assert by_name["committee-seq"]["logit_scale"] == pytest.approx(
        logit_scale([MEMBER], (1,), benchmark[1]), rel=1e-6)
    single = by_name["single"]
    for name in ("committee-vmap", "committee-fused", "committee-seq"):
        assert by_name[name]["members"] == 3
        assert by_name[name]["params"] == 3 * single["params"]
        assert by_name[name]["flops_per_seq"] == pytest.approx(3 * single["flops_per_seq"])
        assert by_name[name]["max_abs_err"] < probs_tolerance(by_name[name]["logit_scale"], 3)
    assert by_name["deep"]["flops_per_seq"] > single["flops_per_seq"]
    assert "device" in results["environment"] and "jax" in results["environment"]
    json.dumps(results)  # JSON-serialisable
    assert "committee-vmap" in latency.format_report(results)


@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_committee_probs_equal_mean_of_member_softmaxes(combine, request):
    if combine == "prob":  # run_benchmark's own (combine="prob"), its programs compiled already
        runners = request.getfixturevalue("benchmark")[1]
    else:
        runners, _ = latency.build_runners(k=3, members=[MEMBER], deep=None, seq_len=SEQ_LEN,
                                           combine=combine, num_labels=4)
    tokens_bt = latency.synthetic_tokens(4, SEQ_LEN, 500)  # a batch size of the benchmark's
    committees = [r for r in runners if r.name.startswith("committee")]
    assert [r.name for r in committees] == ["committee-vmap", "committee-fused", "committee-seq"]
    logits_kbc = np.stack([np.asarray(m.logits(tokens_bt), np.float64)
                           for m in committees[0].members])
    if combine == "prob":
        want_bc = np.mean(np.exp(logits_kbc) / np.exp(logits_kbc).sum(-1, keepdims=True), axis=0)
    else:
        mean_bc = logits_kbc.mean(axis=0)
        want_bc = np.exp(mean_bc) / np.exp(mean_bc).sum(-1, keepdims=True)
    tol = probs_tolerance(float(np.max(np.abs(logits_kbc))), 3)
    for runner in committees:
        probs_bc = np.asarray(runner.forward(tokens_bt))
        assert probs_bc.shape == (4, 4)
        # a float32 softmax and mean, summed over 4 labels in float32
        np.testing.assert_allclose(probs_bc.sum(axis=-1), 1.0, rtol=0,
                                   atol=float32_tolerance(1.0, 4 + 3 + 4))
        np.testing.assert_allclose(probs_bc, want_bc, rtol=0, atol=tol)
    # Distinct seeds: the members really differ.
    assert np.abs(logits_kbc[0] - logits_kbc[1]).max() > 1e-3


def test_heterogeneous_committee_and_cli(tmp_path, capsys):
    out = tmp_path / "latency.json"
    code = latency.main([f"--members={MEMBER},{OTHER}", "--k=3", "--deep=", "--batch_sizes=4",
                         f"--seq_len={SEQ_LEN}", "--repeats=2", "--warmup=1",
                         f"--json={out}"])
    assert code == 0
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["rows"]] == ["single", "committee-fused", "committee-seq"]
    assert saved["skipped"][0]["name"] == "committee-vmap"
    fused = saved["rows"][1]
    assert fused["description"] == f"{MEMBER} + {OTHER} + {MEMBER}, one jit"
    tol = probs_tolerance(fused["logit_scale"], 3)
    assert fused["max_abs_err"] < tol and "vs_deep" not in fused
    assert "committee-fused" in capsys.readouterr().out


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="seq_len"):
        latency.build_runners(members=[MEMBER], deep=None, seq_len=1000)
    with pytest.raises(ValueError, match="combine"):
        latency.build_runners(members=[MEMBER], deep=None, seq_len=8, combine="median")
    assert latency.main(["--members=E32-H32", "--deep=", "--batch_sizes=1"]) == 2
    assert latency.committee_points(["a", "b"], 5) == ["a", "b", "a", "b", "a"]


def test_time_forwards_interleaves_calls():
    calls = []

    def make(name):
        def forward(tokens):
            calls.append(name)
            return jax.block_until_ready(tokens + 1)
        return forward

    timings = latency.time_forwards([make("a"), make("b")], np.zeros(3), repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    for timing in timings:
        assert timing["p90_ms"] >= timing["median_ms"] >= timing["min_ms"] >= 0
