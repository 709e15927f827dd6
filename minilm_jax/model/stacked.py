"""K same-architecture models as one program: states stacked on a leading member axis K.

A stacked state has the tree of one member's state with every leaf ``[K, ...]``. Members share one
``graphdef``; :func:`vmap_members` maps any pure per-member function over the K axis, so a committee
forward, or K seeds trained on different data orders, compiles to one program::

    graphdef, params_k, rest_k = init_stacked(lambda key: build_classifier(cfg, 4, seed=key), [0, 1, 2])
    logits_kbc = jax.jit(stacked_apply(graphdef))(params_k, rest_k, tokens_bt)   # tokens shared
    logits_kbc = jax.jit(stacked_apply(graphdef, input_axes=0))(params_k, rest_k, tokens_kbt)

Training K members: write the per-member step as a pure function of ``(params, rest, *inputs)``
(merge inside, as :mod:`minilm_jax.train.step` does) and map it, e.g.
``jax.jit(vmap_members(step, input_axes=0))(params_k, rest_k, opt_state_k, batch_k, key_k)`` with
every extra per-member argument stacked on K too (``stack_states`` works on any pytree).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

State = Any  # an nnx.State or any pytree of arrays
InputAxes = int | None | Sequence[int | None]


def stack_states(states: Sequence[State]) -> State:
    """Stack K same-structure trees into one tree with leaves ``[K, ...]``."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    first = jax.tree.structure(states[0])
    for k, state in enumerate(states[1:], start=1):
        if jax.tree.structure(state) != first:
            raise ValueError(f"member {k} has a different state structure from member 0: "
                             "only same-architecture models can be stacked")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def num_members(stacked: State) -> int:
    """K, the size of the leading member axis (0 for an empty tree)."""
    leaves = jax.tree.leaves(stacked)
    return int(leaves[0].shape[0]) if leaves else 0


def unstack_state(stacked: State, k: int) -> State:
    """Member ``k``'s state (leaves without the K axis)."""
    size = num_members(stacked)
    if size and not -size <= k < size:
        raise IndexError(f"member {k} out of range for a stack of {size}")
    return _member(stacked, k)


# Member ``k`` of every leaf: one program for every member (indexing leaf by leaf compiles one per
# leaf shape and member in every process).
_member = jax.jit(lambda stacked, k: jax.tree.map(lambda leaf: leaf[k], stacked))


def stack_models(models: Sequence[nnx.Module]) -> tuple[nnx.GraphDef, State, State]:
    """``(graphdef, params_k, rest_k)`` from K existing same-architecture modules (e.g. loaded)."""
    splits = [nnx.split(model, nnx.Param, ...) for model in models]
    graphdef = splits[0][0]
    for k, (other, _, _) in enumerate(splits[1:], start=1):
        if other != graphdef:
            raise ValueError(f"model {k} differs in architecture from model 0: cannot stack")
    return (graphdef, stack_states([p for _, p, _ in splits]),
            stack_states([r for _, _, r in splits]))


def init_stacked(make_model: Callable[[jax.Array], nnx.Module], seeds: Sequence[int]
                 ) -> tuple[nnx.GraphDef, State, State]:
    """Initialise K models in one jitted ``vmap`` over ``seeds``: ``(graphdef, params_k, rest_k)``.

    ``make_model`` receives a traced ``jax.random.key(seed)`` and must pass it to ``nnx.Rngs``
    (``build_classifier(cfg, n, seed=key)`` does); member k then equals ``make_model(seeds[k])``
    built on its own, up to float rounding of jit versus eager.
    """
    if not seeds:
        raise ValueError("init_stacked needs at least one seed")
    graphdefs: list[nnx.GraphDef] = []

    def init_one(key: jax.Array) -> tuple[State, State]:
        graphdef, params, rest = nnx.split(make_model(key), nnx.Param, ...)
        graphdefs.append(graphdef)
        return params, rest

    keys_k = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
    params_k, rest_k = jax.jit(jax.vmap(init_one))(keys_k)
    return graphdefs[0], params_k, rest_k


def member_model(graphdef: nnx.GraphDef, params_k: State, rest_k: State, k: int) -> nnx.Module:
    """Member ``k`` as an ordinary module."""
    return nnx.merge(graphdef, unstack_state(params_k, k), unstack_state(rest_k, k))


def vmap_members(fn: Callable[..., Any], *, input_axes: InputAxes = None) -> Callable[..., Any]:
    """Map ``fn(params, rest, *inputs)`` over the member axis of ``params`` and ``rest``.

    ``input_axes``: ``None`` shares every input across members, ``0`` gives each member its own
    slice ``inputs[k]``; a sequence sets it per input (like ``jax.vmap``'s ``in_axes``).
    Outputs gain a leading K axis. The result is pure; jit it at the call site.
    """
    def mapped(params_k: State, rest_k: State, *inputs: Any) -> Any:
        if isinstance(input_axes, (int, type(None))):
            axes = (input_axes,) * len(inputs)
        else:
            axes = tuple(input_axes)
            if len(axes) != len(inputs):
                raise ValueError(f"{len(axes)} input axes for {len(inputs)} inputs")
        return jax.vmap(fn, in_axes=(0, 0) + axes)(params_k, rest_k, *inputs)

    return mapped


def stacked_apply(graphdef: nnx.GraphDef, *, input_axes: InputAxes = None) -> Callable[..., Any]:
    """Pure ``(params_k, rest_k, *inputs) -> outputs [K, ...]``: each member's ``model(*inputs)``
    (eval mode: no dropout, BatchNorm running statistics)."""
    def apply_one(params: State, rest: State, *inputs: Any) -> Any:
        return nnx.merge(graphdef, params, rest)(*inputs)

    return vmap_members(apply_one, input_axes=input_axes)
