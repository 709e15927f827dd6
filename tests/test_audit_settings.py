"""Audit of the run settings and the model-size grammar (``minilm_jax/settings/``: override
parsing, ranges, recipes, the masking cap, a config's model; ``model/sizes.py``,
``model/config.py``, ``model/registry.py``), 2026-11-29: 45 mutants planted, 25 survived the
owning tests. Each test here catches survivors, its numbers from a hand count, a hand table of the
points' sizes or scipy's binomial, never from the module's own constants."""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections
import numpy as np
import pytest
from scipy import stats

from minilm_jax.configs import finetune as finetune_recipe
from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.sizes import NAMED_POINTS, resolve_point, with_variant_defaults
from minilm_jax.settings import finetuning, pretraining
from minilm_jax.settings.allowed import range_problems
from minilm_jax.settings.command_line import (VARIANT_ASSIGNMENTS, apply_override,
                                              apply_variant_fields, check_override,
                                              check_overrides, parse_value, take_variant_fields)
from minilm_jax.settings.mlm_cap import effective_max_predictions, mask_cap_problems
from minilm_jax.settings.model_fields import changed_model_fields, take_checkpoint_arch


# ------------------------------------------------------------------ parsing an override
@pytest.mark.parametrize("text, want", [("true", True), ("1", True), ("YES", True),
                                        ("false", False), ("0", False), ("no", False)])
def test_a_boolean_field_reads_one_and_zero_as_well_as_words(text: str, want: bool) -> None:
    assert parse_value(text, not want) is want


def test_list_elements_take_the_type_of_the_fields_first_element() -> None:
    floats = parse_value("1,2", (0.5,))  # a float list: 1 is 1.0
    assert floats == (1.0, 2.0) and [type(v) for v in floats] == [float, float]
    texts = parse_value("3, 4", ("dev",))  # a text list: "3" stays text
    assert texts == ("3", "4")
    assert parse_value("7,8", (1,)) == (7, 8)


def test_point_only_labels_the_size_and_cannot_be_overridden() -> None:
    config = pretrain_recipe.get_config("paper-1.25m")
    with pytest.raises(ConfigError, match="^point cannot be overridden"):
        check_override(config, "point", "bert6")
    with pytest.raises(ConfigError):
        apply_override(config, "point=bert6")
    assert (config.point, config.model.hidden_dim) == ("paper-1.25m", 32)


def test_a_comma_list_on_the_command_line_is_rewritten_as_a_tuple_literal() -> None:
    argv = ["--config=finetune:sst2", "--config.train.seeds=3,4", "--config.train.epochs=2",
            "--config.data.eval_splits=(\"dev\",)"]
    assert check_overrides(argv) == [argv[0], "--config.train.seeds=(3, 4)", argv[2], argv[3]]


# ------------------------------------------------------------------ a variant's own fields
class _AuditVariant:
    """Stands for a user's encoder class: only its declared fields are read here."""

    config_fields = {"alpha": 2.0, "beta": 3}


@pytest.fixture
def audit_variant() -> Iterator[str]:
    from minilm_jax.model.registry import ENCODERS, register_encoder

    register_encoder("audit_c_variant", _AuditVariant)
    try:
        yield "audit_c_variant"
    finally:
        ENCODERS.pop("audit_c_variant")


def test_each_command_takes_only_its_own_variant_fields() -> None:
    kept = take_variant_fields(["--config.model.extra.alpha=4", "--workdir=w",
                                "--", "--config.model.extra.beta=9"])
    assert kept == ["--workdir=w", "--", "--config.model.extra.beta=9"]
    assert VARIANT_ASSIGNMENTS == [("alpha", "4")]
    take_variant_fields(["--config.model.extra.beta=5"])  # the next command's
    assert VARIANT_ASSIGNMENTS == [("beta", "5")]
    VARIANT_ASSIGNMENTS.clear()


def test_fine_tuning_sets_only_the_assigned_variant_fields(audit_variant: str) -> None:
    """A fine-tuning config's defaults are its checkpoint's values: only what is assigned is
    set; pre-training fills every declared field at its default."""
    tune = finetune_recipe.get_config("sst2")
    tune.model.arch = audit_variant
    apply_variant_fields(tune, [("beta", "5")])
    assert tune.model.extra.to_dict() == {"beta": 5}
    train = pretrain_recipe.get_config("paper-1.25m")
    train.model.arch = audit_variant
    apply_variant_fields(train, [("beta", "5")])
    assert train.model.extra.to_dict() == {"alpha": 2.0, "beta": 5}


