"""A user's encoder variant (its own module, outside the library) as part of a run's identity: its
source is recorded, and a run resumed or read with that source edited is refused naming the file
(unless MINILM_ACCEPT_CODE_CHANGE=1, which is recorded)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from minilm_jax.errors import UserError
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.train.pretrainer import Pretrainer

from test_pretrain import small_config

VARIANT = '''
from flax import nnx
import jax.numpy as jnp
from minilm_jax.model.encoder import TransformerEncoder

GATE_INIT = 1.0


class ScaledEncoder(TransformerEncoder):
    def __init__(self, cfg, *, rngs):
        super().__init__(cfg, rngs=rngs)
        self.embedding_gate = nnx.Param(jnp.full((cfg.emb_dim,), GATE_INIT))

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        from minilm_jax.model.accounting import VariantCounts
        return VariantCounts(params=cfg.emb_dim)
'''


def test_an_edited_variant_module_is_refused_on_resume_and_by_readers(word_shards, tmp_path,
                                                                      monkeypatch):
    module = tmp_path / "my_variants_code.py"
    module.write_text(VARIANT)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    config = small_config(word_shards, **{"model.arch": "my_variants_code:ScaledEncoder",
                                          "train.num_steps": 4})
    Pretrainer(config, tmp_path / "run").run()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["model_code"]
    assert list(recorded) == ["my_variants_code"]
    assert recorded["my_variants_code"]["file"] == str(module)
    PretrainedRun.open(tmp_path / "run")  # unchanged: read as usual

    module.write_text(VARIANT.replace("GATE_INIT = 1.0", "GATE_INIT = 0.5"))
    with pytest.raises(UserError, match=r"the code of model\.arch=my_variants_code:ScaledEncoder "
                                        r"changed since .*my_variants_code \(.*my_variants_code\.py"
                                        r"\): sha256 \w+ -> \w+; restore it"):
        Pretrainer(config, tmp_path / "run").run()
    with pytest.raises(UserError, match="changed since"):
        PretrainedRun.open(tmp_path / "run")  # fine-tuning, evals and export read through it
    monkeypatch.setenv("MINILM_ACCEPT_CODE_CHANGE", "1")
    more = small_config(word_shards, **{"model.arch": "my_variants_code:ScaledEncoder",
                                        "train.num_steps": 8})
    Pretrainer(more, tmp_path / "run").run()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_code"]["my_variants_code"]["sha256"] != recorded["my_variants_code"]["sha256"]
    assert len(saved["model_code_changes"]) == 1 and "my_variants_code" in saved[
        "model_code_changes"][0]
    sys.modules.pop("my_variants_code", None)


def test_a_built_in_encoder_records_no_code():
    from minilm_jax.model.code_identity import arch_code

    assert arch_code("roberta") == {} and arch_code("bert_conv") == {}


def test_a_variant_counts_what_it_builds_and_a_wrong_declaration_is_refused(word_shards,
                                                                            tmp_path):
    """SwiGLU through the layer hook (tests/encoder_variants.py): its declared counts equal the
    built tree and agree with XLA's FLOP ratio within 2%; the run records them; with its FLOPs left
    out, the run is refused in one line before it writes; without a declaration, its counts are
    derived from the tree and the trace, equal to the declared ones."""
    from flax import nnx

    from minilm_jax.model import accounting
    from minilm_jax.model.count_check import encoder_matmul_flops, encoder_xla_flops
    from minilm_jax.model.models import build_mlm
    from minilm_jax.settings.model_fields import model_from_config

    config = small_config(word_shards, **{"model.arch": "encoder_variants:SwiGLUEncoder",
                                          "train.num_steps": 2})
    cfg = model_from_config(config)
    base = cfg.replace(arch="roberta")
    tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg)))
    assert tree == accounting.formula_params(cfg) != accounting.formula_params(base)
    traced = encoder_matmul_flops(cfg) / encoder_matmul_flops(base)
    counted = (accounting.forward_flops_per_sequence(cfg, num_predictions=0)
               / accounting.forward_flops_per_sequence(base, num_predictions=0))
    assert counted > 1.05 and abs(traced / counted - 1) < 0.02
    # XLA's total counts element-wise work too (exact GELU's erf): its ratio misleads at this width
    assert encoder_xla_flops(cfg) / encoder_xla_flops(base) < 1.05
    summary = Pretrainer(config, tmp_path / "swiglu").run()
    assert summary["params"]["total"] == tree.total
    assert summary["flops_per_sequence"]["paper"] == pytest.approx(
        accounting.paper_train_flops_per_sequence(base) + 3 * cfg.num_layers * 2 * cfg.max_len
        * cfg.hidden_dim * cfg.ffn_dim)
    bad = small_config(word_shards, **{"model.arch": "encoder_variants:MiscountedSwiGLUEncoder"})
    with pytest.raises(UserError, match=r"traced encoder does [\d,]+ matmul FLOPs"
                                        r".*counts_beyond_baseline"):
        Pretrainer(bad, tmp_path / "miscounted")
    assert not (tmp_path / "miscounted").exists()
    undeclared = cfg.replace(arch="encoder_variants:UncountedSwiGLUEncoder")
    assert accounting.counts_source(undeclared) == "derived"
    assert accounting.variant_counts(undeclared) == accounting.variant_counts(cfg)


def test_a_run_that_never_completed_a_step_takes_the_corrected_config(word_shards, tmp_path,
                                                                      capsys):
    """A variant that fails at its first step leaves a workdir with its config.json: the
    corrected command runs there (a note says the config is replaced) instead of being refused;
    a run that completed a step still refuses another config."""
    broken = small_config(word_shards, **{"model.arch": "encoder_variants:TrainingBugEncoder"})
    with pytest.raises(ValueError, match="training path"):
        Pretrainer(broken, tmp_path / "run").run()
    assert (tmp_path / "run" / "config.json").is_file()
    fixed = small_config(word_shards, **{"train.num_steps": 2})
    assert Pretrainer(fixed, tmp_path / "run").run()["status"] == "completed"
    assert "holds a run that never completed a step" in capsys.readouterr().out
    with pytest.raises(UserError, match="different config"):
        Pretrainer(small_config(word_shards, **{"train.num_steps": 3, "seed": 7}), tmp_path / "run")


def test_a_short_name_from_the_users_installed_package(monkeypatch):
    """An entry point of group minilm_jax.encoders names a variant; no library edit."""
    from importlib import metadata

    from minilm_jax.model import registry

    point = metadata.EntryPoint("swiglu", "encoder_variants:SwiGLUEncoder",
                                registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group=None: [point] if group == registry.ENTRY_POINT_GROUP else [])
    import encoder_variants

    assert registry.encoder_factory("swiglu") is encoder_variants.SwiGLUEncoder
    with pytest.raises(UserError, match=r"unknown encoder 'nope'; registered: .*'swiglu'"):
        registry.encoder_factory("nope")


def test_a_variant_field_is_set_on_the_command_line_recorded_and_gridded(word_shards, tmp_path):
    """--config.model.extra.gate_init (a field tests/encoder_variants.GateInitEncoder declares):
    accepted, recorded in config.json and the summary's model, built into the parameters; a field
    the variant does not declare is one error line; a sweep grids it."""
    import os
    import subprocess

    from test_pretrain import REPO, cli_args, cli_env
    from test_sweep import tiny_sweep

    from minilm_jax.settings.pretraining import validate_pretrain_config
    from minilm_jax.sweep.spec import expand

    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    arch = {"model.arch": "encoder_variants:GateInitEncoder"}
    args = cli_args(word_shards, tmp_path / "run", steps=2, fields=arch)
    done = subprocess.run([*args, "--config.model.extra.gate_init=0.5"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model.extra.gate_init"] == 0.5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"]["extra"] == {"gate_init": 0.5}
    run = PretrainedRun.open(tmp_path / "run")
    assert run.model.extra_value("gate_init") == 0.5
    bad = subprocess.run([*cli_args(word_shards, tmp_path / "bad", steps=2, fields=arch),
                          "--config.model.extra.rope_base=100"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: model.extra.rope_base: model.arch=encoder_variants:GateInitEncoder declares no "
        "such field (its fields: gate_init; a variant declares them as its class's config_fields)"]
    assert not (tmp_path / "bad").exists()

    sweep = tiny_sweep(word_shards)
    sweep.bases, sweep.ofat, sweep.groups = (), (), ()
    sweep.grid = ("E16-H16-I32-L1-A2",)
    sweep.pretrain_overrides = (*sweep.pretrain_overrides, "model.arch=encoder_variants:GateInitEncoder")
    sweep.grid_fields = ("model.extra.gate_init=0.5,2.0",)
    runs = expand(sweep)
    assert [r.config.model.extra.gate_init for r in runs] == [0.5, 2.0]
    assert all(validate_pretrain_config(r.config).extra_value("gate_init") in (0.5, 2.0)
               for r in runs)


def _validation_row(run: str, arch: str | None, seed: int, step: int, ppl: float,
                    flops_per_step: float) -> dict:
    import math

    row = {"kind": "validation", "run": run, "workdir": f"/w/{run}", "point": "E16-H16-I32-L1-A2",
           "group": "grid", "base": "", "factor": "", "factor_value": None,
           "params_total": 1000, "params_non_embedding": 500, "step": step,
           "flops_paper": flops_per_step * step, "flops_complete": flops_per_step * step,
           "loss": math.log(ppl), "perplexity": ppl, "pretrain_seed": seed}
    if arch:
        row["arch"] = arch
    return row


def test_the_report_pairs_each_variant_with_the_built_in_encoder_over_seeds():
    """Rows of a sweep whose grid varies model.arch: the variant's final perplexity against the
    built-in's of the same point and seed (paired gap, interval, p) and its FLOPs per step."""
    from minilm_jax.analysis.variants import compare_variants
    from minilm_jax.report.variants import section_variants

    rows = []
    for seed, (base, variant) in enumerate([(300.0, 280.0), (310.0, 285.0), (305.0, 290.0)]):
        for step, factor in ((4, 1.2), (8, 1.0)):
            rows.append(_validation_row(f"b_s{seed}", None, seed, step, base * factor, 1e6))
            rows.append(_validation_row(f"v_s{seed}", "my_lab:SwiGLU", seed, step,
                                        variant * factor, 1.076e6))
    found = compare_variants(rows)
    assert len(found) == 1
    c = found[0]
    assert (c.arch, c.baseline.n, c.variant.n) == ("my_lab:SwiGLU", 3, 3)
    assert c.gap.method == "paired t" and c.gap.n == 3
    assert c.gap.mean == pytest.approx(((280 - 300) + (285 - 310) + (290 - 305)) / 3)
    assert c.flops_ratio == pytest.approx(1.076)
    text = "\n".join(section_variants(found))
    assert "## Encoder variants against the built-in encoder" in text and "1.076x" in text
    assert compare_variants([r for r in rows if "arch" not in r]) == []  # no variant: no section

    from minilm_jax.analysis.variants import compare_downstream

    def downstream(run, arch, seed, step, score):
        row = {k: v for k, v in _validation_row(run, arch, seed, 8, 1.0, 1.0).items()
               if k not in ("step", "loss", "perplexity")}
        return {**row, "kind": "downstream", "task": "sst2", "init": "pretrained",
                "checkpoint_step": step, "score": score, "score_n": 4}
    scored = [downstream(f"b_s{s}", None, s, 8, 80.0 + s) for s in range(3)]
    scored += [downstream(f"v_s{s}", "my_lab:SwiGLU", s, 8, 82.0 + 2 * s) for s in range(3)]
    scored += [downstream("v_s0", "my_lab:SwiGLU", 0, 4, 10.0)]  # an earlier snapshot: not used
    scored += [{**downstream("v_s1", "my_lab:SwiGLU", 1, 8, 0.0), "init": "random"}]  # a twin
    (d,) = compare_downstream(scored)
    assert (d.task, d.baseline.n, d.variant.n, d.finetune_seeds) == ("sst2", 3, 3, 4)
    assert d.gap.method == "paired t" and d.gap.mean == pytest.approx((2 + 3 + 4) / 3)
    text = "\n".join(section_variants(found, [d]))
    assert "Downstream, pre-trained init" in text and "`sst2`" in text


