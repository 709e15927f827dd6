"""Pure, jitted fine-tuning steps for S members (seeds) trained together with ``jax.vmap``.

State leaves carry a leading member axis ``S``: ``{"params", "rest", "opt_state"}`` stacked, plus a
shared scalar ``step`` and ``selected`` (``{"params", "rest"}``: each member's parameters at its best
validation epoch so far, see :func:`make_select`). Batches are ``[K, S, B, T]`` (K optimizer steps per dispatch via
``lax.scan``; every member sees its own data order). Dropout keys derive from (member seed, step).

A population of fine-tuning runs (several pre-trained checkpoints of one shape, each with the same
seeds: ``S`` = checkpoints x seeds) starts every member from its own encoder and carries
``active [S]``: a member whose run stopped early keeps its parameters and optimizer state (the
update is masked), so each run ends where it would have ended alone.

How the S members run inside the one compiled program is ``members`` (:mod:`minilm_jax.train.members`:
``vmap``, ``map`` or ``auto``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import SequenceClassifier
from minilm_jax.train.members import MEMBER_STRATEGIES, members_strategy, over_members  # noqa: F401
from minilm_jax.train.state import BuiltState, MembersState, build_state, record_model

FinetuneState = MembersState


def example_losses(logits_bc: jax.Array, labels_b: jax.Array, regression: bool) -> jax.Array:
    """Per-example loss ``[B]``: squared error (regression) or softmax cross-entropy."""
    logits_bc = logits_bc.astype(jnp.float32)
    if regression:
        return jnp.square(logits_bc[:, 0] - labels_b.astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits_bc, labels_b.astype(jnp.int32))


def make_finetune_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                       schedule: optax.Schedule, regression: bool, members: str = "auto"
                       ) -> Callable[[FinetuneState, dict[str, jax.Array]], tuple[FinetuneState, dict]]:
    """``step_fn(state, batch)``: batch arrays ``[K, S, B, T]`` (labels ``[K, S, B]``), plus
    ``member_seeds [S]`` in the state."""

    def loss_fn(params, rest, batch, key):
        model = nnx.merge(graphdef, params, rest)
        logits_bc = model(batch["tokens"], batch["segments"], batch["token_types"],
                          dropout_key=key, train=True)
        loss = jnp.mean(example_losses(logits_bc, batch["labels"], regression))
        return loss, nnx.state(model, nnx.Not(nnx.Param))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def member_update(params, rest, opt_state, batch, seed, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        (loss, rest), grads = grad_fn(params, rest, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state,
                {"loss": loss, "grad_norm": optax.global_norm(grads)})

    members_update = over_members(member_update, members, shared=1)

    def one_update(state: FinetuneState, batch: dict[str, jax.Array]):
        params, rest, opt_state, metrics = members_update(
            state["params"], state["rest"], state["opt_state"], batch, state["member_seeds"],
            state["step"])
        if "active" in state:  # a population: members of stopped runs keep their state
            params, rest, opt_state = jax.tree.map(
                lambda new, old: where_members(state["active"], new, old),
                (params, rest, opt_state), (state["params"], state["rest"], state["opt_state"]))
        metrics["lr"] = schedule(state["step"])
        return {**state, "params": params, "rest": rest, "opt_state": opt_state,
                "step": state["step"] + 1}, metrics

    def step_fn(state: FinetuneState, batch: dict[str, jax.Array]):
        return jax.lax.scan(one_update, state, batch)

    return step_fn


def where_members(mask_s: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """Per member (leading axis): ``new`` where ``mask_s`` is true, else ``old``."""
    return jnp.where(mask_s.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


def make_members_init(cfg: ModelConfig, num_labels: int, optimizer: optax.GradientTransformation,
                      population: bool = False) -> Callable[[jax.Array, Any], FinetuneState]:
    """``init(seeds [S], encoder_state | None) -> state``: S classifiers (heads, and encoders
    when no pre-trained encoder state is given, initialised from their seed) with optimizer state.
    ``population``: the encoder state is stacked, one per member, and the state carries
    ``active``."""

    def init_member(seed, encoder):
        model = SequenceClassifier(cfg, num_labels, rngs=nnx.Rngs(params=jax.random.key(seed)))
        record_model(model)
        if encoder is not None:
            nnx.update(model.encoder, encoder)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt_state": optimizer.init(params)}

    def init(seeds_s: jax.Array, encoder) -> FinetuneState:
        members = jax.vmap(init_member, in_axes=(0, 0 if population else None))(seeds_s, encoder)
        selected = {"params": members["params"], "rest": members["rest"]}
        state = {**members, "selected": selected, "step": jnp.zeros((), jnp.int32),
                 "member_seeds": seeds_s}
        if population:
            state["active"] = jnp.ones(seeds_s.shape, bool)
        return state

    return init


def members_state(cfg: ModelConfig, num_labels: int, optimizer: optax.GradientTransformation,
                  num_members: int, mesh: Any, encoder_state: Any = None, population: bool = False
                  ) -> BuiltState:
    """The fine-tuning state of ``num_members`` members (train.state.build_state); ``init(encoder,
    seeds)`` gives it for the members' ``seeds`` (int32 ``[S]``, an argument: one compiled
    initialiser for any seeds), from ``encoder`` (a pre-trained encoder of ``encoder_state``'s
    shapes; stacked per member for a ``population``) or random init (``None``)."""
    init = make_members_init(cfg, num_labels, optimizer, population)
    return build_state(lambda encoder, seeds_s: init(seeds_s, encoder), mesh, encoder_state,
                       jax.ShapeDtypeStruct((int(num_members),), jnp.int32))


def make_predict_step(graphdef: nnx.GraphDef, members: str = "auto") -> Callable[..., jax.Array]:
    """``predict(params, rest, tokens, segments, token_types) -> logits [S, B, C]`` (eval mode)."""

    def member_logits(params, rest, tokens_bt, segments_bt, types_bt):
        model = nnx.merge(graphdef, params, rest)
        return model(tokens_bt, segments_bt, types_bt).astype(jnp.float32)

    return over_members(member_logits, members, shared=3)


def make_select() -> Callable[[FinetuneState, jax.Array], FinetuneState]:
    """``select(state, improved [S] bool)``: members with ``improved`` copy their current parameters
    into ``state["selected"]``; the others keep theirs."""

    def select(state: FinetuneState, improved_s: jax.Array) -> FinetuneState:
        chosen = {k: jax.tree.map(lambda n, o: where_members(improved_s, n, o), state[k],
                                  state["selected"][k])
                  for k in ("params", "rest")}
        return {**state, "selected": chosen}

    return select
