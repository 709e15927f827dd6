"""Matmul FLOPs of a traced program (a jaxpr), through its control flow: every ``dot_general`` and
convolution, 2 per multiply-add; a ``scan``'s body times its length (``lax.scan``, ``nnx.scan``,
``lax.fori_loop`` with Python-int bounds); a ``while`` that ``lax.fori_loop`` wrote with constant
bounds times its trip count; ``cond`` / ``switch`` the most expensive branch (an upper bound: which
branch runs is a value); calls (``jit``, ``checkpoint``, custom derivatives, composites) once. A
``while`` whose trip count is a value, or any other primitive that holds a program, is refused in
one line: counting its body once would under-count. The encoder's count
(:func:`encoder_matmul_flops`) is what a variant's counts are derived from
(:mod:`~minilm_jax.model.accounting`) and checked against (:mod:`~minilm_jax.model.count_check`)."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Literal
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.registry import build_encoder

# call-like primitives -> the parameter holding the program they run once
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
         "call": "call_jaxpr", "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
         "custom_jvp_call_jaxpr": "fun_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
         "remat": "jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr", "composite": "jaxpr",
         "custom_vmap_call": "call", "remat_opt": "fwd_jaxpr"}
STATIC_LOOPS = "lax.scan, nnx.scan or lax.fori_loop with Python-int bounds"


def _programs(value: Any) -> list[Any]:
    """The jaxprs a primitive's parameter holds (a jaxpr, a closed jaxpr, or a tuple of them)."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    inner = (getattr(item, "jaxpr", item) for item in items)
    return [program for program in inner if hasattr(program, "eqns")]


def _dot_flops(eqn: Any) -> float:
    """Every output element: one multiply-add per contracted index."""
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[a] for a in lhs_contract)


def _conv_flops(eqn: Any) -> float:
    """Kernel ``[O, I / groups, *window]`` in some layout: per output element, its kernel elements
    divided by the output features."""
    out = eqn.outvars[0].aval.shape
    out_features = out[eqn.params["dimension_numbers"].out_spec[1]]
    return 2.0 * math.prod(out) * math.prod(eqn.invars[1].aval.shape) / max(out_features, 1)


def _position(variables: list[Any], var: Any) -> int | None:
    return next((k for k, v in enumerate(variables) if v is var), None)


def while_trip_count(eqn: Any) -> int | None:
    """The trip count of a ``while`` as ``lax.fori_loop`` writes it with constant bounds (e.g.
    ``jnp.int32`` ones): the condition ``counter < bound`` over two carried values, the body adding
    1 to the counter and passing the bound through, both entering as literals. None for any other
    ``while``."""
    params = eqn.params
    cond, body = params["cond_jaxpr"].jaxpr, params["body_jaxpr"].jaxpr
    if len(cond.eqns) != 1 or cond.eqns[0].primitive.name != "lt":
        return None
    cond_carry = cond.invars[params["cond_nconsts"]:]
    counter, bound = (_position(cond_carry, v) for v in cond.eqns[0].invars)
    if counter is None or bound is None:
        return None
    body_carry = body.invars[params["body_nconsts"]:]
    if body.outvars[bound] is not body_carry[bound]:
        return None
    steps = [e for e in body.eqns if any(v is body.outvars[counter] for v in e.outvars)]
    if len(steps) != 1 or steps[0].primitive.name != "add":
        return None
    operands = steps[0].invars
    one = [v for v in operands if isinstance(v, Literal) and v.val == 1]
    if len(one) != 1 or not any(v is body_carry[counter] for v in operands):
        return None
    carry = eqn.invars[params["cond_nconsts"] + params["body_nconsts"]:]
    lower, upper = carry[counter], carry[bound]
    if not (isinstance(lower, Literal) and isinstance(upper, Literal)):
        return None
    return max(0, int(upper.val) - int(lower.val))


def matmul_flops(jaxpr: Any, what: str = "the traced program") -> float:
    """2 x multiply-adds of every dot_general and convolution in ``jaxpr``, through its control
    flow (the module's docstring). ``what`` names the program in a refusal."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name, params = eqn.primitive.name, eqn.params
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += params["length"] * matmul_flops(params["jaxpr"].jaxpr, what)
        elif name == "while":
            trips = while_trip_count(eqn)
            if trips is None:
                raise UserError(
                    f"{what} holds a `while` loop whose trip count is a value, not known when "
                    f"traced (lax.while_loop, or lax.fori_loop with traced bounds): its matmul "
                    f"FLOPs cannot be counted; write the loop with static bounds ({STATIC_LOOPS})")
            total += trips * matmul_flops(params["body_jaxpr"].jaxpr, what)
        elif name == "cond":  # cond and switch: the most expensive branch
            total += max(matmul_flops(branch.jaxpr, what) for branch in params["branches"])
        elif name in CALLS and CALLS[name] in params:
            total += sum(matmul_flops(program, what) for program in _programs(params[CALLS[name]]))
        elif any(_programs(value) for value in params.values()):
            raise UserError(
                f"{what} holds a `{name}`, a primitive with a program inside that the matmul count "
                f"cannot say how often runs: its matmul FLOPs cannot be counted; write it with "
                f"{STATIC_LOOPS}, lax.cond or a jit call")
    return total


def counting_config(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` as its matmuls are traced: the einsum attention and the modules' layers (the same
    matmuls as the fused implementations and kernels, visible as dot_generals on every backend)."""
    return cfg.replace(attention_impl="einsum", layer_impl="xla")


def encoder_forward(cfg: ModelConfig, seq_len: int | None = None) -> tuple[Any, tuple[Any, Any]]:
    """``(forward, (state, tokens))``: one eval-mode encoder forward of one sequence of
    ``seq_len`` (default ``max_len``) tokens as a function of the encoder's state, and its
    arguments (shapes only)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_encoder(cfg, nnx.Rngs(params=0))))

    def forward(state, tokens):
        return nnx.merge(graphdef, state)(tokens)

    return forward, (state, jax.ShapeDtypeStruct((1, seq_len or cfg.max_len), jnp.int32))


@functools.lru_cache(maxsize=256)
def encoder_matmul_flops(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """The matmul FLOPs of one encoder forward of one sequence of ``seq_len`` (default
    ``max_len``) tokens, from its jaxpr."""
    forward, args = encoder_forward(counting_config(cfg), seq_len)
    return matmul_flops(jax.make_jaxpr(forward)(*args).jaxpr,
                        f"model.arch={cfg.arch}: its traced encoder")
