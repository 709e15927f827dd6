"""Pure, jitted train and eval steps for the masked LM.

The model is split once into a static ``graphdef`` and array state; the steps are functions of
arrays only: ``state = {"params", "rest", "opt_state", "step"}``. Masking and dropout keys derive
from ``(seed, step)``, so results do not depend on how the batch is sharded.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from minilm_jax.train.masking import (MaskedBatch, MaskingConfig, mask_tokens, maskable_positions,
                                      predicted)
from minilm_jax.train.members import over_members
from minilm_jax.train.optim import global_norm, optimizer_and_schedule

TrainState = dict[str, Any]


def make_update(graphdef: nnx.GraphDef) -> Callable[..., tuple[TrainState, dict]]:
    """``update(state, batch, optimizer, schedule, masking, base_key)``: one optimizer step over
    batch arrays ``[M, b, T]`` (M micro-batches accumulated). Masks and dropout keys derive from
    ``(base_key, step)``. A single run passes its config's objects; a population member passes
    its own (built from its traced values), so both compute the same function."""

    def micro_loss(params, rest, mb: MaskedBatch, segments_bt, key, *, masking: MaskingConfig):
        model = nnx.merge(graphdef, params, rest)
        loss_sum, count = model.mlm_loss(mb.inputs_bt, *predicted(mb, masking), segments_bt,
                                         dropout_key=key, train=True)
        new_rest = nnx.state(model, nnx.Not(nnx.Param))
        return loss_sum, (count, new_rest)

    def one_update(state: TrainState, batch: dict[str, jax.Array],
                   optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                   masking: MaskingConfig, base_key: jax.Array):
        k_mask, k_drop = jax.random.split(jax.random.fold_in(base_key, state["step"]))
        params = state["params"]
        micro, b, t = batch["tokens"].shape
        # Masks are drawn for the whole global batch at once: identical for any micro-batching.
        with jax.named_scope("masking"):  # the parts kernels are counted by (hlo_kernels)
            masked = mask_tokens(k_mask, batch["tokens"].reshape(micro * b, t),
                                 batch["segments"].reshape(micro * b, t), masking)
        masked = jax.tree.map(lambda x: x.reshape(micro, b, *x.shape[1:]), masked)

        def micro_grads(rest, mb: MaskedBatch, segments_bt, index):
            """((loss sum, (count, new rest)), grads) of micro-batch ``index``."""
            grad_fn = jax.value_and_grad(partial(micro_loss, masking=masking), has_aux=True)
            return grad_fn(params, rest, mb, segments_bt, jax.random.fold_in(k_drop, index))

        def accumulate(carry, xs):
            grads_acc, loss_acc, count_acc, rest = carry
            (loss_sum, (count, rest)), grads = micro_grads(rest, *xs)
            grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
            return (grads_acc, loss_acc + loss_sum, count_acc + count, rest), None

        if micro == 1:  # no accumulation loop: nothing between the gradients and the update
            (loss_sum, (count, rest)), grads = micro_grads(
                state["rest"], jax.tree.map(lambda x: x[0], masked), batch["segments"][0], 0)
        else:
            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, loss_sum, count, rest), _ = jax.lax.scan(
                accumulate, (zeros, jnp.zeros(()), jnp.zeros(()), state["rest"]),
                (masked, batch["segments"], jnp.arange(micro)))
        with jax.named_scope("optimizer"):
            denom = jnp.maximum(count, 1.0)
            grads = jax.tree.map(lambda g: g / denom, grads)
            updates, opt_state = optimizer.update(grads, state["opt_state"], params)
            new_state = {"params": optax.apply_updates(params, updates), "rest": rest,
                         "opt_state": opt_state, "step": state["step"] + 1}
            grad_norm = global_norm(grads)
        # predictions / maskable: the realised mask rate (summed over log windows and runs)
        metrics = {"loss": loss_sum / denom, "grad_norm": grad_norm,
                   "lr": schedule(state["step"]), "predictions": count,
                   "tokens": jnp.sum(batch["segments"] != 0),
                   "maskable": jnp.sum(maskable_positions(batch["tokens"], batch["segments"],
                                                          masking))}
        return new_state, metrics

    return one_update


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, masking: MaskingConfig
                    ) -> Callable[..., tuple[TrainState, dict]]:
    """``step_fn(state, batch, seed)`` with batch arrays ``[K, M, b, T]``: K optimizer updates per
    call (``lax.scan``), each accumulating gradients over M micro-batches. The run's ``seed`` (a
    uint32 scalar, :func:`minilm_jax.train.state.seed_arg`) is an argument, not a constant of the
    program: runs that differ in their seed only run one compiled program (a population member's
    key is made the same way)."""
    update = make_update(graphdef)

    def train_step(state: TrainState, batch: dict[str, jax.Array], seed: jax.Array):
        base_key = jax.random.key(seed)
        return jax.lax.scan(
            lambda s, b: update(s, b, optimizer, schedule, masking, base_key), state, batch)

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, masking: MaskingConfig, eval_seed: int
                   ) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``eval_fn(params, rest, tokens, segments, valid, batch_index[, mask_prob]) -> (loss_sum,
    count)``.

    Masks depend only on (eval_seed, batch_index) (and the mask probability, a population member's
    own when given): every checkpoint is scored on the same masks. Rows with ``valid == 0``
    (padding of the last batch) contribute nothing.
    """
    base_key = jax.random.key(eval_seed)

    def eval_step(params, rest, tokens_bt, segments_bt, valid_b, batch_index, mask_prob=None):
        cfg = masking if mask_prob is None else dataclasses.replace(masking, mask_prob=mask_prob)
        mb = mask_tokens(jax.random.fold_in(base_key, batch_index), tokens_bt, segments_bt, cfg)
        mb = dataclasses.replace(mb, weights_bp=mb.weights_bp * valid_b[:, None])
        model = nnx.merge(graphdef, params, rest)
        return model.mlm_loss(mb.inputs_bt, *predicted(mb, cfg), segments_bt)

    return eval_step


