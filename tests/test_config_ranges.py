"""Every config field is checked for range before anything is written: one table per recipe
(``settings.pretraining.PRETRAIN_RULES``, ``settings.finetuning.FINETUNE_RULES``, shared sections in
``settings.allowed.SHARED_RULES``), one error line naming the field, its value and the allowed range;
the shipped recipes and sweeps pass; a tuple field given twice on the command line keeps the last
value, like a scalar (issue 24)."""

from __future__ import annotations

import math
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from conftest import REPO, shared_path

from minilm_jax.settings.command_line import last_override_wins
from minilm_jax.configs import finetune as finetune_recipe
from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.settings.finetuning import FINETUNE_RULES, validate_finetune_config
from minilm_jax.model.config import ConfigError
from minilm_jax.model.sizes import NAMED_POINTS
from minilm_jax.settings.allowed import SHARED_RULES
from minilm_jax.settings.command_line import apply_recipe, flatten
from minilm_jax.settings.pretraining import PRETRAIN_RULES, validate_pretrain_config
from minilm_jax.tasks.registry import task_names

from test_workflow import run

BAD_PRETRAIN = [
    ("mlm.mask_prob", 0.0), ("mlm.mask_prob", -0.5), ("mlm.mask_prob", 1.5), ("mlm.mask_prob", 1.0),
    ("mlm.mask_prob", math.nan),
    ("mlm.max_predictions", -1), ("mlm.max_predictions", 129),  # > model.max_len=128
    ("mlm.mask_id", -1), ("mlm.mask_id", 19010),  # model.vocab_size=19010
    ("mlm.never_mask_ids", (0, -1)), ("mlm.never_mask_ids", (0, 99999)),
    ("mlm.random_token_min_id", -1), ("mlm.random_token_min_id", 19010),
    ("seed", -1), ("data.prefetch", 0),
    ("train.batch_size", 0), ("train.num_steps", 0), ("train.grad_accum", 0),
    ("train.steps_per_dispatch", 0), ("train.log_every", 0), ("train.peak_flops", -1.0),
    ("eval.every_steps", 0), ("eval.per_decade", -1), ("eval.batch_size", 0),
    ("eval.max_sequences", -1), ("eval.seed", -1),
    ("checkpoint.keep_fractions", (0.0,)), ("checkpoint.keep_fractions", (0.5, 1.5)),
    # the shared sections
    ("optim.peak_lr", 0.0), ("optim.peak_lr", -1e-3), ("optim.peak_lr", math.inf),
    ("optim.b1", 1.0), ("optim.b1", -0.1), ("optim.b2", 1.0), ("optim.eps", 0.0),
    ("optim.weight_decay", -0.01), ("optim.warmup_steps", -2), ("optim.end_lr_fraction", -0.1),
    ("optim.end_lr_fraction", 1.5), ("optim.clip_norm", -1.0),
    ("checkpoint.every_steps", 0), ("checkpoint.every_minutes", 0.0), ("checkpoint.keep", 0),
    ("mesh.data", 0), ("mesh.data", -2), ("mesh.fsdp", 0),
    ("distributed.num_processes", -1), ("distributed.process_id", -2),
    # model fields (ModelConfig's own checks)
    ("model.max_len", 0), ("model.hidden_dropout", 1.0), ("model.layer_norm_eps", 0.0),
    ("model.type_vocab_size", 0), ("model.pad_id", -1), ("model.pad_id", 19010),
    ("model.conv_layers", -1), ("model.conv_channels", -1),
]

BAD_FINETUNE = [
    ("data.max_len", 0), ("data.max_len", 5), ("data.max_train_examples", -1),
    ("data.max_eval_examples", -1), ("data.train_per_class", -1), ("data.eval_per_class", -1),
    ("data.sample_seed", -1), ("data.validation_seed", -1),
    ("data.holdout_fraction", 0.0), ("data.holdout_fraction", 1.0),
    ("data.validation_fraction", 0.0), ("data.validation_fraction", 1.0),
    ("data.pad_buckets", -1),
    ("train.seeds", ()), ("train.seeds", (0, 0)), ("train.seeds", (-1,)),
    ("train.batch_size", 0), ("train.epochs", 0), ("train.early_stopping_patience", -1),
    ("train.steps_per_dispatch", 0), ("train.log_every", 0),
    ("eval.batch_size", 0), ("eval.every_epochs", 0),
    ("optim.peak_lr", 0.0), ("optim.warmup_steps", -2), ("optim.eps", 0.0),
    ("checkpoint.keep", 0), ("checkpoint.every_minutes", -1.0), ("mesh.fsdp", 0),
    ("distributed.process_id", -2),
]


def _with(config, field, value):
    apply_recipe(config, {field: value}, "test")
    return config


@pytest.mark.parametrize("field, value", BAD_PRETRAIN)
def test_a_pretraining_field_out_of_range_is_refused_naming_it(field, value):
    config = _with(pretrain_recipe.get_config("paper-1.25m"), field, value)
    with pytest.raises(ConfigError) as err:
        validate_pretrain_config(config)
    message = str(err.value)
    assert field in message and "\n" not in message, message


