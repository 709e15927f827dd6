"""A run loaded in Python: ``minilm_jax.load_run(path)`` gives a run's model (Flax NNX, with its
trained parameters), its recorded config, its tokenizer and the step read, for a pre-training run
(finished or still training: a ``MaskedLM``) and a finished fine-tuning run (one member: a
``SequenceClassifier``)::

    import minilm_jax

    run = minilm_jax.load_run("runs/main/runs/tiny/pretrain")          # best checkpoint
    ids = run.tokenizer.encode_batch(["the cat sat on the mat"])
    run.model(tokens, segments)                                         # MaskedLM: logits

    clf = minilm_jax.load_run("runs/ft/pretrained", which="final", seed=1)

Reading goes through the same checks as every reader: a user encoder's edited source is refused
(``MINILM_ACCEPT_CODE_CHANGE=1``: read, and ``code_changes`` says what changed), a corrupt checkpoint
is never read, a checkpoint replaced while it is read is read again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.code_identity import check_code
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_mlm
from minilm_jax.run_identity import read_versions
from minilm_jax.storage import RunPath, run_path
from minilm_jax.tokenizer import Tokenizer, load_tokenizer
from minilm_jax.train.records import RecordError, read_finetune_summary

from .finetuned import classifier_member, load_parameters, member_index
from .pretrained import PretrainedRun

# Fine-tuning runs keep each member's final and selected (best validation) parameters.
FINETUNE_WHICH = {"best": "selected", "selected": "selected", "final": "final"}


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """What :func:`load_run` gives: ``model`` with the trained parameters (eval mode: call it
    without a dropout key), ``model_config``, the run's recorded ``config`` (its ``config.json``:
    flattened fields and identity), ``tokenizer``, ``step`` (pre-training: the checkpoint's step;
    fine-tuning: the run's last step), ``which`` was read, and for fine-tuning the ``task``,
    ``seed`` (member) and label ``labels``."""

    kind: Literal["pretraining", "finetuning"]
    workdir: RunPath
    model: nnx.Module
    model_config: ModelConfig
    config: dict[str, Any]
    tokenizer: Tokenizer
    step: int
    which: str
    task: str | None = None
    seed: int | None = None
    code_changes: tuple[str, ...] = ()  # encoder code changed since recorded, accepted
    library_version_changes: tuple[str, ...] = ()  # written by another library version

    def describe(self) -> dict[str, Any]:
        """What was loaded, as JSON."""
        return {"kind": self.kind, "workdir": str(self.workdir), "point": self.model_config.point,
                "arch": self.model_config.arch, "step": self.step, "which": self.which,
                "task": self.task, "seed": self.seed, "code_changes": list(self.code_changes),
                **({"library_version_changes": list(self.library_version_changes)}
                   if self.library_version_changes else {})}


def _tokenizer(path: str, tokenizer: str | None, workdir: RunPath) -> Tokenizer:
    chosen = tokenizer or path
    if not chosen:
        raise UserError(f"{workdir} records no tokenizer file; pass tokenizer=FILE (the one its "
                        "shards were built with)")
    if not Path(chosen).is_file() and not Path(chosen).is_dir():
        raise UserError(f"tokenizer file not found: {chosen} (recorded by {workdir}); pass "
                        "tokenizer=FILE if it moved")
    return load_tokenizer(chosen)


def load_run(path: str | Path, which: str = "best", seed: int | None = None,
             tokenizer: str | None = None) -> LoadedRun:
    """The run in ``path`` (see the module docstring). Pre-training: ``which`` is ``best``,
    ``latest`` or ``step:N``. Fine-tuning: ``best`` (= ``selected``, each member's best validation
    epoch) or ``final``; ``seed`` picks the member (default: the best validation score).
    ``tokenizer``: a tokenizer file when the recorded one moved."""
    workdir = run_path(path)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{workdir} is not a run folder (no config.json)")
    flat = json.loads(config_path.read_text())
    if "task" in flat and "init.mode" in flat:
        return _finetuning(workdir, flat, which, seed, tokenizer)
    if seed is not None:
        raise UserError(f"seed={seed} is for fine-tuning runs; {workdir} is a pre-training run")
    run = PretrainedRun.open(workdir, which, action="load")
    if run.hugging_face:
        raise UserError(f"{workdir} is a Hugging Face folder: load it with transformers")
    model = build_mlm(run.model)
    nnx.update(model, run.model_state())
    return LoadedRun("pretraining", workdir, model, run.model, flat,
                     _tokenizer(run.tokenizer_path, tokenizer, workdir), run.step, which,
                     code_changes=tuple(run.code_changes),
                     library_version_changes=tuple(run.library_version_changes))


def _finetuning(workdir: RunPath, flat: dict[str, Any], which: str, seed: int | None,
                tokenizer: str | None) -> LoadedRun:
    if which not in FINETUNE_WHICH:
        raise UserError(f"which={which!r}: a fine-tuning run holds each member's best (selected) "
                        "or final parameters: best, selected or final")
    try:
        summary = read_finetune_summary(workdir)
    except RecordError as err:
        raise UserError(f"{workdir}: {err} (a fine-tuning run is read once it has finished)")
    if not summary.done:
        raise UserError(f"{workdir} has status {summary.status!r}: not a finished fine-tuning run")
    cfg = ModelConfig.from_mapping(summary.model or flat.get("model_built") or {})
    changes = [*((summary.pretrained or {}).get("code_changes") or []),
               *flat.get("model_code_changes", []),
               *check_code(flat.get("model_code"), cfg.arch, str(workdir), cfg)]
    versions = [*((summary.pretrained or {}).get("library_version_changes") or []),
                *read_versions(flat, f"the run in {workdir}")]
    member = member_index(list(summary.seeds), summary.validation, seed)
    model = classifier_member(cfg, load_parameters(workdir, FINETUNE_WHICH[which]), member,
                              workdir)
    recorded = (summary.tokenizer or {}).get("path", "")
    return LoadedRun("finetuning", workdir, model, cfg, flat,
                     _tokenizer(recorded, tokenizer, workdir), int(summary.steps), which,
                     task=summary.task, seed=int(summary.seeds[member]),
                     code_changes=tuple(dict.fromkeys(changes)),
                     library_version_changes=tuple(dict.fromkeys(versions)))
