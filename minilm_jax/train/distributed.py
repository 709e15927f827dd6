"""Several processes (TPU pod workers, multi-host GPU, CPU processes over Gloo) as one run.

:func:`maybe_initialize_distributed` joins the processes (both entry points call it first);
:func:`from_process_0` hands every process process 0's value of a JSON-able record, for decisions
and host-side state that must be identical everywhere (a fine-tuning run's history and model
selection).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize`` when ``distributed.initialize`` is set (multi-host runs).

    Must run before anything touches a JAX device. Fields left at their defaults (empty
    ``coordinator_address``, ``num_processes=0``, ``process_id=-1``) are detected by JAX from the
    cluster (Cloud TPU, SLURM, Open MPI, ...); otherwise ``coordinator_address`` is ``host:port`` of
    process 0 and ``num_processes`` / ``process_id`` name this process. CPU processes exchange
    collectives over Gloo (TCP).
    """
    dist = config.distributed
    if not dist.initialize or jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if dist.coordinator_address:
        kwargs["coordinator_address"] = dist.coordinator_address
    if int(dist.num_processes) > 0:
        kwargs["num_processes"] = int(dist.num_processes)
    if int(dist.process_id) >= 0:
        kwargs["process_id"] = int(dist.process_id)
    # CPU processes need a cross-process collectives implementation: Gloo (JAX 0.10's default),
    # unless one was chosen (e.g. mpi). Only the CPU client reads this flag.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    print(f"distributed: process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.local_device_count()} local of {jax.device_count()} devices", flush=True)


def from_process_0(value: Any) -> Any:
    """Process 0's ``value`` (anything ``json.dumps`` takes), on every process; ``value`` itself on
    a single process. Collective: every process must call it at the same point (the other
    processes' values are ignored, they may pass ``None``)."""
    if jax.process_count() == 1:
        return value
    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if jax.process_index() == 0 else None
    size = int(multihost_utils.broadcast_one_to_all(
        np.asarray(0 if data is None else data.size, np.int64)))
    if data is None:
        data = np.zeros(size, np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(data), np.uint8)
    return json.loads(data.tobytes().decode())


def gathered(tree: Any) -> Any:
    """``tree`` whole on this host (arrays sharded over several hosts gathered everywhere).
    Collective in a multi-host run: every process must call it."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return tree
