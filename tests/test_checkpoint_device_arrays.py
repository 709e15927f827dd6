"""Checkpoints of device arrays (train/checkpoint.py), on the suite's 8 fake devices, with no program
compiled where none is needed: Orbax's replica-parallel write (each replica slices and writes its
part) kept for arrays whose per-replica part is at least ``MIN_REPLICA_SLICE_BYTES``, smaller ones
written whole by one replica; the best state held between evaluations a copy that outlives the
train step's donation of the state it was taken from."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from minilm_jax.train.checkpoint import MIN_REPLICA_SLICE_BYTES, Checkpoints


@contextlib.contextmanager
def compiled_programs():
    """The names of the programs XLA compiles inside the block."""
    names: list[str] = []

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/compilation_cache/compile_time_saved_sec" or not event.endswith(
                "backend_compile_duration"):
            return
        names.append(kwargs.get("fun_name", ""))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def replicated(rows: int, cols: int, seed: int) -> jax.Array:
    """A float32 (rows, cols) array on every device of the suite's 8, replicated."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    values = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return jax.device_put(values, NamedSharding(mesh, P()))


def save_and_restore(tmp_path, state: dict) -> tuple[list[str], dict]:
    checkpoints = Checkpoints(tmp_path / "run", keep=2, every_steps=1, every_minutes=1e9,
                              keep_best=False)
    with compiled_programs() as names:
        checkpoints.save(1, state)
    restored = checkpoints.latest.restore(1)
    checkpoints.close()
    return names, restored


def test_small_replicated_arrays_are_written_by_one_replica_without_slicing(tmp_path):
    devices = jax.device_count()
    assert devices == 8
    # each replica's part of every array: under MIN_REPLICA_SLICE_BYTES (here half of it or less)
    rows = MIN_REPLICA_SLICE_BYTES * devices // 2 // (4 * 64)  # float32, 64 columns
    state = {"big": replicated(rows, 64, 0), "w": replicated(37, 11, 1),
             "b": replicated(1, 5, 2)}
    assert state["big"].nbytes // devices == MIN_REPLICA_SLICE_BYTES // 2
    names, restored = save_and_restore(tmp_path, state)
    assert not [n for n in names if "slice" in n], names
    for key, value in state.items():
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value))


def test_an_array_with_a_replica_part_of_the_bound_is_still_split_among_replicas(tmp_path):
    devices = jax.device_count()
    rows = MIN_REPLICA_SLICE_BYTES * devices // (4 * 64)
    state = {"big": replicated(rows, 64, 3)}
    assert state["big"].nbytes // devices == MIN_REPLICA_SLICE_BYTES
    names, restored = save_and_restore(tmp_path, state)
    # one slicing program a device: each replica cuts its own part of the rows
    assert sum("slice" in n for n in names) == devices, names
    np.testing.assert_array_equal(np.asarray(restored["big"]), np.asarray(state["big"]))


def test_a_held_best_is_a_copy_that_outlives_the_donated_state(tmp_path):
    """``hold_best`` keeps a device copy with the state's shardings (no program compiled); the
    train step then donates the state's buffers; the best published later holds the held step's
    values."""
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "fsdp"))
    # (read back from the numpy values: a jax array read to numpy keeps a view of its buffer on a
    # CPU, and a buffer viewed is never donated)
    expected = {"w": np.arange(64, dtype=np.float32).reshape(16, 4),
                "b": np.ones((1, 5), np.float32)}
    specs = {"w": P("fsdp"), "b": P()}
    state = {key: jax.device_put(value.copy(), NamedSharding(mesh, specs[key]))
             for key, value in expected.items()}
    checkpoints = Checkpoints(tmp_path / "run", keep=2, every_steps=1, every_minutes=1e9,
                              keep_best=True)
    step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
    step(jax.tree.map(lambda x: x + 0, state))  # compiled before the copy's programs are counted
    with compiled_programs() as names:
        checkpoints.hold_best(7, state, {"loss": 1.5})
    assert names == []
    _, held, _ = checkpoints._held_best
    assert {k: v.sharding for k, v in held.items()} == {k: v.sharding for k, v in state.items()}
    after = step(state)
    assert {k: v.is_deleted() for k, v in state.items()} == dict.fromkeys(state, True)  # donated
    checkpoints.save(8, after)  # publishes the held best first
    best = checkpoints.best.restore(7)["state"]
    checkpoints.close()
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(best[key]), value)