@dataclasses.dataclass(frozen=True)
class MemberGroup:
    """Members compiled as one vmapped (or mapped) function: their indices in the population,
    their shared graph definition (dropout rates), optimizer config (schedule kind) and
    masking (the mask probability is each member's own)."""

    indices: tuple[int, ...]
    graphdef: nnx.GraphDef
    optim: Any  # the members' shared ``optim`` config section
    masking: MaskingConfig
    one_vector: bool = False  # Adam's moments as one vector each (optim.moments_in_one_vector)


def member_objects(group: MemberGroup, total_steps: int, hyper: dict[str, jax.Array]
                   ) -> tuple[optax.GradientTransformation, optax.Schedule, MaskingConfig, jax.Array]:
    """One member's optimizer, schedule, masking and base key, from its values in ``hyper``
    (``seed``, ``mask_prob`` and :func:`~minilm_jax.train.optim.schedule_values`)."""
    values = {k: hyper[k] for k in ("peak_lr", "warmup", "end_lr", "weight_decay", "inv_warmup",
                                     "inv_span", "drop")}
    return (*optimizer_and_schedule(group.optim, total_steps, values, group.one_vector),
            dataclasses.replace(group.masking, mask_prob=hyper["mask_prob"]),
            jax.random.key(hyper["seed"]))


def _take(tree: Any, indices: tuple[int, ...], size: int) -> Any:
    """Members ``indices`` of every leaf (no copy when they are all members, in order)."""
    if indices == tuple(range(size)):
        return tree
    index = jnp.asarray(indices)
    return jax.tree.map(lambda x: x[index], tree)


def _put(tree: Any, part: Any, indices: tuple[int, ...], size: int) -> Any:
    if indices == tuple(range(size)):
        return part
    index = jnp.asarray(indices)
    return jax.tree.map(lambda x, p: x.at[index].set(p), tree, part)


def make_population_step(groups: list[MemberGroup], total_steps: int, size: int, members: str
                         ) -> Callable[[Any, dict[str, jax.Array]], tuple[Any, dict]]:
    """``step_fn(state, batch)`` for a population of ``size`` members: state leaves ``[N, ...]``
    (plus ``hyper`` values and ``live`` flags per member), batch arrays ``[N, K, M, b, T]``;
    metrics ``[K, N]``. Each member runs :func:`make_update` with its own values; a member whose
    loss turns non-finite keeps its last finite state and is no longer live (its step stops)."""
    def group_steps(group: MemberGroup):
        update = make_update(group.graphdef)

        def member_steps(state, batch):
            optimizer, schedule, masking, base_key = member_objects(group, total_steps,
                                                                    state["hyper"])

            def body(s, b):
                core = {k: s[k] for k in ("params", "rest", "opt_state", "step")}
                new, metrics = update(core, b, optimizer, schedule, masking, base_key)
                ok = s["live"] & jnp.isfinite(metrics["loss"])
                new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, core)
                return {**s, **new, "live": ok}, {**metrics, "live": s["live"]}

            return jax.lax.scan(body, state, batch)

        return over_members(member_steps, members)

    runners = [(g, group_steps(g)) for g in groups]

    def step_fn(state, batch):
        metrics_parts = {}
        for group, run in runners:
            sub, metrics = run(_take(state, group.indices, size), _take(batch, group.indices, size))
            state = _put(state, sub, group.indices, size)
            metrics_parts[group.indices] = metrics
        order = [i for g in groups for i in g.indices]
        inverse = jnp.argsort(jnp.asarray(order))
        merged = jax.tree.map(lambda *xs: jnp.concatenate(xs)[inverse], *metrics_parts.values())
        return state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), merged)  # [K, N]

    return step_fn


def make_population_eval(groups: list[MemberGroup], eval_seed: int, size: int, members: str
                         ) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``eval_fn(params, rest, mask_prob, tokens, segments, valid, batch_index) -> (loss sums
    [N], counts [N])``: every member scored on the same rows with its own mask probability."""
    runners = []
    for group in groups:
        step = make_eval_step(group.graphdef, group.masking, eval_seed)

        def member_eval(params, rest, mask_prob, tokens, segments, valid, index, step=step):
            return step(params, rest, tokens, segments, valid, index, mask_prob)

        runners.append((group, over_members(member_eval, members, shared=4)))

    def eval_fn(params, rest, mask_prob, tokens, segments, valid, batch_index):
        sums, counts = [], []
        for group, run in runners:
            p, r, m = _take((params, rest, mask_prob), group.indices, size)
            s, c = run(p, r, m, tokens, segments, valid, batch_index)
            sums.append(s)
            counts.append(c)
        inverse = jnp.argsort(jnp.asarray([i for g in groups for i in g.indices]))
        return jnp.concatenate(sums)[inverse], jnp.concatenate(counts)[inverse]

    return eval_fn
