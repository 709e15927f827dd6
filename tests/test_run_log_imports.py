"""A run's TensorBoard writer is imported without torch and google-cloud-storage: tensorboardX's
writer module imports torch (where installed) only to accept torch tensors and google-cloud-storage
only to write gs:// paths, neither of which a run hands it, and those imports cost every
pre-training or fine-tuning command ~1.5 and ~0.15 CPU-seconds. Both still import as usual
afterwards, and a process that already holds one keeps it."""

import subprocess
import sys

import pytest

UNUSED_BY_TENSORBOARD = ("torch", "google.cloud.storage")  # what no run needs of tensorboardX's

SCRIPT = r"""
import importlib, json, sys
from minilm_jax.train.run_log import _summary_writer_class
UNUSED_BY_TENSORBOARD = ("torch", "google.cloud.storage")
writer = _summary_writer_class()
loaded = {name: name in sys.modules for name in UNUSED_BY_TENSORBOARD}
import tensorboardX
same = writer is tensorboardX.SummaryWriter
after = {}
for name in UNUSED_BY_TENSORBOARD:
    try:
        after[name] = importlib.import_module(name).__name__
    except ImportError as err:
        after[name] = f"ImportError: {err}"
print(json.dumps({"loaded": loaded, "same": same, "after": after}))
"""


def run(script: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def installed():
    pytest.importorskip("tensorboardX")
    for name in UNUSED_BY_TENSORBOARD:
        pytest.importorskip(name)


def test_the_summary_writer_is_imported_without_them_and_they_import_afterwards():
    got = run(SCRIPT)
    assert got == {"loaded": {name: False for name in UNUSED_BY_TENSORBOARD}, "same": True,
                   "after": {name: name for name in UNUSED_BY_TENSORBOARD}}


@pytest.mark.parametrize("held", UNUSED_BY_TENSORBOARD)
def test_a_process_holding_one_keeps_it(held):
    got = run(f"import {held}\n" + SCRIPT)
    assert got == {"loaded": {name: name == held for name in UNUSED_BY_TENSORBOARD},
                   "same": True, "after": {name: name for name in UNUSED_BY_TENSORBOARD}}
