"""Study B end to end at the smoke size (launch/study_b.sh with the study_b_smoke sweep): WikiText-2
paragraphs -> WordPiece vocabulary -> nested subsets -> pre-training of 1-layer members and a deeper
model -> fine-tuning on AG News and FewRel (of the three tasks) with both inits -> the study B report."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import REPO, SHARED_DATA, float32_tolerance, shared_path, xla_flags

# The sums of one forward pass of the smoke's 1-layer members (E32-H32-I64, 64 tokens, 4 labels),
# as tests/test_latency.py's TERMS: hidden and ffn widths, attention over the tokens, the pooler,
# the labels.
SMOKE_TERMS = 32 + 64 + 64 + 32 + 4


def test_study_b_smoke_runs_end_to_end_and_reports_all_four_analyses(tmp_path):
    for part in (("wikitext2", "tokenized", "wiki.valid.tokens"), ("ag_news",),
                 ("fewrel", "val_nyt.json")):
        shared_path(*part)
    env = {**os.environ, "STUDY_B_OUT": str(tmp_path / "b"), "STUDY_B_SWEEP": "study_b_smoke",
           "MINILM_SHARED_DATA": str(SHARED_DATA), "XLA_FLAGS": xla_flags()}
    proc = subprocess.run(["bash", "launch/study_b.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = tmp_path / "b" / "study" / "study_b"
    report = (out / "report.md").read_text()
    for heading in ("## Pre-training", "## 1. Pre-trained vs random init",
                    "## 2. Gap vs pre-training subset size", "## 3. Gap vs token overlap",
                    "## 4. Soft committee", "## Latency"):
        assert heading in report
    result = json.loads((out / "study_b.json").read_text())
    gaps = result["gaps"]
    # 2 tasks x (two 1-layer subsets + the deeper model) x 2 pre-training seeds, every gap paired
    # over 2 fine-tuning seeds
    assert len(gaps) == 12 and all(g["gap"]["n"] == 2 for g in gaps if g["gap"]["undefined"] == "")
    assert {(g["task"], g["subset"]) for g in gaps if g["model"] == "l1"} == {
        (t, s) for t in ("ag_news", "fewrel") for s in (100, 300)}
    assert all(0 < p["occurrence_share"] <= 1 for p in result["overlap"])
    committee = result["committees"]["ag_news"]["prob"]
    assert sorted(committee["by_k"]) == ["1", "2"] and committee["members"] == 2
    names = {r["name"] for r in result["latency"]["rows"]}
    assert names == {"single", "deep", "committee-fused", "committee-seq"}
    for row in result["latency"]["rows"]:  # committees against their members one by one
        if "max_abs_err" in row:  # float32 logits at their scale, then a softmax and mean
            tol = (2 * float32_tolerance(row["logit_scale"], SMOKE_TERMS)
                   + float32_tolerance(1.0, 4 + row["members"]))
            assert row["max_abs_err"] < tol, row
    assert (out / "gaps.png").stat().st_size > 0 and (out / "committee.png").stat().st_size > 0
