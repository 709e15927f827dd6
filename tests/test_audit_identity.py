"""Audit of the run-identity and records code by mutation testing: each test pins one decision
that a plausible one-line bug changed without any other test failing (a digest that leaves a field
out, a key too loose to tell two programs apart, a seal check skipped, a reader taking an unsealed
or older checkpoint, a permutation p-value without its correction, a finished population judged
by its status alone). Unit tests: nothing is trained."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest

from minilm_jax.errors import UserError


def test_the_examples_digest_holds_each_examples_second_text():
    """examples_digest left ``text_b`` out: an edited second sentence of a pair reused."""
    from minilm_jax.run_identity import examples_digest
    from minilm_jax.tasks.base import Example, TaskSpec
    from minilm_jax.tasks.loaders import TaskData

    def digest(second: str) -> dict:
        spec = TaskSpec("pairs", 2, ("no", "yes"), ("accuracy",), ("train",))
        rows = [Example(f"premise {i}", second if i == 1 else f"hyp {i}", i % 2, f"p/{i}")
                for i in range(4)]
        return examples_digest(TaskData(spec, rows[:2], {}, validation=rows[2:]))

    before, after = digest("hyp 1"), digest("an edited hypothesis")
    assert before["rows"] == after["rows"] == {"train": 2, "validation": 2}
    assert before["sha256"] != after["sha256"]


def test_a_quiet_default_away_from_its_default_is_recorded():
    """without_quiet_defaults dropped ``init.partial`` whatever its value: a partial run
    recorded as a full one."""
    from minilm_jax.run_identity import without_quiet_defaults

    assert without_quiet_defaults({"init.partial": True, "seed": 0}) == {
        "init.partial": True, "seed": 0}
    assert without_quiet_defaults({"init.partial": False, "seed": 0}) == {"seed": 0}


@pytest.mark.parametrize("field, value", [("train.num_steps", 7), ("eval.every_steps", 3),
                                          ("eval.per_decade", 2), ("eval.test_at_end", False)])
def test_a_sweep_unit_with_other_steps_or_evaluation_points_is_another_run(field, value):
    """PRETRAIN_RUN_CONTROL kept ``eval.per_decade`` as run control: a finished unit reused."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.settings.command_line import flatten
    from minilm_jax.sweep.unit_identity import PRETRAIN_RUN_CONTROL, changed_fields

    config = get_config("E16-H16-I32-L1-A2-V610")
    saved = flatten(config)
    assert changed_fields(saved, config, PRETRAIN_RUN_CONTROL) == []
    assert saved[field] != value
    [line] = changed_fields({**saved, field: value}, config, PRETRAIN_RUN_CONTROL)
    assert line.startswith(f"{field}: {value!r} -> ")


@pytest.mark.parametrize("field", ["arch", "vocab_size", "emb_dim", "hidden_dim", "ffn_dim",
                                   "num_layers", "num_heads"])
def test_a_fine_tuning_units_recorded_shape_is_held_field_by_field(field):
    """BUILT_SHAPE_FIELDS lost ``num_heads``: a unit built with other heads reused."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.settings.model_fields import model_from_config
    from minilm_jax.sweep.unit_identity import built_changed

    config = get_config("E16-H16-I32-L1-A2-V610")
    built = model_from_config(config).to_dict()
    assert built_changed({"model_built": built}, config) == []
    edited = {**built, field: "other" if field == "arch" else built[field] * 2}
    assert built_changed({"model_built": edited}, config) == [
        f"model_built.{field}: {edited[field]!r} -> {built[field]!r}"]


def test_a_file_added_to_a_sealed_step_makes_it_corrupt(tmp_path):
    """verify skipped the added-file check: a step with an extra file read as ok."""
    from minilm_jax.train import seal

    step = tmp_path / "checkpoints" / "4"
    (step / "default").mkdir(parents=True)
    (step / "default" / "array").write_bytes(b"\x00" * 16)
    seal.write_seal(step, {"seed": 0})
    assert seal.verify(step).state == "ok"
    (step / "default" / "extra").write_bytes(b"x")
    assert seal.verify(step).state == "corrupt"


def test_latest_is_the_newest_sealed_checkpoint_not_a_newer_unsealed_one(tmp_path):
    """find_checkpoint took the newest step whatever its seal: a half-written one read."""
    from minilm_jax.train import seal
    from minilm_jax.train.checkpoint import find_checkpoint

    for step in (4, 6):
        (tmp_path / "checkpoints" / str(step) / "default").mkdir(parents=True)
    seal.write_seal(tmp_path / "checkpoints" / "4", None)
    assert find_checkpoint(tmp_path, "latest") == (4, tmp_path / "checkpoints" / "4" / "default")
    (tmp_path / "checkpoints" / "4" / seal.SEAL_NAME).unlink()  # none sealed: the newest
    assert find_checkpoint(tmp_path, "latest")[0] == 6


def test_a_corrupt_newest_best_is_an_error_not_an_older_best(tmp_path):
    """_verified_best went past a corrupt newest best to an older sealed one, silently."""
    import jax.numpy as jnp

    from minilm_jax.train import seal
    from minilm_jax.train.checkpoint import CheckpointError, Checkpoints

    def open_checkpoints():
        return Checkpoints(tmp_path, keep=2, every_steps=10, every_minutes=60, keep_best=True)

    open_checkpoints().save_best(4, {"w": jnp.ones((4,), jnp.float32)}, {"loss": 2.0})
    shutil.copytree(tmp_path / "best" / "4", tmp_path / "best" / "6")  # a newer best, sealed
    (tmp_path / "best" / "6" / seal.SEAL_NAME).unlink()
    seal.write_seal(tmp_path / "best" / "6", None)
    assert open_checkpoints().best_metrics() == {"loss": 2.0}
    (tmp_path / "best" / "6" / "metrics" / "stray").write_text("x")  # then corrupted
    with pytest.raises(CheckpointError, match="corrupt"):
        open_checkpoints().best_metrics()


class _Kept:
    """BuiltPrograms that builds a fresh sentinel program per key (nothing is compiled)."""

    def __init__(self):
        from minilm_jax.train.built_programs import BuiltPrograms

        self.programs = BuiltPrograms()

    def get(self, key, build):
        built = types.SimpleNamespace(unbuilt=lambda *args: None)
        return self.programs.get(key, lambda: (object(), built))


@pytest.mark.parametrize("change", ["regression", "population", "dtype", "labels"])
def test_fine_tuning_runs_that_differ_in_one_thing_never_share_a_program(monkeypatch, change):
    """The program key lost regression, population or the encoder state's dtypes."""
    import jax

    from minilm_jax.configs.finetune import get_config
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.finetune import programs
    from minilm_jax.settings.model_fields import model_from_config
    from minilm_jax.train.mesh import make_mesh

    monkeypatch.setattr(programs, "_BUILT", _Kept())
    config = get_config()
    mesh = make_mesh(1, 1, devices=jax.devices()[:1])
    model_cfg = model_from_config(pretrain_config("E16-H16-I32-L1-A2-V610"))
    base = dict(config=config, model_cfg=model_cfg, num_labels=2,
                regression=False, member_seeds=(0,), mesh=mesh, total_steps=10,
                encoder_state={"w": np.zeros((2, 3), np.float32)}, population=False)
    other = {"regression": {"regression": True}, "population": {"population": True},
             "labels": {"num_labels": 3},
             "dtype": {"encoder_state": {"w": np.zeros((2, 3), np.float16)}}}[change]
    first, _ = programs.finetune_program(**base)
    again, _ = programs.finetune_program(**base)
    changed, _ = programs.finetune_program(**{**base, **other})
    assert again is first and changed is not first