def test_a_variants_given_field_is_kept_over_its_default(audit_variant: str) -> None:
    cfg = with_variant_defaults(ModelConfig(arch=audit_variant, extra=(("alpha", 5.0),)))
    assert cfg.extra == (("alpha", 5.0), ("beta", 3))


# ------------------------------------------------------------------ ranges
def test_a_number_field_refuses_a_boolean_and_an_integer_field_a_fraction() -> None:
    problems = range_problems({"seed": 2.5, "train": {"batch_size": True, "num_steps": 3}},
                              pretraining.PRETRAIN_RULES)
    assert [p.split(":")[0] for p in problems] == ["seed=2.5", "train.batch_size=True"]
    assert range_problems({"seed": 2, "train": {"batch_size": 1}},
                          pretraining.PRETRAIN_RULES) == []


def test_a_cap_of_every_position_is_accepted_one_more_refused() -> None:
    config = pretrain_recipe.get_config("paper-1.25m")
    config.mlm.max_predictions = 128  # model.max_len: every position may be predicted
    pretraining.validate_pretrain_config(config)
    config.mlm.max_predictions = 129
    with pytest.raises(ConfigError, match=r"^mlm\.max_predictions=129"):
        pretraining.validate_pretrain_config(config)


def test_fine_tuning_max_len_six_is_the_smallest_accepted() -> None:
    """A sentence pair takes 4 special tokens and one token of each text: 6."""
    config = finetune_recipe.get_config("sst2")
    config.data.max_len = 6
    finetuning.validate_finetune_config(config)
    config.data.max_len = 5
    with pytest.raises(ConfigError, match=r"^data\.max_len=5"):
        finetuning.validate_finetune_config(config)


# ------------------------------------------------------------------ the masking cap
def _scipy_lost(mask_prob: float, max_len: int) -> np.ndarray:
    """Expected share of the selected positions past each cap 0 .. max_len."""
    k = np.arange(max_len + 1)
    pmf = stats.binom.pmf(k, max_len, mask_prob)
    return np.array([np.sum(np.clip(k - cap, 0, None) * pmf) for cap in k]) / (max_len * mask_prob)


@pytest.mark.parametrize("mask_prob, max_len", [(0.15, 128), (0.4, 64), (0.5, 128)])
def test_the_caps_keep_the_documented_shares(mask_prob: float, max_len: int) -> None:
    """docs: an explicit cap may lose at most 0.5% of the selected positions, the derived one at
    most 1e-4 (scipy's binomial gives the smallest caps that do)."""
    lost = _scipy_lost(mask_prob, max_len)
    accepted = int(np.flatnonzero(lost <= 5e-3)[0])
    derived = int(np.flatnonzero(lost <= 1e-4)[0])
    fields = {"model.max_len": max_len, "mlm.mask_prob": mask_prob}
    assert mask_cap_problems({**fields, "mlm.max_predictions": accepted}) == []
    (line,) = mask_cap_problems({**fields, "mlm.max_predictions": accepted - 1})
    assert line.endswith(f"(derived: {derived}) or >= {accepted}"), line
    mlm = ml_collections.ConfigDict({"mask_prob": mask_prob, "max_predictions": 0})
    assert effective_max_predictions(mlm, max_len) == derived
    mlm.max_predictions = accepted - 1  # an explicit cap is the cap, refused or not
    assert effective_max_predictions(mlm, max_len) == accepted - 1


# ------------------------------------------------------------------ steps and resumption
def test_a_tiny_snapshot_fraction_saves_step_one() -> None:
    config = pretrain_recipe.get_config("paper-1.25m")
    config.train.num_steps, config.train.steps_per_dispatch = 100, 1
    config.checkpoint.keep_fractions = (0.004, 0.25, 1.0)  # round(0.4) = 0 -> at least step 1
    assert pretraining.snapshot_steps(config) == (1, 25, 100)


def test_the_fields_a_resumed_run_may_change() -> None:
    assert "train.num_steps" in pretraining.RESUMABLE_FIELDS  # a run may be trained longer
    assert "train.num_steps" not in finetuning.RESUMABLE_FIELDS
    random = set(finetuning.resumable_fields("random"))
    pretrained = set(finetuning.resumable_fields("pretrained"))
    assert random - pretrained == {"init.checkpoint", "init.which"} and pretrained < random


# ------------------------------------------------------------------ a fine-tuning run's model
def test_the_model_fields_set_away_from_the_recipe_leave_out_the_architecture() -> None:
    config = finetune_recipe.get_config("sst2")
    config.model.arch, config.model.pooler = "bert", "weighted_sum"
    config.model.hidden_dropout = 0.0
    assert changed_model_fields(config) == {"pooler": "weighted_sum", "hidden_dropout": 0.0}


