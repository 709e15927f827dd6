"""A checkpoint of arrays replicated over several devices: Orbax's replica-parallel write (each
replica slices and writes its part) is kept for arrays whose per-replica part is at least
``MIN_REPLICA_SLICE_BYTES``; smaller arrays are written whole by one replica, with no slicing
program compiled per shape and device (train/checkpoint.py). Runs on the suite's 8 fake devices."""

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
