"""The recipes live in configs/: the library reads that folder (as ``minilm_jax.configs``), every
built-in task has its recipe there, a bad recipe field is named, and a wheel ships the recipes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from absl import flags
from ml_collections import config_flags

from conftest import REPO

from minilm_jax.configs import finetune as finetune_recipe
from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.configs import task_recipes
from minilm_jax.model.config import ConfigError
from minilm_jax.settings.command_line import apply_recipe, flatten
from minilm_jax.sweep.spec import finetune_run_config
from minilm_jax.tasks.registry import (TaskEntry, get_task, register_task, task_names,
                                      unregister_task)


def test_the_library_reads_the_configs_folder():
    for module in (pretrain_recipe, finetune_recipe, task_recipes):
        assert module.__file__ == str(REPO / "configs" / (module.__name__.rsplit(".", 1)[1] + ".py"))


def test_a_config_file_on_the_command_line_is_the_recipe_the_library_uses():
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
    flag_values(["test", f"--config={REPO / 'configs/pretrain.py'}:E32-H32-I64-L1-A2"])
    assert flag_values.config.to_dict() == pretrain_recipe.get_config("E32-H32-I64-L1-A2").to_dict()


def test_every_builtin_task_has_its_recipe_and_every_recipe_a_task():
    assert set(task_recipes.TASK_RECIPES) == set(task_names())
    for task in task_names():
        config = finetune_recipe.get_config(task)  # every recipe field exists
        for field, value in task_recipes.TASK_RECIPES[task].items():
            assert flatten(config)[field] == (list(value) if isinstance(value, tuple) else value)
    assert finetune_recipe.get_config("sst2").optim.peak_lr == 2e-4  # SPEC A6
    assert finetune_recipe.get_config("ag_news").data.train_per_class == 1000  # SPEC B


def test_both_recipes_give_the_optimizer_the_same_fields():
    assert set(pretrain_recipe.get_config().optim) == set(finetune_recipe.get_config().optim)
    assert pretrain_recipe.get_config().optim.schedule == "inverse_sqrt"  # SPEC A4


def test_a_bad_recipe_field_names_the_task_and_the_field():
    register_task(TaskEntry("toy_bad_recipe", "local", ("accuracy",), lambda t, d: None,
                            {"train.epoch": 3}))
    try:
        with pytest.raises(ConfigError, match="task toy_bad_recipe: recipe field 'train.epoch'"):
            finetune_recipe.get_config("toy_bad_recipe")
    finally:
        unregister_task("toy_bad_recipe")
    config = pretrain_recipe.get_config()
    apply_recipe(config, {"train.num_steps": 7, "mlm.mask_prob": 0.2}, "test")
    assert (config.train.num_steps, config.mlm.mask_prob) == (7, 0.2)


def test_an_edited_recipe_reaches_a_sweep(monkeypatch, tmp_path):
    """The registry holds configs/task_recipes.py's own recipes (no copies), and a sweep's
    fine-tuning runs start from configs/finetune.py: what a researcher edits there is what runs."""
    import ml_collections

    assert get_task("bbc_topic").recipe is task_recipes.TASK_RECIPES["bbc_topic"]
    monkeypatch.setitem(task_recipes.TASK_RECIPES["bbc_topic"], "train.epochs", 3)
    sweep = ml_collections.ConfigDict({"finetune_init": "both", "finetune_seeds": (),
                                       "finetune_overrides": (), "finetune_data_dir": ""})
    assert finetune_run_config(sweep, "bbc_topic", tmp_path).train.epochs == 3


def test_a_wheel_ships_the_recipes(tmp_path):
    """Built from a copy of the sources (a build writes build/ beside pyproject.toml)."""
    source = tmp_path / "src"
    for name in ("minilm_jax", "configs"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path), str(source)], check=True,
                   cwd=tmp_path, capture_output=True)
    (wheel,) = tmp_path.glob("minilm_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("__init__", "pretrain", "finetune", "task_recipes", "sweep"):
        assert f"minilm_jax/configs/{name}.py" in names
    assert not any(n.startswith("configs/") for n in names)
    assert "minilm_jax/corpus/morphemes.tsv" in names


def test_pyproject_lists_every_package():
    """setuptools installs the packages pyproject.toml lists: a new sub-package must be listed."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "minilm_jax").rglob("__init__.py")}
    assert listed == found | {"minilm_jax.configs"}
