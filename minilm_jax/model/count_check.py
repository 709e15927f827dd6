"""A variant's counts held against what it builds. Declared ones (``counts_beyond_baseline``):
its parameters against the built tree (exactly: the closed form plus its declaration must equal
the tree), its forward FLOPs against the matmul FLOPs of the traced encoder
(:mod:`~minilm_jax.model.traced_flops`: every ``dot_general`` and convolution, 2 per multiply-add,
through loops, conditionals and calls), in absolute terms and as a ratio to the built-in encoder of
the same config, within :data:`FLOPS_TOLERANCE`. Undeclared ones are derived from the same tree
and trace (:func:`accounting.derived_counts`); a program the trace cannot count (a ``while`` whose
trip count is a value) is refused either way. Why not XLA's cost analysis: it counts element-wise
work as well, which the convention of the counts (the paper's formula, MFU) leaves out and which
is large for tiny widths: exact GELU costs XLA dozens of FLOPs per element, so for a 32-wide model
XLA puts a SwiGLU variant at 1.01x the baseline where its matmuls are 1.15x; and XLA counts a loop
body once. :func:`encoder_xla_flops` gives XLA's number beside it. The built-in encoders are the
formula and are not re-checked. :func:`same_as_builtin` names a variant that builds the built-in
encoder at the chosen point."""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_mlm
from minilm_jax.model.registry import (build_encoder, check_variant_fields, encoder_factory,
                                       is_library_encoder)
from minilm_jax.model.traced_flops import counting_config, encoder_forward, encoder_matmul_flops

FLOPS_TOLERANCE = 0.02


def analysis_value(cost: Any, key: str) -> float | None:
    """``key`` (``flops``, ``bytes accessed``) of an XLA cost analysis (a dict, or a list of dicts
    in older JAX); None where the backend gives none."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or key not in cost:
        return None
    return float(cost[key])


def encoder_xla_flops(cfg: ModelConfig) -> float | None:
    """XLA's FLOPs of one encoder forward of one ``max_len`` sequence (eval mode)."""
    forward, args = encoder_forward(cfg)
    return analysis_value(jax.jit(forward).lower(*args).compile().cost_analysis(), "flops")


def _layout(state: nnx.State) -> list[tuple[str, str, tuple[int, ...], str]]:
    """Every variable of ``state``: path, kind (``Param``, ``BatchStat``...), shape, dtype."""
    leaves = jax.tree_util.tree_leaves_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return sorted((jax.tree_util.keystr(path), type(var).__name__, tuple(var.shape), str(var.dtype))
                  for path, var in leaves)


