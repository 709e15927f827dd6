"""What can be scored: a pre-training run's checkpoint (or its random-init twin: the same
architecture freshly initialised) or a local Hugging Face masked-LM folder (our own remote-code
export read back into our JAX model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minilm_jax.errors import UserError
from minilm_jax.storage import run_path
from minilm_jax.tokenizer import load_tokenizer

from .scoring import ScoringModel, mlm_target_logprobs


def scoring_model(location: str | Path, which: str = "best", random_seed: int | None = None
                  ) -> ScoringModel:
    """:func:`checkpoint_model` of a pre-training workdir, or the model of a local Hugging Face
    folder (:func:`~minilm_jax.evals.hf_scorer.hugging_face_model`; ``which`` unused)."""
    from .hf_scorer import hugging_face_model, is_hugging_face_dir

    if is_hugging_face_dir(location):
        return hugging_face_model(location, random_seed)
    if not (run_path(location) / "config.json").is_file():
        raise UserError(f"{location} is not a pre-training workdir or a Hugging Face model folder "
                        "(no config.json)")
    return checkpoint_model(location, which, random_seed)


def checkpoint_model(workdir: str | Path, which: str = "best", random_seed: int | None = None
                     ) -> ScoringModel:
    """The run's checkpoint ``which`` (best, latest, step:N), or with ``random_seed`` its
    architecture freshly initialised from that seed."""
    import jax
    from flax import nnx

    from minilm_jax.model.models import MaskedLM
    from minilm_jax.runs.pretrained import PretrainedRun

    run = PretrainedRun.open(workdir, which)
    if not run.tokenizer_path or not Path(run.tokenizer_path).is_file():
        raise UserError(f"{workdir}: its tokenizer {run.tokenizer_path or '(none recorded)'} is "
                        "not found")
    tokenizer = load_tokenizer(run.tokenizer_path)
    run.check_tokenizer(tokenizer)
    model = MaskedLM(run.model, rngs=nnx.Rngs(params=int(random_seed or 0)))
    if random_seed is None:
        nnx.update(model, run.model_state())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.device_put((params, rest))
    info = run_info(workdir, run, pretrained=random_seed is None)
    flat = json.loads((run_path(workdir) / "config.json").read_text())
    return ScoringModel(tokenizer, mlm_target_logprobs(graphdef, params, rest), info,
                        (graphdef, params, rest), flat, run.model.max_len)


def run_info(workdir: str | Path, run: Any, pretrained: bool) -> dict[str, Any]:
    """What the rows scored from a pre-training run's checkpoint (``pretrained``) or its random
    twin say of the model: workdir, point, step, init, validation perplexity, its encoder's
    ``arch`` (a built-in's name or a user's variant, on every row) and the code or library
    version changes accepted when it was read."""
    info = {"workdir": str(workdir), "point": run.model.point,
            "step": run.step if pretrained else 0,
            "init": "pretrained" if pretrained else "random",
            "validation_perplexity": run.validation_perplexity if pretrained else None,
            "arch": run.model.arch}
    if run.code_changes:  # read with changed encoder code (MINILM_ACCEPT_CODE_CHANGE=1)
        info["code_changes"] = list(run.code_changes)
    if run.library_version_changes:  # written by another library version than this one
        info["library_version_changes"] = list(run.library_version_changes)
    return info
