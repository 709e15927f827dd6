"""A pre-training run as the starting point of fine-tuning (and what evals, ``interop export`` and
latency read): its model config, tokenizer and encoder weights (read from the run's best or newest
Orbax checkpoint, parameters only; the workdir may be ``gs://...``), or a local Hugging Face
``RobertaForMaskedLM`` directory (e.g. one ``python -m minilm_jax.interop export`` wrote).

A run that is still training reads as a finished one (:mod:`minilm_jax.runs.running`): its
tokenizer is recorded before its first step, and a checkpoint replaced while it is read is read
again from the step that serves now."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.code_identity import check_code
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.registry import encoder_factory
from minilm_jax.model.tree_check import (TreeDiff, encoder_shapes, fitting_part, tree_diff,
                                         variant_field_changes)
from minilm_jax.run_identity import read_versions
from minilm_jax.runs.running import read_checkpoint, recorded_tokenizer, refuse_population
from minilm_jax.storage import RunPath, is_remote, run_path
from minilm_jax.tokenizer import Tokenizer
from minilm_jax.train.checkpoint import find_checkpoint, load_model_state
from minilm_jax.train.records import PretrainSummary, RecordError, read_pretrain_summary


@dataclasses.dataclass
class PretrainedRun:
    """What fine-tuning needs to know about a pre-training workdir. ``step``, ``checkpoint_dir`` and
    ``validation_perplexity`` are those of the step last read (a running run's best may move on
    between :meth:`open` and reading it)."""

    workdir: RunPath
    model: ModelConfig
    tokenizer_path: str
    tokenizer_sha256: str
    step: int
    checkpoint_dir: RunPath
    validation_perplexity: float | None
    hugging_face: bool = False  # checkpoint_dir is a Hugging Face model directory
    which: str = "best"  # best | latest | step:N: what a replaced step is read again as
    summary_best: dict[str, Any] | None = None  # the summary's best, if the run has finished
    # Changes of a user encoder's code accepted (MINILM_ACCEPT_CODE_CHANGE=1) while the run was
    # trained or now that it is read: every output made from it says so.
    code_changes: list[str] = dataclasses.field(default_factory=list)
    # Library versions changed since the run was written (minilm_jax.run_identity.read_versions):
    # said once, recorded by every output made from it.
    library_version_changes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def open(cls, workdir: str | os.PathLike, which: str = "best",
             action: str = "use") -> "PretrainedRun":
        """The run (or Hugging Face directory) in ``workdir``; a pre-training population's own
        folder is one error line naming its members (``action``: what to do with one)."""
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
        refuse_population(workdir, flat, action)
        model = ModelConfig.from_mapping({k[len("model."):]: v for k, v in flat.items()
                                          if k.startswith("model.")})
        changes = check_code(flat.get("model_code"), model.arch, str(workdir), model)
        versions = read_versions(flat, f"the run in {workdir}")
        try:  # a running or preempted run has no summary yet: its run_start.json serves
            summary: PretrainSummary | None = read_pretrain_summary(workdir)
        except RecordError:
            summary = None
        tok = recorded_tokenizer(workdir, flat, summary.shards if summary else None)
        step, ckpt_dir = find_checkpoint(workdir, which)
        run = cls(workdir, model, str(tok.get("path") or ""), str(tok.get("sha256") or ""), step,
                  ckpt_dir, None, which=which, summary_best=(summary.best if summary else None),
                  code_changes=[*flat.get("model_code_changes", []), *changes],
                  library_version_changes=versions)
        run._at(step, ckpt_dir)
        return run

    def _at(self, step: int, checkpoint_dir: RunPath) -> None:
        """Point at ``step`` (its validation perplexity with it)."""
        self.step, self.checkpoint_dir = step, checkpoint_dir
        ppl = _validation_perplexity(self.workdir, step)
        best = self.summary_best or {}
        if ppl is None and self.which == "best" and best.get("step", step) == step:
            ppl = best.get("validation_perplexity")
        self.validation_perplexity = ppl

    def _read(self, part: str | None) -> nnx.State:
        """The ``MaskedLM`` state (or its ``part``) of the checkpoint, read again from the step
        that serves now if it is replaced while read (see :mod:`minilm_jax.runs.running`)."""
        step, path, state = read_checkpoint(
            self.workdir, self.which, lambda _, path: load_model_state(path, self.model, part),
            chosen=(self.step, self.checkpoint_dir))
        if step != self.step or str(path) != str(self.checkpoint_dir):
            self._at(step, path)
        return state

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

    def encoder_state(self, fit_to: ModelConfig | None = None) -> nnx.State:
        """The encoder's parameters and other state (e.g. BatchNorm statistics) as host arrays, in
        the layout of ``SequenceClassifier.encoder``; ``fit_to``: only the leaves the encoder of
        that config has, with the same shapes (a partial load, :meth:`fit`)."""
        if self.hugging_face:
            import jax
            import numpy as np

            from minilm_jax.interop.hf_import import import_roberta

            state = jax.tree.map(np.asarray,
                                 nnx.state(import_roberta(self.checkpoint_dir).encoder))
        else:
            state = self._read("encoder")
        return state if fit_to is None else fitting_part(state, encoder_shapes(fit_to))

    def fit(self, cfg: ModelConfig, partial: bool = False) -> TreeDiff:
        """Compare this checkpoint's encoder with the one ``cfg`` builds (architecture and
        parameter tree, abstractly); refuse in one line naming what differs, unless ``partial``
        (``init.partial=True``: what fits is loaded, the rest initialised anew). The difference."""
        diff = tree_diff(encoder_shapes(cfg), encoder_shapes(self.model))
        other_arch = (cfg.arch != self.model.arch
                      and encoder_factory(cfg.arch) is not encoder_factory(self.model.arch))
        # a variant's fields are part of its architecture: same tree, another function
        fields = variant_field_changes(cfg.arch, dict(self.model.extra), dict(cfg.extra))
        diff = dataclasses.replace(diff, fields=fields)
        if (diff.empty and not other_arch) or partial:
            return diff
        what = (f"architecture {self.model.arch!r}, not {cfg.arch!r}" if other_arch else
                "a variant of other fields" if fields and not diff.text(fields=False) else
                "another parameter tree")
        raise UserError(f"init.checkpoint={self.workdir} holds {what}: "
                        f"{diff.text() or 'the same parameter names and shapes'}; fine-tune the "
                        "checkpoint's own architecture, or pass --config.init.partial=True to load "
                        "what fits and initialise the rest")

    def model_state(self) -> nnx.State:
        """The whole ``MaskedLM`` state (encoder and MLM head) as host arrays (a workdir only)."""
        return self._read(None)

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

    def digest(self) -> str:
        """The identity of the checkpoint read (:func:`minilm_jax.run_identity.checkpoint_digest`):
        its files' sha256 from its seal (hashed now when it has none) and its step."""
        from minilm_jax.run_identity import checkpoint_digest
        from minilm_jax.storage import files_under
        from minilm_jax.train.seal import SEAL_NAME, file_digests

        seal_path = self.checkpoint_dir / SEAL_NAME
        files = None
        if not self.hugging_face and seal_path.exists():
            files = json.loads(seal_path.read_text()).get("files")
        if files is None:
            files = file_digests({k: v for k, v in files_under(self.checkpoint_dir).items()
                                  if k != SEAL_NAME})
        return checkpoint_digest(files, self.step)

    def describe(self) -> dict[str, Any]:
        out = {"workdir": str(self.workdir), "step": self.step, "point": self.model.point,
               "format": "hugging_face" if self.hugging_face else "orbax",
               "validation_perplexity": self.validation_perplexity,
               "tokenizer_sha256": self.tokenizer_sha256}
        if self.code_changes:
            out["code_changes"] = list(self.code_changes)
        if self.library_version_changes:
            out["library_version_changes"] = list(self.library_version_changes)
        return out


def _validation_perplexity(workdir: RunPath, step: int) -> float | None:
    """The validation perplexity the run logged at ``step`` (the checkpoint fine-tuned from)."""
    from minilm_jax.train.run_log import read_metrics

    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return None
    values = [r["perplexity"] for r in read_metrics(path)
              if r.get("split") == "validation" and int(r["step"]) == step]
    return float(values[-1]) if values else None
