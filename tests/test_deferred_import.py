"""Orbax is imported at the first checkpoint and ``scipy.stats`` at the first statistic, not with
the commands: their ``--help`` and error lines do not pay for them (~0.25 and ~0.45 CPU-seconds of
the ~1.4 and ~2 a pre-training and a fine-tuning command took to import). The run commands'
``--help`` imports neither jax nor flax (``minilm_jax.model`` loads its names on first use)."""

import json
import subprocess
import sys

import pytest

from minilm_jax.deferred_import import Deferred

SCRIPT = r"""
import json, sys
import minilm_jax.pretrain  # one command (each defines its flags); the engines of the others
import minilm_jax.finetune.finetuner, minilm_jax.sweep.worker_loop, minilm_jax.runs.pretrained
import minilm_jax.finetune.run, minilm_jax.report.plots, minilm_jax.analysis.seeds
import minilm_jax.train.checkpoint as checkpoint
from minilm_jax.analysis import power
with_commands = ["orbax.checkpoint" in sys.modules, "scipy.stats" in sys.modules]
manager = checkpoint.ocp.CheckpointManager  # the first use imports it
power.one_sample_t_power(1.0, 1.0, 5)
print(json.dumps({"with_commands": with_commands,
                  "after_use": ["orbax.checkpoint" in sys.modules, "scipy.stats" in sys.modules],
                  "same": [manager is sys.modules["orbax.checkpoint"].CheckpointManager,
                           power.stats.t is sys.modules["scipy.stats"].t]}))
"""


def test_the_commands_import_orbax_and_scipy_stats_only_when_used():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"with_commands": [False, False], "after_use": [True, True],
                   "same": [True, True]}


def test_a_deferred_module_is_the_module_once_used_and_a_missing_one_fails_then():
    deferred = Deferred("json")
    assert deferred.dumps({"a": 1}) == json.dumps({"a": 1}) and deferred.loads is json.loads
    missing = Deferred("minilm_jax_no_such_module")  # nothing happens until it is used
    with pytest.raises(ModuleNotFoundError, match="minilm_jax_no_such_module"):
        missing.anything


HELP_SCRIPT = r"""
import json, runpy, sys
command = sys.argv[1]
sys.argv = [command, *sys.argv[2:]]
try:
    runpy.run_module(command, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("jax", "flax", "optax", "chex")
                                                  if m in sys.modules)}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["minilm_jax.pretrain", "minilm_jax.finetune",
                                     "minilm_jax.sweep", "minilm_jax.aot", "minilm_jax.report",
                                     "minilm_jax.bench", "minilm_jax.evals", "minilm_jax.points",
                                     "minilm_jax.interop export", "minilm_jax.interop demo"])
def test_a_commands_help_imports_no_jax(command):
    """``--help`` of the run commands and tools reads flags and recipes only: jax and flax (~1.1
    of the ~1.3 CPU-seconds the help took) are imported where a model is built or a program
    traced."""
    out = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *command.split(), "--help"],
                         capture_output=True, text=True, timeout=300)
    got = json.loads(out.stderr.strip().splitlines()[-1])
    assert got == {"code": 0, "loaded": []}, out.stderr[-2000:]
    assert out.stdout.count("\n  --") >= 2  # the help itself was printed: the command's flags


def test_a_bad_point_is_one_error_line_before_jax_is_imported():
    """``points`` reads its points before it imports what counts them (jax, flax): a malformed
    one is refused with status 2 and nothing heavy loaded. (A well-formed point read before it
    loads the encoder registry, and flax with it: a variant's defaults are the registry's.)"""
    out = subprocess.run([sys.executable, "-c", HELP_SCRIPT, "minilm_jax.points",
                          "E32-H32-nonsense"], capture_output=True, text=True, timeout=300)
    got = json.loads(out.stderr.strip().splitlines()[-1])
    assert got == {"code": 2, "loaded": []}, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "E32-H32-nonsense" in errors[0], out.stderr[-2000:]


def test_the_model_package_loads_its_names_on_first_use():
    import minilm_jax.model as package
    from minilm_jax.model import models, registry

    assert package.build_mlm is models.build_mlm and package.ENCODERS is registry.ENCODERS
    from minilm_jax.model import SequenceClassifier  # a from-import resolves through __getattr__

    assert SequenceClassifier is models.SequenceClassifier and "build_classifier" in dir(package)
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name
