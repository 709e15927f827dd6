"""Export a trained pre-training workdir as a Hugging Face ``RobertaForMaskedLM`` directory: the
weights of one of its checkpoints, its tokenizer (our file plus an ``AutoTokenizer``-loadable
``tokenizer.json``) and where they came from."""

from __future__ import annotations

import os
from pathlib import Path

from flax import nnx

from minilm_jax.finetune.pretrained import PretrainedRun
from minilm_jax.interop.hf_files import InteropError, safetensors_numpy
from minilm_jax.interop.hf_roberta import export_roberta, hf_config_from_model_config
from minilm_jax.model.models import build_mlm
from minilm_jax.storage import is_remote
from minilm_jax.tokenizer import load_tokenizer

# The folders of a pre-training workdir that hold what the run saved (checkpoints, best/,
# snapshots/ and quarantine/ of train.checkpoint and train.seal; TensorBoard events): an export
# into one of them would replace it. Any other folder inside the workdir may take an export.
RUN_FOLDERS = ("checkpoints", "best", "snapshots", "quarantine", "tensorboard")


def _parts(location: str | os.PathLike) -> tuple[str, ...]:
    """``location`` as comparable parts: a local path resolved (relative, ``..``, symlinks,
    trailing slashes); a URL (``gs://``) as its scheme then its ``/``-separated names."""
    text = os.fspath(location)
    if is_remote(text):
        scheme, rest = text.split("://", 1)
        return (f"{scheme}://", *[name for name in rest.split("/") if name not in ("", ".")])
    return ("",) + Path(text).resolve().parts


def check_out_spares_run(workdir: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Refuse an ``out_dir`` whose export would replace the run being exported: the workdir itself,
    a folder that holds it, or a folder of the run's own (:data:`RUN_FOLDERS`). An export replaces a
    non-empty ``out_dir`` whole (``--overwrite``), so checked first, with or without it."""
    run, out = _parts(workdir), _parts(out_dir)
    if out == run:
        raise InteropError(f"--out {out_dir} is the workdir {workdir}: the export would replace the "
                           "run (checkpoints, metrics, config); pass another --out")
    if run[:len(out)] == out:
        raise InteropError(f"--out {out_dir} holds the workdir {workdir}: the export would replace "
                           "that folder, the run with it; pass another --out")
    inside = next((name for name in RUN_FOLDERS if out[:len(run) + 1] == run + (name,)), None)
    if inside:
        raise InteropError(f"--out {out_dir} lies in {inside}/ of the workdir {workdir}, which holds "
                           "what the run saved; pass another --out (e.g. a new folder)")


def export_workdir(workdir: str | os.PathLike, out_dir: str | os.PathLike, *, which: str = "best",
                   tokenizer_path: str = "", overwrite: bool = False) -> Path:
    """Write checkpoint ``which`` (``best``, ``latest`` or ``step:N``) of ``workdir`` to ``out_dir``.

    The model must be one RoBERTa can hold (checked before anything is read); the tokenizer is the
    one the workdir's shards were built with, or ``tokenizer_path``, which must be that same file
    (its sha256 is checked). An ``out_dir`` that is the workdir, holds it or lies in one of its
    checkpoint folders is refused first (:func:`check_out_spares_run`), and a missing ``safetensors``
    before the weights are read. Returns the absolute output directory."""
    check_out_spares_run(workdir, out_dir)
    if is_remote(os.fspath(out_dir)):
        raise InteropError(f"--out {out_dir}: export writes a local folder; export here, then "
                           "copy it to the bucket (gcloud storage cp -r)")
    run = PretrainedRun.open(workdir, which)
    if run.hugging_face:
        raise InteropError(f"{workdir} is already a Hugging Face model directory")
    hf_config_from_model_config(run.model)  # refuses E->H projection, pre-LN, ... up front
    path = tokenizer_path or run.tokenizer_path
    if not path:
        raise InteropError(f"{workdir} records no tokenizer file; pass --tokenizer=FILE (the one "
                           "its shards were built with)")
    if not Path(path).is_file():
        raise InteropError(f"tokenizer file not found: {path} (recorded by {workdir}); pass "
                           "--tokenizer=FILE if it moved")
    tokenizer = load_tokenizer(path)
    run.check_tokenizer(tokenizer)
    safetensors_numpy()  # the hf extra: one line naming it, before the checkpoint is read
    model = build_mlm(run.model)
    nnx.update(model, run.model_state())
    provenance = {k: v for k, v in run.describe().items() if k != "format"}
    return export_roberta(model, out_dir, tokenizer=tokenizer, provenance=provenance,
                          overwrite=overwrite)
