"""A variant's declared counts held against what it builds: its parameters against the built tree
(exactly: the closed form plus its declaration must equal the tree), its forward FLOPs against the
matmul FLOPs of the traced encoder (every ``dot_general`` and convolution of its jaxpr, 2 per
multiply-add), in absolute terms and as a ratio to the built-in encoder of the same config, within
:data:`FLOPS_TOLERANCE`. Why not XLA's cost analysis: it counts element-wise work as well, which
the convention of the counts (the paper's formula, MFU) leaves out and which is large for tiny
widths: exact GELU costs XLA dozens of FLOPs per element, so for a 32-wide model XLA puts a SwiGLU
variant at 1.01x the baseline where its matmuls are 1.15x. :func:`encoder_xla_flops` gives XLA's
number beside it. The built-in encoders are the formula and are not re-checked."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_mlm
from minilm_jax.model.registry import build_encoder, encoder_factory, is_library_encoder

FLOPS_TOLERANCE = 0.02
BASELINE_ARCH = "roberta"


def analysis_value(cost: Any, key: str) -> float | None:
    """``key`` (``flops``, ``bytes accessed``) of an XLA cost analysis (a dict, or a list of dicts
    in older JAX); None where the backend gives none."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or key not in cost:
        return None
    return float(cost[key])


def _encoder_forward(cfg: ModelConfig) -> tuple[Any, tuple[Any, jax.Array]]:
    """``(forward, (state, tokens))``: one eval-mode encoder forward of one ``max_len`` sequence
    as a function of the encoder's state, and its arguments."""
    graphdef, state = nnx.split(build_encoder(cfg, nnx.Rngs(params=0)))

    def forward(state, tokens):
        return nnx.merge(graphdef, state)(tokens)

    return forward, (state, jnp.full((1, cfg.max_len), 5, jnp.int32))


def encoder_xla_flops(cfg: ModelConfig) -> float | None:
    """XLA's FLOPs of one encoder forward of one ``max_len`` sequence (eval mode)."""
    forward, args = _encoder_forward(cfg)
    return analysis_value(jax.jit(forward).lower(*args).compile().cost_analysis(), "flops")


def _matmul_flops(jaxpr: Any) -> float:
    """2 x multiply-adds of every dot_general and convolution in ``jaxpr`` and its sub-jaxprs."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":  # every output element: one multiply-add per contracted index
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
                lhs[axis] for axis in lhs_contract)
        elif name == "conv_general_dilated":
            # kernel [O, I / groups, *window] in some layout: per output element, its kernel
            # elements divided by the output features
            out = eqn.outvars[0].aval.shape
            out_features = out[eqn.params["dimension_numbers"].out_spec[1]]
            total += 2.0 * math.prod(out) * math.prod(eqn.invars[1].aval.shape) / max(
                out_features, 1)
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (list, tuple)) else (value,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _matmul_flops(inner)
    return total


def encoder_matmul_flops(cfg: ModelConfig) -> float:
    """The matmul FLOPs of one encoder forward of one ``max_len`` sequence, from its jaxpr."""
    forward, args = _encoder_forward(cfg)
    return _matmul_flops(jax.make_jaxpr(forward)(*args).jaxpr)


@functools.lru_cache(maxsize=64)
def check_declared_counts(cfg: ModelConfig) -> None:
    """Refuse, in one line, a variant whose parameter or FLOP counts (the paper's closed form plus
    its ``counts_beyond_baseline`` declaration) do not match what it builds."""
    if is_library_encoder(cfg.arch):
        return
    factory = encoder_factory(cfg.arch)
    name = getattr(factory, "__qualname__", cfg.arch)
    declared = accounting.variant_counts(cfg)
    how = (f"declare {name}.counts_beyond_baseline(cfg, seq_len) -> "
           "accounting.VariantCounts(params=..., embedding_params=..., forward_flops=...) "
           "(docs/models.md, \"Counting a variant\")")
    tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg)))
    formula = accounting.formula_params(cfg)
    if tree != formula:
        raise UserError(
            f"model.arch={cfg.arch}: its parameter tree has {tree.total:,} parameters "
            f"({tree.embedding:,} embedding), the counts give {formula.total:,} "
            f"({formula.embedding:,}; declared beyond the built-in encoder: "
            f"{declared.params + declared.embedding_params:+,}): {how}")
    baseline = cfg.replace(arch=BASELINE_ARCH)
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
