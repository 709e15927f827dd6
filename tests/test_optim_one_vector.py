"""Adam's moments as one vector each (what a GPU program runs, train.optim.over_one_vector) compute
the same optimizer as optax's per-leaf AdamW, and the global norm over one concatenated vector is
optax's; where each is used is the platform's rule (moments_in_one_vector)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minilm_jax.configs import pretrain
from minilm_jax.model.target_platform import building_for
from minilm_jax.train.optim import (_decay_mask, _schedule, global_norm, moments_in_one_vector,
                                    optimizer_and_schedule, schedule_values)

SHAPES = [(190, 32), (130, 32), (32,), (32, 32), (128,), (32, 128)]
STEPS = 6
ULP = 2.0 ** -23  # float32


def tree(seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {f"p{i}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(SHAPES)}


def run(optimizer, params):
    update = jax.jit(lambda p, g, s: (lambda u, s2: (optax.apply_updates(p, u), s2))(
        *optimizer.update(g, s, p)))
    state = optimizer.init(params)
    for step in range(STEPS):
        params, state = update(params, tree(100 + step), state)
    return params, state


@pytest.mark.parametrize("decay_mask", [False, True])
def test_one_vector_moments_train_as_optax_adamw(decay_mask):
    optim = pretrain.get_config("paper-1.25m").optim
    optim.decay_mask = decay_mask
    values = schedule_values(optim, 1000)
    reference = optax.adamw(_schedule(optim, 1000, values), b1=optim.b1, b2=optim.b2,
                            eps=optim.eps, weight_decay=values["weight_decay"],
                            mask=_decay_mask if decay_mask else None)
    want, want_state = run(reference, tree(0))
    per_leaf, _ = run(optimizer_and_schedule(optim, 1000)[0], tree(0))
    flat, flat_state = run(optimizer_and_schedule(optim, 1000, one_vector=True)[0], tree(0))
    # the per-leaf chain is optax.adamw's: the same bits
    for name in want:
        np.testing.assert_array_equal(per_leaf[name], want[name])
    # one vector: the same arithmetic element by element, each of Adam's ~8 operations rounded
    # at most one place apart: per step at most lr x (|direction| + decay x |p|) x 8 ulp, with
    # Adam's direction mu_hat / sqrt(nu_hat) below 3 at b1 = 0.9, b2 = 0.95 over a few steps,
    # and the sum p + update then rounding to a neighbouring float: one ulp of |p| a step
    lr_sum = sum(float(_schedule(optim, 1000, values)(s)) for s in range(STEPS))
    for name in want:
        largest = float(jnp.max(jnp.abs(want[name])))
        bound = (lr_sum * (3.0 + values["weight_decay"] * largest) * 8 * ULP
                 + STEPS * largest * ULP)
        assert float(jnp.max(jnp.abs(flat[name] - want[name]))) <= bound, name
    # the moments are one vector each, holding every leaf's in order
    mu_tree = jnp.concatenate([want_state[0].mu[k].ravel() for k in sorted(want)])
    assert flat_state[0].mu.shape == (sum(int(np.prod(s)) for s in SHAPES),)
    np.testing.assert_allclose(flat_state[0].mu, mu_tree, rtol=4 * ULP, atol=1e-30)


def test_global_norm_is_optax_global_norm():
    grads = tree(7)
    want = float(optax.tree.norm(grads))
    assert float(global_norm(grads)) == want  # this process builds for its CPU: optax's own
    with building_for("gpu"):  # one concatenated vector: the same sum in another order
        assert abs(float(global_norm(grads)) - want) <= 4 * ULP * want
    assert float(global_norm({})) == 0.0


def test_moments_are_one_vector_only_for_an_unsharded_gpu_program():
    assert not moments_in_one_vector(1)  # this process builds for its CPU
    with building_for("gpu"):
        assert moments_in_one_vector(1)
        assert not moments_in_one_vector(2)  # sharded leaves keep per-leaf moments
    with building_for("tpu"):
        assert not moments_in_one_vector(1)