@pytest.mark.parametrize("field, value", BAD_FINETUNE)
def test_a_fine_tuning_field_out_of_range_is_refused_naming_it(field, value):
    config = _with(finetune_recipe.get_config("sst2"), field, value)
    with pytest.raises(ConfigError) as err:
        validate_finetune_config(config)
    message = str(err.value)
    assert message.startswith(f"{field}=") and "\n" not in message, message


def test_the_message_names_the_field_the_value_and_the_range():
    config = _with(pretrain_recipe.get_config(), "mlm.mask_prob", 0.0)
    with pytest.raises(ConfigError, match=r"^mlm\.mask_prob=0\.0: must be in \(0, 1\)"):
        validate_pretrain_config(config)
    config = _with(pretrain_recipe.get_config(), "mlm.mask_id", 19010)
    with pytest.raises(ConfigError, match=r"^mlm\.mask_id=19010: must be an integer in "
                                          r"\[0, model\.vocab_size=19010\)"):
        validate_pretrain_config(config)
    config = _with(pretrain_recipe.get_config(), "checkpoint.keep_fractions", (0.5, 1.5))
    with pytest.raises(ConfigError, match=r"^checkpoint\.keep_fractions=\(0\.5, 1\.5\): each must "
                                          r"be in \(0, 1\], not 1\.5"):
        validate_pretrain_config(config)
    # every problem at once, on one line
    config = _with(pretrain_recipe.get_config(), "optim.b2", 1.0)
    _with(config, "train.num_steps", 0)
    with pytest.raises(ConfigError) as err:
        validate_pretrain_config(config)
    assert "optim.b2=1.0" in str(err.value) and "train.num_steps=0" in str(err.value)


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_where_zero_means_something_it_is_accepted(recipe):
    config = (pretrain_recipe.get_config() if recipe == "pretrain"
              else finetune_recipe.get_config("sst2"))
    zeros = {"optim.weight_decay": 0.0, "optim.clip_norm": 0.0, "optim.end_lr_fraction": 0.0,
             "optim.b1": 0.0, "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0,
             "distributed.process_id": -1, "distributed.num_processes": 0, "mesh.data": -1}
    if recipe == "pretrain":
        zeros.update({"optim.schedule": "linear", "optim.warmup_steps": 0, "eval.per_decade": 0,
                      "eval.max_sequences": 0, "train.peak_flops": 0.0, "seed": 0,
                      "mlm.mask_prob": 0.999, "mlm.max_predictions": 0})  # 0: derived
        validate_pretrain_config(_with(config, "optim.end_lr_fraction", 1.0))
    else:
        zeros.update({"optim.warmup_steps": 0, "data.pad_buckets": 0, "data.max_train_examples": 0,
                      "train.early_stopping_patience": 0, "train.seeds": (0,)})
    apply_recipe(config, zeros, "test")
    (validate_pretrain_config if recipe == "pretrain" else validate_finetune_config)(config)


def test_inverse_sqrt_needs_a_warmup_it_divides_by():
    """``peak * min(s/W, sqrt(W/s))`` is 0 at every step for W=0: a run that never learns."""
    config = _with(pretrain_recipe.get_config(), "optim.warmup_steps", 0)
    with pytest.raises(ConfigError, match=r"optim\.warmup_steps=0: .*inverse_sqrt"):
        validate_pretrain_config(config)
    validate_pretrain_config(_with(config, "optim.warmup_steps", -1))


def test_a_process_id_must_be_below_the_process_count():
    config = finetune_recipe.get_config("sst2")
    apply_recipe(config, {"distributed.num_processes": 2, "distributed.process_id": 2}, "test")
    with pytest.raises(ConfigError, match=r"distributed\.process_id=2: .*num_processes=2"):
        validate_finetune_config(config)
    apply_recipe(config, {"distributed.process_id": 1}, "test")
    validate_finetune_config(config)  # the last of two


@pytest.mark.parametrize("process_id", [0, 3])
def test_a_process_id_with_a_detected_process_count_is_accepted(process_id):
    """``num_processes=0`` means the cluster says how many: an explicit id is not checked
    against 0 (it was: every id refused as "below num_processes=0")."""
    config = finetune_recipe.get_config("sst2")
    apply_recipe(config, {"distributed.num_processes": 0, "distributed.process_id": process_id},
                 "test")
    validate_finetune_config(config)


@pytest.mark.parametrize("recipe, rules", [("pretrain", PRETRAIN_RULES),
                                           ("finetune", FINETUNE_RULES)])
def test_every_number_of_both_recipes_has_a_range(recipe, rules):
    """A new numeric field needs a decision: a rule in the recipe's table (model fields are
    ModelConfig's)."""
    config = (pretrain_recipe.get_config() if recipe == "pretrain"
              else finetune_recipe.get_config("sst2"))
    numeric = [f for f, v in flatten(config).items() if not f.startswith("model.") and (
        (isinstance(v, (int, float)) and not isinstance(v, bool))
        or (isinstance(v, list) and f not in ("data.eval_splits", "model_overrides",
                                                "population.schedule")))]
    assert numeric and sorted(f for f in numeric if f not in rules) == []
    assert set(SHARED_RULES) <= set(rules) | {"checkpoint.keep_fractions"}


