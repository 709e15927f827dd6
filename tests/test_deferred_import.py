"""Orbax is imported at the first checkpoint, not with the commands: their ``--help`` and error
lines do not pay for it (~0.25 of the ~1.4 CPU-seconds a command took to import)."""

import json
import subprocess
import sys

import pytest

from minilm_jax.deferred_import import Deferred

SCRIPT = r"""
import json, sys
import minilm_jax.pretrain  # one command (each defines its flags); the engines of the others
import minilm_jax.finetune.finetuner, minilm_jax.sweep.worker_loop, minilm_jax.runs.pretrained
import minilm_jax.train.checkpoint as checkpoint
with_commands = "orbax.checkpoint" in sys.modules
manager = checkpoint.ocp.CheckpointManager  # the first use imports it
print(json.dumps({"with_commands": with_commands, "after_use": "orbax.checkpoint" in sys.modules,
                  "same": manager is sys.modules["orbax.checkpoint"].CheckpointManager}))
"""


def test_the_commands_import_orbax_only_when_a_checkpoint_is_used():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"with_commands": False, "after_use": True, "same": True}


def test_a_deferred_module_is_the_module_once_used_and_a_missing_one_fails_then():
    deferred = Deferred("json")
    assert deferred.dumps({"a": 1}) == json.dumps({"a": 1}) and deferred.loads is json.loads
    missing = Deferred("minilm_jax_no_such_module")  # nothing happens until it is used
    with pytest.raises(ModuleNotFoundError, match="minilm_jax_no_such_module"):
        missing.anything
