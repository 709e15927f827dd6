"""A run's TensorBoard writer is imported without torch: tensorboardX's writer module imports torch
(where installed) only to accept torch tensors, and that import costs every pre-training or
fine-tuning command ~1.5 CPU-seconds. Torch still imports as usual afterwards, and a process that
already holds torch keeps it."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
from minilm_jax.train.run_log import _summary_writer_class
writer = _summary_writer_class()
loaded = "torch" in sys.modules
import tensorboardX
same = writer is tensorboardX.SummaryWriter
try:
    import torch
    after = torch.__name__
except ImportError as err:
    after = f"ImportError: {err}"
print(json.dumps({"torch_loaded": loaded, "same": same, "after": after}))
"""


def run(script: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_summary_writer_is_imported_without_torch_and_torch_imports_afterwards():
    pytest.importorskip("tensorboardX")
    pytest.importorskip("torch")
    got = run(SCRIPT)
    assert got == {"torch_loaded": False, "same": True, "after": "torch"}


def test_a_process_holding_torch_keeps_it():
    pytest.importorskip("tensorboardX")
    pytest.importorskip("torch")
    got = run("import torch\n" + SCRIPT)
    assert got == {"torch_loaded": True, "same": True, "after": "torch"}