def test_the_shipped_recipes_and_sweeps_validate(tmp_path):
    from minilm_jax.sweep import expand
    from minilm_jax.sweep.layout import finetune_jobs

    for point in NAMED_POINTS:
        validate_pretrain_config(pretrain_recipe.get_config(point))
    for task in task_names():
        validate_finetune_config(finetune_recipe.get_config(task))
    sys.path.insert(0, str(REPO / "configs"))
    try:
        import sweep as sweep_configs
    finally:
        sys.path.remove(str(REPO / "configs"))
    for name, make in sweep_configs.SWEEPS.items():
        sweep = make()
        sweep.data_root = sweep.data_root or str(tmp_path / "data")
        sweep.finetune_data_dir = sweep.finetune_data_dir or str(tmp_path / "glue")
        runs = expand(sweep)  # validates every pre-training run
        assert runs, name
        for run_ in runs:
            validate_pretrain_config(run_.config)
        for job in finetune_jobs(sweep, runs[0], tmp_path):
            validate_finetune_config(job.config)


# ------------------------------------------------------------------------ the command line
def _parse(argv: list[str]):
    """``argv`` through the command-line plumbing and an ml-collections config flag."""
    argv = [argv[0], *last_override_wins(argv[1:])]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_a_tuple_field_given_twice_keeps_the_last_value_like_a_scalar():
    config = _parse(["prog", f"--config={REPO / 'configs/finetune.py'}:sst2",
                     "--config.train.seeds=0,1", "--config.train.epochs=3",
                     "--config.train.seeds=2,3", "--config.train.epochs=4",
                     "--config.data.eval_splits", "dev", "--config.data.eval_splits=test",
                     "--config.train.progress", "--noconfig.train.progress"])
    assert tuple(config.train.seeds) == (2, 3) and config.train.epochs == 4
    assert tuple(config.data.eval_splits) == ("test",) and config.train.progress is False
    once = _parse(["prog", f"--config={REPO / 'configs/finetune.py'}:sst2",
                   "--config.train.seeds=5"])
    assert tuple(once.train.seeds) == (5,)


def test_only_earlier_copies_of_a_repeated_override_are_dropped():
    argv = ["--config=configs/pretrain.py:paper-1.25m", "--config.mlm.never_mask_ids", "0,1",
            "--workdir=w", "--config.mlm.never_mask_ids=(0, 1, 2)", "--config.seed=1",
            "--", "--config.seed=2"]
    assert last_override_wins(argv) == ["--config=configs/pretrain.py:paper-1.25m", "--workdir=w",
                                        "--config.mlm.never_mask_ids=(0, 1, 2)", "--config.seed=1",
                                        "--", "--config.seed=2"]
    # the config file as a separate argument: a bare boolean takes no value, so the next
    # argument is an override of its own (and its repeat is dropped)
    argv = ["--config", str(REPO / "configs/pretrain.py") + ":paper-1.25m",
            "--config.train.progress", "--config.seed=1", "--config.seed=3"]
    assert last_override_wins(argv) == argv[:3] + ["--config.seed=3"]


def test_pretraining_with_mask_prob_zero_is_one_error_line_and_writes_nothing(tmp_path):
    """Also: a repeated tuple override keeps its last value on the pre-training command (the
    first, 1.5, would be refused too)."""
    proc = run("minilm_jax.pretrain", "--config=configs/pretrain.py:paper-1.25m",
               f"--workdir={tmp_path / 'w'}", "--config.checkpoint.keep_fractions=1.5",
               "--config.checkpoint.keep_fractions=0.5", "--config.mlm.mask_prob=0")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: mlm.mask_prob=0.0: must be in (0, 1)"), proc.stderr
    assert not (tmp_path / "w").exists()


def test_fine_tuning_with_max_len_zero_is_one_error_line_and_writes_nothing(tmp_path):
    """Was a 35-line traceback from the encoder of task examples. Also: ``train.seeds`` given twice
    keeps the last value (concatenated, (0, 0, 0, 1) would be refused as repeated seeds)."""
    (tmp_path / "vocab.txt").write_text("\n".join(
        ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]", "the", "a", "film", "good", "bad"]) + "\n")
    proc = run("minilm_jax.finetune", "--config=configs/finetune.py:sst2",
               f"--workdir={tmp_path / 'w'}", "--config.init.mode=random",
               f"--config.data.tokenizer={tmp_path / 'vocab.txt'}",
               f"--config.data.dir={shared_path('glue')}", "--config.data.max_train_examples=40",
               "--config.data.max_eval_examples=20", "--config.train.progress=False",
               "--config.train.seeds=0,0", "--config.train.seeds=0,1", "--config.data.max_len=0")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data.max_len=0: must be an integer >= 6"), proc.stderr
    assert not (tmp_path / "w").exists()