@functools.lru_cache(maxsize=64)
def same_as_builtin(cfg: ModelConfig) -> bool:
    """Whether ``cfg.arch`` builds, at ``cfg``'s point, the built-in encoder's parameter tree (the
    same paths, kinds, shapes and dtypes) and function: the same hidden states from the same random
    parameters on a small random batch (one row padded), eval mode, float32. The tree is compared
    from shapes alone; only a variant whose tree matches is run."""
    cfg = counting_config(cfg.replace(dtype="float32", param_dtype="float32"))
    builtin = cfg.replace(arch=accounting.builtin_arch(cfg))
    defs, states = zip(*(nnx.split(nnx.eval_shape(lambda c=c: build_encoder(c, nnx.Rngs(params=0))))
                         for c in (cfg, builtin)))
    if _layout(states[0]) != _layout(states[1]):
        return False
    _, state = nnx.split(build_encoder(cfg, nnx.Rngs(params=0)))
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    state = jax.tree_util.tree_unflatten(treedef, [  # every parameter moved: zero biases too
        x + 0.1 * jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
        else x for x, k in zip(leaves, keys)])
    t = min(cfg.max_len, 32)
    tokens = jax.random.randint(jax.random.key(1), (2, t), 0, cfg.vocab_size)
    segments = jnp.stack([jnp.ones(t, jnp.int32), (jnp.arange(t) < t - t // 4).astype(jnp.int32)])
    hidden = [jax.jit(lambda s, x, seg, d=d: nnx.merge(d, s)(x, seg))(state, tokens, segments)
              for d in defs]
    return bool(jnp.allclose(hidden[0], hidden[1], rtol=1e-5, atol=1e-5))


def _fields(cfg: ModelConfig) -> str:
    """`` (name=value, ...)`` of the variant's fields; empty without any."""
    return f" ({', '.join(f'{name}={value}' for name, value in cfg.extra)})" if cfg.extra else ""


@functools.lru_cache(maxsize=64)
def check_declared_counts(cfg: ModelConfig) -> None:
    """Refuse, in one line, a variant whose counts cannot be taken or whose declared counts (the
    paper's closed form plus its ``counts_beyond_baseline``) do not match what it builds; an
    undeclared variant's are derived (and its trace counted now). Print one ``note:`` line when
    the variant builds the built-in encoder at this point (:func:`same_as_builtin`)."""
    if is_library_encoder(cfg.arch):
        return
    check_variant_fields(cfg)  # the variant's own refusal of its fields comes first
    declared = accounting.variant_counts(cfg)  # derived ones: traced here, refused if uncountable
    if accounting.counts_source(cfg) == "declared":
        _check_declaration(cfg, declared)
    if same_as_builtin(cfg):
        print(f"note: model.arch={cfg.arch} at {cfg.point}{_fields(cfg)} builds the built-in "
              f"encoder's parameter tree and function (the same parameter paths and shapes, the "
              f"same outputs in eval mode): its runs measure the built-in encoder",
              file=sys.stderr, flush=True)


def _check_declaration(cfg: ModelConfig, declared: accounting.VariantCounts) -> None:
    """Refuse a declaration whose parameters differ from the tree's, or whose FLOPs are more than
    :data:`FLOPS_TOLERANCE` from the traced encoder's (absolutely or as a ratio to the built-in)."""
    factory = encoder_factory(cfg.arch)
    name = getattr(factory, "__qualname__", cfg.arch)
    how = (f"correct {name}.counts_beyond_baseline(cfg, seq_len) -> "
           "accounting.VariantCounts(params=..., embedding_params=..., forward_flops=...), or "
           "remove it to have the counts derived from the tree and the trace "
           "(docs/models.md, \"Counting a variant\")")
    tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg)))
    formula = accounting.formula_params(cfg)
    if tree != formula:
        raise UserError(
            f"model.arch={cfg.arch}: its parameter tree has {tree.total:,} parameters "
            f"({tree.embedding:,} embedding), the counts give {formula.total:,} "
            f"({formula.embedding:,}; declared beyond the built-in encoder: "
            f"{declared.params + declared.embedding_params:+,}, "
            f"{declared.embedding_params:+,} of them embedding): {how}")
    baseline = cfg.replace(arch=accounting.builtin_arch(cfg))
    traced = [encoder_matmul_flops(c) for c in (cfg, baseline)]
    counted = [accounting.forward_flops_per_sequence(c, num_predictions=0) for c in (cfg, baseline)]
    traced_ratio, declared_ratio = traced[0] / traced[1], counted[0] / counted[1]
    if (abs(traced_ratio / declared_ratio - 1) > FLOPS_TOLERANCE
            or abs(traced[0] / counted[0] - 1) > FLOPS_TOLERANCE):
        raise UserError(
            f"model.arch={cfg.arch}: its traced encoder does {traced[0]:,.0f} matmul FLOPs per "
            f"sequence ({traced_ratio:.4f}x the built-in encoder's), the counts give "
            f"{counted[0]:,.0f} ({declared_ratio:.4f}x; declared beyond the built-in: "
            f"{declared.forward_flops:+,.0f}), more than {FLOPS_TOLERANCE:.0%} apart: {how}")
