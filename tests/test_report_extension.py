"""What results rows and the report say of a run's recipe and architecture: the plateau advice of
a run already on the small-corpus recipe, ``arch`` on a built-in encoder's rows (sweep and
zero-shot), and a variant's field values in the report's variant section."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import ml_collections
import pytest

from minilm_jax.analysis.result_rows import read_results
from minilm_jax.analysis.results import summarize_runs
from minilm_jax.analysis.variants import BUILT_IN

POINT = "E16-H16-I32-L1-A2"


def _validation(run: str, workdir: str, ppl: float, step: int = 8, arch: str | None = None,
                seed: int = 0, fields: dict | None = None) -> dict:
    row = {"kind": "validation", "run": run, "workdir": workdir, "point": POINT,
           "group": "grid", "base": "", "factor": "", "factor_value": None,
           "params_total": 1000, "params_non_embedding": 500, "step": step,
           "flops_paper": 1e6 * step, "flops_complete": 1e6 * step, "loss": math.log(ppl),
           "perplexity": ppl, "pretrain_seed": seed}
    if arch:
        row["arch"] = arch
    if fields:
        row["variant_fields"] = fields
    return row


def test_plateau_advice_names_what_is_left_for_a_run_already_on_the_small_corpus_recipe(tmp_path):
    """Two runs on the unigram plateau: the paper-recipe run is told to try the small-corpus
    recipe; the run already on it (its config.json) is told what is left: twice its steps or a
    larger corpus, not the recipe it uses."""
    from minilm_jax.configs import own_data, pretrain
    from minilm_jax.data.learned import ADVICE
    from minilm_jax.report.markdown import baseline_lines
    from minilm_jax.settings.command_line import flatten

    own = own_data.get_config()
    own.train.num_steps = 150
    for name, config in (("own", own), ("paper", pretrain.get_config(POINT))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(flatten(config), default=str))
    rows = [{"kind": "baseline", "name": "unigram", "split": "validation", "loss": math.log(100.0),
             "perplexity": 100.0},
            {"kind": "baseline", "name": "bigram", "split": "validation", "loss": math.log(80.0),
             "perplexity": 80.0}]
    rows += [_validation(name, str(tmp_path / name), 95.0) for name in ("own", "paper")]
    lines = baseline_lines(SimpleNamespace(rows=rows, runs=summarize_runs(rows)))
    advice = [line for line in lines if "learned little" in line]
    own_line = [line for line in advice if "`own`" in line]
    paper_line = [line for line in advice if "`paper`" in line]
    assert len(own_line) == 1 and len(paper_line) == 1 and own_line != paper_line
    assert "--config.train.num_steps=300" in own_line[0]  # twice its 150 steps
    assert "try the small-corpus recipe" not in own_line[0]
    assert ADVICE in paper_line[0]


def _sweep_row(arch: str, extra: dict | None = None) -> dict:
    from minilm_jax.sweep.results import _identity

    config = ml_collections.ConfigDict({"model": {"arch": arch}})
    if extra:
        config.model.extra = ml_collections.ConfigDict(extra)
    run = SimpleNamespace(design=None, name="r", point=POINT, pretrain_seed=0, config=config)
    membership = SimpleNamespace(group="grid", base="", factor="", factor_value=None)
    summary = {"params": {"total": 1000, "non_embedding": 500}}
    return _identity(run, membership, "r", __import__("pathlib").Path("/nowhere/r"), summary)


def test_a_built_in_encoders_sweep_rows_carry_its_arch_and_read_as_the_built_in(tmp_path):
    """A built-in run's rows name its encoder (arch=roberta), as a variant's rows name theirs
    (with its field values); the analyses read roberta as the built-in encoder, and a table
    written before (no arch) holding the same row is one row, not mixed results."""
    from minilm_jax.analysis.architecture_pooling import row_arch

    row = _sweep_row("roberta")
    assert row["arch"] == "roberta" and "variant_fields" not in row
    assert row_arch(row) == BUILT_IN
    variant = _sweep_row("encoder_variants:GateInitEncoder", {"gate_init": 0.5})
    assert variant["arch"] == "encoder_variants:GateInitEncoder"
    assert variant["variant_fields"] == {"gate_init": 0.5}
    assert row_arch(variant) == "encoder_variants:GateInitEncoder"

    new = {**_validation("r", "/w/r", 300.0), **row}
    old = {k: v for k, v in new.items() if k != "arch"}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    rows, duplicates = read_results(path)
    assert len(rows) == 1 and duplicates.count == 1


def test_a_built_in_checkpoints_zero_shot_rows_carry_its_arch():
    """The rows scored from a built-in encoder's checkpoint (and its random twin) say which
    encoder (model.arch roberta), as a variant's do; the pair table's header names no variant
    for them."""
    from minilm_jax.evals.pair_tables import arch_text
    from minilm_jax.evals.scoring import provenance
    from minilm_jax.evals.scoring_models import run_info
    from minilm_jax.model.sizes import resolve_point

    for arch in ("roberta", "encoder_variants:GateInitEncoder"):
        run = SimpleNamespace(model=resolve_point(POINT + "-V300", arch=arch), step=8,
                              validation_perplexity=50.0, code_changes=(),
                              library_version_changes=())
        for pretrained in (True, False):
            info = run_info("/w/r", run, pretrained)
            assert info["arch"] == arch and provenance(info)["arch"] == arch
            assert info["step"] == (8 if pretrained else 0)
    assert arch_text([{"arch": "roberta"}]) == ""
    assert arch_text([{"arch": "my_lab:Gated"}]) == "model.arch `my_lab:Gated`"


def test_the_variant_section_names_each_variants_field_values():
    """One variant class at two field values beside the built-in encoder, over three seeds: two
    comparisons, each paired with the built-in runs and naming its values, never pooled."""
    from minilm_jax.analysis.variants import compare_downstream, compare_variants
    from minilm_jax.report.variants import section_variants

    arch = "encoder_variants:GateInitEncoder"
    gaps = {0.5: (-10.0, -12.0, -8.0), 2.0: (5.0, 7.0, 9.0)}
    rows = []
    for seed in range(3):
        base = 300.0 + 5 * seed
        rows.append(_validation(f"b{seed}", f"/w/b{seed}", base, arch="roberta", seed=seed))
        for value, gap in gaps.items():
            rows.append(_validation(f"v{value}_{seed}", f"/w/v{value}_{seed}", base + gap[seed],
                                    arch=arch, seed=seed, fields={"gate_init": value}))
    found = sorted(compare_variants(rows), key=lambda c: c.fields)
    assert [c.fields for c in found] == ["gate_init=0.5", "gate_init=2.0"]
    for c, value in zip(found, (0.5, 2.0)):
        assert (c.baseline.n, c.variant.n) == (3, 3)
        assert c.gap.mean == pytest.approx(sum(gaps[value]) / 3)
    text = "\n".join(section_variants(found))
    assert "| variant | fields |" in text
    for c in found:
        assert f"| `{arch}` | `{c.fields}` | {POINT} (grid) | {c.baseline.text(2)} |" in text

    scored = [{**r, "kind": "downstream", "task": "sst2", "init": "pretrained",
               "checkpoint_step": 8, "score": 80.0 + (r.get("variant_fields") or {}).get(
                   "gate_init", 0.0), "score_n": 2}
              for r in rows]
    down = sorted(compare_downstream(scored), key=lambda d: d.fields)
    assert [(d.fields, d.gap.mean) for d in down] == [("gate_init=0.5", pytest.approx(0.5)),
                                                      ("gate_init=2.0", pytest.approx(2.0))]
    assert f"| `{arch}` | `gate_init=2.0` | {POINT} (grid) | `sst2` |" in "\n".join(
        section_variants(found, down))