def test_monte_carlo_permutation_p_counts_the_observed_order():
    """permutation_p returned k / m, not (k + 1) / (m + 1): p = 0 for a strong correlation."""
    from minilm_jax.analysis.stats import MONTE_CARLO_PERMUTATIONS, permutation_p

    x = np.arange(12.0)
    y = x + np.array([0.3, -0.2, 0.1, 0.0, -0.4, 0.2, 0.1, -0.1, 0.3, -0.3, 0.0, 0.2])
    rng, m = np.random.default_rng(0), MONTE_CARLO_PERMUTATIONS
    r0 = abs(np.corrcoef(x, y)[0, 1])
    k = sum(abs(np.corrcoef(x, rng.permutation(y))[0, 1]) >= r0 - 1e-12 for _ in range(m))
    p, how = permutation_p(x, y, seed=0)
    assert how.startswith("Monte Carlo") and p == pytest.approx((k + 1) / (m + 1), rel=1e-12)
    assert p > 0


def _member(tmp_path, name: str, steps: tuple[int, ...]) -> types.SimpleNamespace:
    """A member folder whose metrics hold validation records at ``steps``."""
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "split": "validation", "loss": 1.0}) + "\n" for s in steps))
    return types.SimpleNamespace(name=name, workdir=workdir)


def test_a_member_evaluated_at_the_resume_step_that_lost_its_best_is_refused(tmp_path):
    """refuse_lost_bests compared ``step < start``: an evaluation at the resume step forgotten."""
    from minilm_jax.train.population_folders import refuse_lost_bests

    at, later = _member(tmp_path, "at", (4,)), _member(tmp_path, "later", (6,))
    inf = float("inf")
    refuse_lost_bests(tmp_path, [later], [inf], keep_best=True, start=4)  # evaluated after: ok
    refuse_lost_bests(tmp_path, [at], [1.0], keep_best=True, start=4)  # its best restored: ok
    with pytest.raises(UserError, match="member at "):
        refuse_lost_bests(tmp_path, [at, later], [inf, inf], keep_best=True, start=4)


def test_a_population_summary_of_another_step_is_not_finished_earlier(tmp_path):
    """finished_earlier ignored the summary's step: a summary written at step 8 was handed back
    for a population whose checkpoint is at step 10."""
    from minilm_jax.train.population_folders import finished_earlier

    member = _member(tmp_path, "m0", (8,))
    (member.workdir / "summary.json").write_text(json.dumps(
        {"status": "completed", "step": 10, "point": "p", "model": {}, "params": {},
         "flops_per_sequence": {}, "shards": {}}))

    def population(step: int) -> dict:
        summary = {"status": "completed", "step": step, "members": [{"name": "m0"}]}
        (tmp_path / "summary.json").write_text(json.dumps(summary))
        return summary

    done = population(10)
    assert finished_earlier(tmp_path, [member], 10, keep_best=False, start=10) == {
        **done, "strategy": "", "wall_seconds_this_session": 0.0}
    population(8)
    assert finished_earlier(tmp_path, [member], 10, keep_best=False, start=10) is None
