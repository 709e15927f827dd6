"""The worked example of docs/models.md runs, and the README opens with its two commands."""

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

    grads = jax.grad(loss)(params)
    assert np.abs(np.asarray(grads["encoder"]["gate"][...])).sum() > 0
    from minilm_jax.model.registry import ENCODERS
    ENCODERS.pop("gated_embedding")


def test_readme_opens_with_the_two_commands():
    lines = [l for l in README.read_text().splitlines() if l.startswith("bash ")]
    assert lines[0].startswith("bash launch/main.sh") and lines[1].startswith("bash launch/test.sh")
    root = README.parent
    assert (root / "launch" / "main.sh").is_file() and (root / "launch" / "test.sh").is_file()
    assert "bash launch/test.sh" in (root / ".ci" / "run").read_text()