def test_normalisation_and_position_hooks_count_and_run():
    """RMSNorm through make_norm and no position table (position_table = False): the declared
    counts match the tree, the model runs, and no position table is built."""
    import jax.numpy as jnp
    from flax import nnx

    from minilm_jax.model import accounting
    from minilm_jax.model.count_check import check_declared_counts
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point("E16-H16-I32-L2-A2-V300", arch="encoder_variants:RMSNormNoPositionEncoder")
    check_declared_counts(cfg)
    model = build_mlm(cfg)
    assert not hasattr(model.encoder, "position_embeddings")
    assert accounting.count_params(model) == accounting.formula_params(cfg)
    logits = model(jnp.full((2, 8), 7, jnp.int32), jnp.zeros((2, 3), jnp.int32))
    assert logits.shape == (2, 3, 300) and bool(jnp.all(jnp.isfinite(logits)))
    assert isinstance(model.encoder.layers[0].ffn_norm, nnx.RMSNorm)


def test_swiglu_and_rotary_fields_are_counted_built_and_gridded(word_shards):
    """The two variants' own fields: SwiGLU's width (ffn_scale) moves its declared counts with the
    tree it builds; rotary's base (rope_base) changes its scores, which depend on the offset
    between positions only; a sweep grids each field."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from encoder_variants import rotate
    from test_sweep import tiny_sweep

    from minilm_jax.model import accounting
    from minilm_jax.model.count_check import check_declared_counts
    from minilm_jax.model.models import build_mlm
    from minilm_jax.model.sizes import resolve_point
    from minilm_jax.settings.pretraining import validate_pretrain_config
    from minilm_jax.sweep.spec import expand

    swiglu = resolve_point("E16-H16-I48-L2-A2-V300", arch="encoder_variants:SwiGLUEncoder")
    narrow = swiglu.replace(extra=(("ffn_scale", 2 / 3),))
    for cfg in (swiglu, narrow):
        check_declared_counts(cfg)
        assert accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg))) == \
            accounting.formula_params(cfg)
    from minilm_jax.model.config import ConfigError
    from minilm_jax.points import table

    listed = table(["E16-H16-I48-L2-A2-V300"], "encoder_variants:SwiGLUEncoder",
                   [f"ffn_scale={2 / 3}"])  # minilm-points --arch ... --extra ffn_scale=...
    assert f"{accounting.formula_params(narrow).total:,}" in listed
    with pytest.raises(ConfigError, match="declares no such field"):
        table(["E16-H16-I48-L2-A2-V300"], "encoder_variants:SwiGLUEncoder", ["rope_base=1"])
    base = swiglu.replace(arch="roberta")
    assert abs(accounting.formula_params(narrow).total / accounting.formula_params(base).total
               - 1) < 0.01 < accounting.formula_params(swiglu).total / accounting.formula_params(
                   base).total - 1  # 2/3 of the width: about the baseline's parameters

    q, k = jax.random.normal(jax.random.key(0), (2, 1, 12, 1, 8))
    def scores(base_value, shift, offset=3):  # query at offset + shift, key at shift
        rq, rk = (rotate(jnp.repeat(x, 12, axis=1), base_value) for x in (q, k))
        return jnp.einsum("btad,btad->bta", rq[:, offset + shift:offset + shift + 1],
                          rk[:, shift:shift + 1])
    assert jnp.allclose(scores(10000.0, 0), scores(10000.0, 5), atol=1e-5)  # relative only
    assert not jnp.allclose(scores(10000.0, 0), scores(10000.0, 0, offset=0), atol=1e-3)
    assert not jnp.allclose(scores(10000.0, 0), scores(100.0, 0), atol=1e-3)

    for arch, grid in (("RotaryEncoder", "model.extra.rope_base=100,10000"),
                       ("SwiGLUEncoder", "model.extra.ffn_scale=0.6667,1.0")):
        sweep = tiny_sweep(word_shards)
        sweep.bases, sweep.ofat, sweep.groups = (), (), ()
        sweep.grid, sweep.grid_fields = ("E16-H16-I32-L1-A2",), (grid,)
        sweep.pretrain_overrides = (*sweep.pretrain_overrides,
                                    f"model.arch=encoder_variants:{arch}")
        runs = expand(sweep)
        name = grid.split("=")[0].rsplit(".", 1)[-1]
        values = [validate_pretrain_config(r.config).extra_value(name) for r in runs]
        assert values == [float(v) for v in grid.split("=")[1].split(",")]
