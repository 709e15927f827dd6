"""Export a trained pre-training workdir as a Hugging Face ``RobertaForMaskedLM`` directory: the
weights of one of its checkpoints, its tokenizer (our file plus an ``AutoTokenizer``-loadable
``tokenizer.json``) and where they came from."""

from __future__ import annotations

import os
from pathlib import Path

from flax import nnx

from minilm_jax.finetune.pretrained import PretrainedRun
from minilm_jax.interop.hf_files import InteropError
from minilm_jax.interop.hf_roberta import export_roberta, hf_config_from_model_config
from minilm_jax.model.models import build_mlm
from minilm_jax.tokenizer import load_tokenizer


def export_workdir(workdir: str | os.PathLike, out_dir: str | os.PathLike, *, which: str = "best",
                   tokenizer_path: str = "", overwrite: bool = False) -> Path:
    """Write checkpoint ``which`` (``best``, ``latest`` or ``step:N``) of ``workdir`` to ``out_dir``.

    The model must be one RoBERTa can hold (checked before anything is read); the tokenizer is the
    one the workdir's shards were built with, or ``tokenizer_path``, which must be that same file
    (its sha256 is checked). Returns the absolute output directory."""
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
    model = build_mlm(run.model)
    nnx.update(model, run.model_state())
    provenance = {k: v for k, v in run.describe().items() if k != "format"}
    return export_roberta(model, out_dir, tokenizer=tokenizer, provenance=provenance,
                          overwrite=overwrite)
