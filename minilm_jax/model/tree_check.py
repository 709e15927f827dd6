"""Does a saved encoder fit the encoder being built? Their parameter trees compared by path and shape
(abstractly: nothing is read or initialised), and a saved state cut to what fits, for a partial
load that says what it initialised anew (as transformers' ``from_pretrained`` does)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from flax import nnx

from minilm_jax.model.config import ModelConfig
from minilm_jax.model.registry import build_encoder, encoder_factory


def shapes(state: Any) -> dict[str, tuple[int, ...]]:
    """``path -> shape`` of every leaf of an nnx state (``layers/0/attention/key/kernel``)."""
    return {"/".join(map(str, path)): tuple(getattr(leaf, "shape", ()))
            for path, leaf in nnx.to_flat_state(state)}


def encoder_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The parameter and state shapes of the encoder ``cfg`` builds (abstract: no arrays; traced
    once per config and encoder class in a process)."""
    return dict(_encoder_shapes(cfg, encoder_factory(cfg.arch)))


@functools.lru_cache(maxsize=64)
def _encoder_shapes(cfg: ModelConfig, factory: Any) -> dict[str, tuple[int, ...]]:
    del factory  # in the key only: an encoder module imported again builds another encoder
    return shapes(nnx.state(nnx.eval_shape(lambda: build_encoder(cfg, nnx.Rngs(params=0)))))


@dataclasses.dataclass(frozen=True)
class TreeDiff:
    """What the model being built lacks in a saved tree, and the reverse."""

    missing: list[str]  # built, not saved: would keep their random init
    unexpected: list[str]  # saved, not built: would be dropped
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (path, saved, built)
    # a variant's fields (model.extra) whose values differ: (name, saved, built); the same tree
    # computes another function
    fields: list[tuple[str, Any, Any]] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.missing or self.unexpected or self.reshaped or self.fields)

    def to_json(self) -> dict[str, Any]:
        """What a run records of a partial load (``init.partial``)."""
        return {"missing": list(self.missing), "unexpected": list(self.unexpected),
                "reshaped": [[p, list(a), list(b)] for p, a, b in self.reshaped],
                "fields": [[n, a, b] for n, a, b in self.fields]}

    def text(self, limit: int = 4, fields: bool = True) -> str:
        def names(items: list[str]) -> str:
            more = f", ... ({len(items)} in all)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more
        parts = []
        if fields and self.fields:
            parts.append("variant fields " + ", ".join(f"model.extra.{n} {a!r} (checkpoint) vs "
                                                       f"{b!r}" for n, a, b in self.fields))
        if self.missing:
            parts.append(f"missing {names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {names(self.unexpected)}")
        if self.reshaped:
            parts.append("other shapes " + names([f"{p} {tuple(a)} vs {tuple(b)}"
                                                  for p, a, b in self.reshaped]))
        return "; ".join(parts)


def variant_field_changes(arch: str, saved: dict[str, Any], built: dict[str, Any]
                          ) -> list[tuple[str, Any, Any]]:
    """``(name, saved, built)`` for each field of the variant ``arch`` (``model.extra``; a field
    left out has its declared default) whose values differ."""
    defaults = dict(getattr(encoder_factory(arch), "config_fields", None) or {})
    names = sorted(set(saved) | set(built))
    return [(n, saved.get(n, defaults.get(n)), built.get(n, defaults.get(n))) for n in names
            if saved.get(n, defaults.get(n)) != built.get(n, defaults.get(n))]


def tree_diff(built: dict[str, tuple[int, ...]], saved: dict[str, tuple[int, ...]]) -> TreeDiff:
    """Compare the ``built`` and ``saved`` shape maps of :func:`shapes`."""
    return TreeDiff(sorted(set(built) - set(saved)), sorted(set(saved) - set(built)),
                    sorted((p, saved[p], built[p]) for p in set(built) & set(saved)
                           if tuple(saved[p]) != tuple(built[p])))


def fitting_part(state: nnx.State, built: dict[str, tuple[int, ...]]) -> nnx.State:
    """The leaves of ``state`` the built tree has, with the same shape."""
    kept = [(path, leaf) for path, leaf in nnx.to_flat_state(state)
            if built.get("/".join(map(str, path))) == tuple(getattr(leaf, "shape", ()))]
    return nnx.from_flat_state(kept)
