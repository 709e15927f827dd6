"""A pre-training run as the starting point of fine-tuning: its model config, tokenizer and encoder
weights (read from the run's best or newest Orbax checkpoint, parameters only)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import MaskedLM
from minilm_jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class PretrainedRun:
    """What fine-tuning needs to know about a pre-training workdir."""

    workdir: Path
    model: ModelConfig
    tokenizer_path: str
    tokenizer_sha256: str
    step: int
    checkpoint_dir: Path
    validation_perplexity: float | None

    @classmethod
    def open(cls, workdir: str | os.PathLike, which: str = "best") -> "PretrainedRun":
        workdir = Path(workdir)
        config_path = workdir / "config.json"
        if not config_path.is_file():
            raise UserError(f"init.checkpoint={workdir} is not a pre-training workdir "
                            f"(no config.json)")
        flat = json.loads(config_path.read_text())
        model = ModelConfig.from_mapping({k[len("model."):]: v for k, v in flat.items()
                                          if k.startswith("model.")})
        summary_path = workdir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        tok = summary.get("shards", {})
        step, ckpt_dir = _find_checkpoint(workdir, which)
        ppl = _validation_perplexity(workdir, step)
        if ppl is None and which == "best":
            ppl = summary.get("best", {}).get("validation_perplexity")
        return cls(workdir, model, tok.get("path", ""),
                   tok.get("sha256", flat.get("data.tokenizer_sha256_seen", "")), step, ckpt_dir,
                   ppl)

    def encoder_state(self) -> nnx.State:
        """The encoder's parameters and other state (e.g. BatchNorm statistics) as host arrays, in
        the layout of ``SequenceClassifier.encoder``."""
        abstract = nnx.eval_shape(lambda: MaskedLM(self.model, rngs=nnx.Rngs(params=0)))
        _, params, rest = nnx.split(abstract.encoder, nnx.Param, ...)
        host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        params, rest = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host), (params, rest))
        item: dict[str, Any] = {"params": {"encoder": params}}
        if jax.tree.leaves(rest):
            item["rest"] = {"encoder": rest}
        try:
            restored = ocp.PyTreeCheckpointer().restore(
                str(self.checkpoint_dir.resolve()),
                args=ocp.args.PyTreeRestore(
                    item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True))
        except Exception as err:  # shape mismatch, partial write
            raise UserError(f"cannot read the encoder of {self.checkpoint_dir} "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
        parts = [restored["params"]["encoder"]] + ([restored["rest"]["encoder"]] if "rest" in item else [])
        state = nnx.merge_state(*parts) if len(parts) > 1 else parts[0]
        return jax.tree.map(np.asarray, state)  # host arrays: placed by the caller's jit

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
                "validation_perplexity": self.validation_perplexity,
                "tokenizer_sha256": self.tokenizer_sha256}


def _validation_perplexity(workdir: Path, step: int) -> float | None:
    """The validation perplexity the run logged at ``step`` (the checkpoint fine-tuned from)."""
    from minilm_jax.train.metrics import read_metrics

    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return None
    values = [r["perplexity"] for r in read_metrics(path)
              if r.get("split") == "validation" and int(r["step"]) == step]
    return float(values[-1]) if values else None


def _find_checkpoint(workdir: Path, which: str) -> tuple[int, Path]:
    """(step, directory of the saved train state): ``best``, ``latest`` or ``step:N`` (a snapshot
    or a kept checkpoint at step N)."""
    if which.startswith("step:"):
        try:
            step = int(which[len("step:"):])
        except ValueError:
            raise UserError(f"init.which={which!r}: expected step:<integer>") from None
        for folder in ("snapshots", "checkpoints"):
            path = workdir / folder / str(step) / "default"
            if path.is_dir():
                return step, path
        raise UserError(f"no checkpoint at step {step} in {workdir} (snapshots/{step} or "
                        f"checkpoints/{step}); set checkpoint.keep_fractions when pre-training")
    if which not in ("best", "latest"):
        raise UserError(f"init.which must be 'best', 'latest' or 'step:N', not {which!r}")
    candidates: list[tuple[int, Path]] = []
    if which == "best":
        candidates = [(int(p.name), p / "state") for p in (workdir / "best").glob("*")
                      if p.name.isdigit() and (p / "state").is_dir()]
    if not candidates:
        candidates = [(int(p.name), p / "default") for p in (workdir / "checkpoints").glob("*")
                      if p.name.isdigit() and (p / "default").is_dir()]
    if not candidates:
        raise UserError(f"no checkpoint in {workdir} (expected best/<step>/state or "
                        "checkpoints/<step>/default)")
    return max(candidates)
