"""The train state: one type for pre-training and fine-tuning, and one builder of its parameters,
shardings and graph definition (used by the pre-training and fine-tuning loops, ``aot`` and
``bench``).

The state is a plain dict at run time (so Orbax checkpoints and jitted functions see the same tree
as ever), typed with ``TypedDict`` for readers and checkers.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any, Callable, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from minilm_jax.model import accounting
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import MaskedLM
from minilm_jax.train.mesh import state_shardings


class TrainState(TypedDict):
    """One model's training state: parameters, the rest of the module state (e.g. BatchNorm
    statistics), optimizer state and the optimizer step (a scalar int32 array)."""

    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    step: jax.Array


class SelectedParams(TypedDict):
    """Each fine-tuning member's parameters at its best validation epoch so far."""

    params: nnx.State
    rest: nnx.State


class MembersState(TrainState):
    """Fine-tuning: S members trained together (leaves of params / rest / opt_state carry a leading
    member axis), their seeds and their selected parameters; ``step`` is shared."""

    selected: SelectedParams
    member_seeds: jax.Array


@dataclasses.dataclass(frozen=True)
class UnbuiltState:
    """A state not built yet: the restore target of its checkpoints (shapes, dtypes and shardings)
    and how to build it. A run that resumes restores into ``target`` and never calls ``build``
    (no initialiser compiled or run, no second copy of the state in memory)."""

    target: Any
    build: Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class BuiltState:
    """What a loop needs to run a state: graph definition, parameter counts, the abstract state and
    its shardings, and the jitted initialiser (``init(*args)`` gives the sharded state)."""

    graphdef: nnx.GraphDef
    param_counts: accounting.ParamCounts
    abstract: Any
    shardings: Any
    init: Callable[..., Any]

    def sharded_abstract(self) -> Any:
        """The state as ``ShapeDtypeStruct``s carrying their shardings (no memory): what
        ``checkpoint.abstract_like`` gives for the built state, and what ``aot`` lowers with."""
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            self.abstract, self.shardings)

    def unbuilt(self, *args: Any) -> UnbuiltState:
        """The state ``init(*args)`` gives, built only if nothing is restored."""
        return UnbuiltState(target=self.sharded_abstract(), build=lambda: self.init(*args))


# The model an initialiser builds while build_state traces it: its graph definition and parameter
# counts, taken there instead of from a second trace of the model (each trace of a model's
# construction costs a run ~30 ms at one layer, ~200 ms at six).
_BUILT_MODEL: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "built_model", default=None)


def record_model(model: nnx.Module) -> None:
    """Called by an initialiser with the model it built (a member's, under ``vmap``: the same
    graph and per-member counts): where :func:`build_state` traces it, the first one recorded is
    the state's graph definition and parameter counts; elsewhere nothing."""
    seen = _BUILT_MODEL.get()
    if seen is not None and not seen:
        seen.update(graphdef=nnx.split(model, nnx.Param, ...)[0],
                    param_counts=accounting.count_params(model))


def build_state(init_fn: Callable[..., Any], mesh: Any, *example_args: Any) -> BuiltState:
    """Trace ``init_fn(*example_args)`` for the state's shapes, and for the graph definition and
    parameter counts of the model it records (:func:`record_model`); shard the state over
    ``mesh`` (a ``Mesh`` or an ``AbstractMesh``)."""
    seen: dict[str, Any] = {}

    def recording(*args: Any) -> Any:
        token = _BUILT_MODEL.set(seen)
        try:
            return init_fn(*args)
        finally:
            _BUILT_MODEL.reset(token)

    abstract = jax.eval_shape(recording, *example_args)
    if not seen:
        raise TypeError(f"{init_fn!r} recorded no model: an initialiser passes the model it builds "
                        "to train.state.record_model")
    shardings = state_shardings(mesh, abstract)
    # jit of the function traced above: JAX reuses that trace for the initialiser
    return BuiltState(graphdef=seen["graphdef"], param_counts=seen["param_counts"],
                      abstract=abstract, shardings=shardings,
                      init=jax.jit(recording, out_shardings=shardings))


# A run's seed as its programs take it: an argument (one program serves every seed), a uint32
# scalar whose key is the one jax.random.key(seed) makes of the Python int (its low 32 bits).
SEED = jax.ShapeDtypeStruct((), jnp.uint32)


def seed_arg(seed: int) -> np.ndarray:
    """``seed`` as the programs' seed argument (:data:`SEED`)."""
    return np.asarray(int(seed) & 0xFFFFFFFF, np.uint32)


@dataclasses.dataclass(frozen=True)
class WithSeed:
    """``fn`` with a run's seed bound as its last argument: ``WithSeed(fn, seed)(*args)`` is
    ``fn(*args, seed_arg(seed))``; ``lower`` and ``trace`` likewise (``fn`` a ``jax.jit``
    function). Equal for the same function and seed."""

    fn: Any
    seed: int

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args, seed_arg(self.seed))

    def lower(self, *args: Any) -> Any:
        return self.fn.lower(*args, seed_arg(self.seed))

    def trace(self, *args: Any) -> Any:
        return self.fn.trace(*args, seed_arg(self.seed))


def lm_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh: Any) -> BuiltState:
    """The pre-training state of a ``MaskedLM``: ``init(seed_arg(seed))`` gives the state with
    parameters from ``seed``, one compiled initialiser for every seed."""

    def init_fn(seed: jax.Array) -> TrainState:
        model = MaskedLM(cfg, rngs=nnx.Rngs(params=jax.random.key(seed)))
        record_model(model)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt_state": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32)}

    return build_state(init_fn, mesh, SEED)
