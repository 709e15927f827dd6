"""The worked example of docs/models.md runs, the README opens with its two commands, and its own-data
commands are the script's."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"
MODELS_PAGE = README.parent / "docs" / "models.md"


def test_new_encoder_example_runs_and_trains_its_gate():
    text = MODELS_PAGE.read_text()
    block = re.search(r"<!-- example:new-encoder -->\s*```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README-example", "exec"), scope)
    assert scope["logits"].shape == (2, 3, 500)
    import jax
    from flax import nnx

    model = scope["model"]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return m(np.full((2, 16), 7, np.int32), np.zeros((2, 3), np.int32)).sum()

    grads = jax.jit(jax.grad(loss))(params)  # one program: op by op took 3x the CPU time
    assert np.abs(np.asarray(grads["encoder"]["gate"][...])).sum() > 0
    from minilm_jax.model.registry import ENCODERS
    ENCODERS.pop("gated_embedding")


def test_readme_opens_with_the_two_commands():
    lines = [l for l in README.read_text().splitlines() if l.startswith("bash ")]
    assert lines[0].startswith("bash launch/main.sh") and lines[1].startswith("bash launch/test.sh")
    root = README.parent
    assert (root / "launch" / "main.sh").is_file() and (root / "launch" / "test.sh").is_file()
    assert "bash launch/test.sh" in (root / ".ci" / "run").read_text()


def test_readme_own_data_commands_are_the_scripts():
    """README's "Your own data" commands equal what launch/own_data.sh runs with its defaults."""
    import os
    import subprocess

    repo = README.parent
    text = README.read_text()
    section = text[text.index("## Your own data"):text.index("## What a run writes")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    shown = [" ".join(line.split()) for line in blocks[1].replace("\\\n", " ").splitlines()
             if line.strip()]
    proc = subprocess.run(["bash", "launch/own_data.sh", "my_text.txt", "my_labels.csv", "runs/own"],
                          cwd=repo, env={**os.environ, "OWN_DRY_RUN": "1"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    run = [line[2:] for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert run == shown
