"""Pure, jitted train and eval steps for the masked LM.

The model is split once into a static ``graphdef`` and array state; the steps are functions of
arrays only: ``state = {"params", "rest", "opt_state", "step"}``. Masking and dropout keys derive
from ``(seed, step)``, so results do not depend on how the batch is sharded.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from minilm_jax.train.masking import MaskedBatch, MaskingConfig, mask_tokens

TrainState = dict[str, Any]


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, masking: MaskingConfig, seed: int
                    ) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict]]:
    """``step_fn(state, batch)`` with batch arrays ``[K, M, b, T]``: K optimizer updates per call
    (``lax.scan``), each accumulating gradients over M micro-batches."""
    base_key = jax.random.key(seed)

    def micro_loss(params, rest, mb: MaskedBatch, segments_bt, key):
        model = nnx.merge(graphdef, params, rest)
        loss_sum, count = model.mlm_loss(mb.inputs_bt, mb.positions_bp, mb.targets_bp,
                                         mb.weights_bp, segments_bt, dropout_key=key, train=True)
        new_rest = nnx.state(model, nnx.Not(nnx.Param))
        return loss_sum, (count, new_rest)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def one_update(state: TrainState, batch: dict[str, jax.Array]):
        k_mask, k_drop = jax.random.split(jax.random.fold_in(base_key, state["step"]))
        params = state["params"]
        micro, b, t = batch["tokens"].shape
        # Masks are drawn for the whole global batch at once: identical for any micro-batching.
        masked = mask_tokens(k_mask, batch["tokens"].reshape(micro * b, t),
                             batch["segments"].reshape(micro * b, t), masking)
        masked = jax.tree.map(lambda x: x.reshape(micro, b, *x.shape[1:]), masked)

        def micro_grads(rest, mb: MaskedBatch, segments_bt, index):
            """((loss sum, (count, new rest)), grads) of micro-batch ``index``."""
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
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "rest": rest,
                     "opt_state": opt_state, "step": state["step"] + 1}
        metrics = {"loss": loss_sum / denom, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state["step"]), "predictions": count,
                   "tokens": jnp.sum(batch["segments"] != 0)}
        return new_state, metrics

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        return jax.lax.scan(one_update, state, batch)

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, masking: MaskingConfig, eval_seed: int
                   ) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``eval_fn(params, rest, tokens, segments, valid, batch_index) -> (loss_sum, count)``.

    Masks depend only on (eval_seed, batch_index): every checkpoint is scored on the same masks.
    Rows with ``valid == 0`` (padding of the last batch) contribute nothing.
    """
    base_key = jax.random.key(eval_seed)

    def eval_step(params, rest, tokens_bt, segments_bt, valid_b, batch_index):
        mb = mask_tokens(jax.random.fold_in(base_key, batch_index), tokens_bt, segments_bt, masking)
        model = nnx.merge(graphdef, params, rest)
        return model.mlm_loss(mb.inputs_bt, mb.positions_bp, mb.targets_bp,
                              mb.weights_bp * valid_b[:, None], segments_bt)

    return eval_step
