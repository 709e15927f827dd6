"""A pre-training run as the starting point of fine-tuning: its model config, tokenizer and encoder
weights (read from the run's best or newest Orbax checkpoint, parameters only; the workdir may be
``gs://...``), or a local Hugging Face ``RobertaForMaskedLM`` directory (e.g. one ``python -m
minilm_jax.interop export`` wrote)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.storage import RunPath, is_remote, run_path
from minilm_jax.tokenizer import Tokenizer
from minilm_jax.train.checkpoint import find_checkpoint, load_encoder
from minilm_jax.train.records import PretrainSummary, RecordError, read_pretrain_summary


@dataclasses.dataclass(frozen=True)
class PretrainedRun:
    """What fine-tuning needs to know about a pre-training workdir."""

    workdir: RunPath
    model: ModelConfig
    tokenizer_path: str
    tokenizer_sha256: str
    step: int
    checkpoint_dir: RunPath
    validation_perplexity: float | None
    hugging_face: bool = False  # checkpoint_dir is a Hugging Face model directory

    @classmethod
    def open(cls, workdir: str | os.PathLike, which: str = "best") -> "PretrainedRun":
        workdir = run_path(workdir)
        config_path = workdir / "config.json"
        if not config_path.is_file():
            raise UserError(f"init.checkpoint={workdir} is not a pre-training workdir or a Hugging "
                            f"Face model directory (no config.json)")
        flat = json.loads(config_path.read_text())
        if "model_type" in flat or "architectures" in flat:
            if is_remote(workdir):
                raise UserError(f"init.checkpoint={workdir}: a Hugging Face model directory must "
                                "be local (copy it, e.g. gcloud storage cp -r)")
            return cls._open_hugging_face(workdir, flat)
        model = ModelConfig.from_mapping({k[len("model."):]: v for k, v in flat.items()
                                          if k.startswith("model.")})
        try:  # a preempted run has no summary yet: the config's tokenizer identity serves
            summary: PretrainSummary | None = read_pretrain_summary(workdir)
        except RecordError:
            summary = None
        tok = summary.shards if summary else {}
        step, ckpt_dir = find_checkpoint(workdir, which)
        ppl = _validation_perplexity(workdir, step)
        if ppl is None and which == "best":
            ppl = (summary.best or {}).get("validation_perplexity") if summary else None
        return cls(workdir, model, tok.get("path", ""),
                   tok.get("sha256", flat.get("data.tokenizer_sha256_seen", "")), step, ckpt_dir,
                   ppl)

    @classmethod
    def _open_hugging_face(cls, hf_dir: RunPath, hf_config: dict[str, Any]) -> "PretrainedRun":
        from minilm_jax.interop.hf_roberta import METADATA_KEY, model_config_from_hf
        from minilm_jax.storage import file_sha256

        model = model_config_from_hf(hf_config)
        ours = sorted(hf_dir.glob("*.model")) or sorted(hf_dir.glob("vocab.txt"))
        tokenizer = str(ours[0]) if len(ours) == 1 else ""  # else: data.tokenizer must name one
        provenance = (hf_config.get(METADATA_KEY) or {}).get("provenance") or {}
        return cls(hf_dir, model, tokenizer, file_sha256(tokenizer) if tokenizer else "",
                   int(provenance.get("step", 0)), hf_dir,
                   provenance.get("validation_perplexity"), hugging_face=True)

    def encoder_state(self) -> nnx.State:
        """The encoder's parameters and other state (e.g. BatchNorm statistics) as host arrays, in
        the layout of ``SequenceClassifier.encoder``."""
        if self.hugging_face:
            import jax
            import numpy as np

            from minilm_jax.interop.hf_import import import_roberta

            return jax.tree.map(np.asarray, nnx.state(import_roberta(self.checkpoint_dir).encoder))
        return load_encoder(self.checkpoint_dir, self.model)

    def model_state(self) -> nnx.State:
        """The whole ``MaskedLM`` state (encoder and MLM head) as host arrays (a workdir only)."""
        from minilm_jax.train.checkpoint import load_model_state

        return load_model_state(self.checkpoint_dir, self.model)

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Refuse a tokenizer other than the one the checkpoint was pre-trained with."""
        if tokenizer.vocab_size > self.model.vocab_size:
            raise UserError(f"the task tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens, "
                            f"more than the checkpoint's vocabulary ({self.model.vocab_size} rows) "
                            f"in {self.workdir}")
        if self.tokenizer_sha256 and tokenizer.sha256 != self.tokenizer_sha256:
            raise UserError(f"the task tokenizer {tokenizer.path} (sha256 {tokenizer.sha256[:12]}) is "
                            f"not the one {self.workdir} was pre-trained with (sha256 "
                            f"{self.tokenizer_sha256[:12]}, {self.tokenizer_path or 'path unknown'})")

    def describe(self) -> dict[str, Any]:
        return {"workdir": str(self.workdir), "step": self.step, "point": self.model.point,
                "format": "hugging_face" if self.hugging_face else "orbax",
                "validation_perplexity": self.validation_perplexity,
                "tokenizer_sha256": self.tokenizer_sha256}


def _validation_perplexity(workdir: RunPath, step: int) -> float | None:
    """The validation perplexity the run logged at ``step`` (the checkpoint fine-tuned from)."""
    from minilm_jax.train.run_log import read_metrics

    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return None
    values = [r["perplexity"] for r in read_metrics(path)
              if r.get("split") == "validation" and int(r["step"]) == step]
    return float(values[-1]) if values else None
