"""Masked-LM perplexity behind the evaluator seam: the engine's own evaluation
(:class:`~minilm_jax.train.evaluation.ShardPerplexity`: every sequence of a shard split once, on
masks fixed by the run's evaluation seed, with the run's masking recipe) for any of our
checkpoints, random twins or a model being trained, on its own shards or another shard set made
with the same tokenizer. ``rows`` gives one ``perplexity`` row (loss, perplexity, predictions,
sequences)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from minilm_jax.errors import UserError

from .scoring import ScoringModel, provenance


@dataclasses.dataclass
class PerplexityEvaluator:
    """Masked-LM loss and perplexity of a shard split (``shards`` "": the run's own)."""

    name: str
    split: str = "test"
    shards: str = ""
    max_sequences: int = 0  # 0: the whole split
    batch_size: int = 0  # 0: the run's eval.batch_size

    FIELDS = ("split", "shards", "max_sequences", "batch_size")

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> PerplexityEvaluator:
        out = cls(name, split=str(entry.get("split", "test")), shards=str(entry.get("shards", "")),
                  max_sequences=int(entry.get("max_sequences", 0)),
                  batch_size=int(entry.get("batch_size", 0)))
        if not out.split:
            raise UserError(f"evals.{name}.split: name a split of the shard set (e.g. test)")
        for field in ("max_sequences", "batch_size"):
            if getattr(out, field) < 0:
                raise UserError(f"evals.{name}.{field}={getattr(out, field)}: must be >= 0")
        return out

    def check(self) -> None:
        if self.shards:
            self._manifest(self.shards)

    def _manifest(self, shards: str) -> dict[str, Any]:
        from minilm_jax.data.shards import ShardError, read_manifest

        try:
            manifest = read_manifest(shards)
        except (ShardError, OSError) as err:
            raise UserError(f"evals.{self.name}.shards: {err}") from None
        if self.split not in manifest["splits"]:
            raise UserError(f"evals.{self.name}.split={self.split!r}: {shards} has "
                            f"{', '.join(sorted(manifest['splits']))}")
        return manifest

    def rows(self, model: ScoringModel) -> list[dict[str, Any]]:
        import jax
        import ml_collections

        from minilm_jax.data.shards import open_split
        from minilm_jax.train.evaluation import ShardPerplexity
        from minilm_jax.train.masking import MaskingConfig
        from minilm_jax.train.mesh import make_mesh, replicated
        from minilm_jax.train.program import eval_program

        if model.state is None or model.run_config is None:
            raise UserError(f"evals.{self.name}: perplexity needs one of our checkpoints (its "
                            "masking recipe and shards), not a Hugging Face model")
        flat, (graphdef, params, rest) = model.run_config, model.state
        shards = self.shards or str(flat["data.shards"])
        manifest = self._manifest(shards)
        seen = flat.get("data.tokenizer_sha256_seen", "")
        if seen and manifest["tokenizer"]["sha256"] != seen:
            raise UserError(f"evals.{self.name}.shards: {shards} was made with another tokenizer "
                            f"({manifest['tokenizer']['sha256'][:12]}) than the model's "
                            f"({seen[:12]})")
        section = lambda prefix: ml_collections.ConfigDict(  # noqa: E731
            {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)})
        masking = MaskingConfig.from_config(section("mlm."), int(flat["model.vocab_size"]))
        eval_config = ml_collections.ConfigDict({
            "batch_size": self.batch_size or int(flat["eval.batch_size"]),
            "max_sequences": self.max_sequences, "seed": int(flat["eval.seed"])})
        mesh = make_mesh()
        eval_step, shardings = eval_program(graphdef, masking, eval_config.seed, mesh)
        params, rest = jax.device_put((params, rest), replicated(mesh))
        perplexity = ShardPerplexity(open_split(shards, self.split), eval_config,
                                     int(flat["model.pad_id"]), eval_step, shardings)
        result = perplexity(int(model.info["step"]), graphdef, params, rest)
        info = model.info
        return [{"kind": "perplexity", "evaluation": self.name, "split": self.split,
                 "shards": shards, **result, "init": info["init"], "step": info["step"],
                 "point": info["point"],
                 "validation_perplexity": info.get("validation_perplexity"), **provenance(info)}]