@pytest.mark.parametrize("checkpoint_arch, recorded", [
    ("bert", "roberta"),  # a library encoder: the point's (paper-1.25m: roberta)
    (None, "roberta"),
    ("my_lab.encoders:Gated", "my_lab.encoders:Gated"),  # a user's variant: its own
])
def test_the_recipes_empty_arch_resolves_to_the_checkpoints_or_the_points(
        checkpoint_arch: str | None, recorded: str) -> None:
    config = finetune_recipe.get_config("sst2")
    assert take_checkpoint_arch(config, checkpoint_arch) is None
    assert config.model.arch == recorded


# ------------------------------------------------------------------ the points
# name -> (E, H, I, L, A, V), by hand from SPEC A5 / B
STUDY_A = {"paper-1.25m": (32, 32, 128, 1, 2, 19010), "base-small": (32, 32, 128, 2, 2, 19010),
           "base-large": (256, 256, 1024, 8, 8, 19010), "iso1-deep": (32, 32, 128, 2, 2, 19010),
           "iso1-wide": (32, 32, 256, 1, 2, 19010), "iso2-deep": (64, 128, 1024, 4, 8, 19010),
           "iso2-wide": (128, 128, 128, 1, 1, 19010), "iso3-deep": (64, 32, 128, 8, 1, 19010),
           "iso3-wide": (64, 32, 256, 4, 1, 19010)}


def _sizes(cfg: ModelConfig) -> tuple[int, ...]:
    return (cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.num_layers, cfg.num_heads,
            cfg.vocab_size)


def test_every_named_point_resolves_to_its_sizes_and_fields() -> None:
    bert = {f"bert1-a{a}": (a, 1) for a in (8, 12, 24)} | {"bert6": (12, 6)}
    conv = {f"bert1-a{a}-conv{n}x{c}": (a, n, c) for a in (8, 12, 24) for n in (2, 3)
            for c in (32, 64)}
    assert set(NAMED_POINTS) == set(STUDY_A) | set(bert) | set(conv)
    for name, sizes in STUDY_A.items():
        cfg = resolve_point(name)
        assert _sizes(cfg) == sizes and (cfg.arch, cfg.pad_id, cfg.position_offset) == (
            "roberta", 1, 2), name
        assert (cfg.init, cfg.layer_norm_eps, cfg.num_positions) == ("paper", 1e-5, 130)
    for name, heads, layers, arch, convs in (
            [(n, a, n_layers, "bert", (0, 0)) for n, (a, n_layers) in bert.items()]
            + [(n, a, 1, "bert_conv", (k, c)) for n, (a, k, c) in conv.items()]):
        cfg = resolve_point(name)
        h = 64 * heads
        assert _sizes(cfg) == (h, h, 4 * h, layers, heads, 30522), name  # WordPiece vocabulary
        assert (cfg.arch, cfg.conv_layers, cfg.conv_channels) == (arch, *convs), name
        assert (cfg.pad_id, cfg.position_offset, cfg.num_positions, cfg.init) == (
            0, 0, 128, "bert"), name
        assert (cfg.layer_norm_eps, cfg.embed_projection) == (1e-12, False), name


def test_model_config_bounds_at_their_edges() -> None:
    ModelConfig(attention_dropout=0.99)
    with pytest.raises(ConfigError, match=r"^model\.attention_dropout"):
        ModelConfig(attention_dropout=1.0)
    ModelConfig(attention_impl="flash", dropout_rng="threefry", attention_dropout=0.0)
    with pytest.raises(ConfigError, match=r"^model\.dropout_rng"):
        ModelConfig(attention_impl="flash", dropout_rng="threefry", attention_dropout=0.1)
    ModelConfig(embed_projection=False, emb_dim=32, hidden_dim=32)
    with pytest.raises(ConfigError, match=r"^model\.embed_projection"):
        ModelConfig(embed_projection=False, emb_dim=16, hidden_dim=32)
    assert ModelConfig(max_len=64, position_offset=3).num_positions == 67


def test_the_registry_names_each_encoder_and_what_is_the_librarys() -> None:
    from minilm_jax.model.encoder import ConvFrontEncoder, TransformerEncoder
    from minilm_jax.model.registry import encoder_factory, is_library_encoder

    assert [encoder_factory(a) for a in ("roberta", "bert", "bert_conv")] == [
        TransformerEncoder, TransformerEncoder, ConvFrontEncoder]
    assert encoder_factory("minilm_jax.model.encoder:ConvFrontEncoder") is ConvFrontEncoder
    assert is_library_encoder("minilm_jax.model.encoder:TransformerEncoder")
    assert not is_library_encoder("my_lab.encoders:Gated")  # nothing imported

