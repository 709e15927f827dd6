"""Orbax checkpoints: the last K train states (every N steps and every M minutes), the best one by
validation loss and snapshots at fixed steps; each step sealed (:mod:`~minilm_jax.train.seal`) and
checked before it is read: a corrupt newest checkpoint is quarantined and the run falls back to the
previous one, a checkpoint of another run is refused, and no readable checkpoint at all is an error,
never a silent restart."""

from __future__ import annotations

import functools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

import minilm_jax.held_folders as held_folders
from minilm_jax.deferred_import import Deferred
from minilm_jax.errors import StorageError, UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import MaskedLM
from minilm_jax.model.registry import encoder_factory
import minilm_jax.run_identity as run_identity
from minilm_jax.run_identity import QUIET_DEFAULTS
from minilm_jax.storage import RunPath, is_remote, run_path
from minilm_jax.train import seal
from minilm_jax.train.records import is_done


ocp = Deferred("orbax.checkpoint")  # imported at the first checkpoint opened, saved or read


class CheckpointError(UserError):
    """A checkpoint that cannot be used: corrupt, of another run, or not restorable."""


class CheckpointWriteError(CheckpointError, StorageError):
    """Saving a checkpoint failed (the storage, not the state)."""


def _storage_cause(err: BaseException) -> str:
    """The operating-system cause inside an Orbax / TensorStore write error, in a few words."""
    text = str(err)
    code = re.search(r"os_error_code='?(\d+)", text)
    path = re.search(r'Failed (?:writing|to write)[^"]*"([^"]+)"', text)
    if code:
        cause = os.strerror(int(code.group(1)))
        return f"{cause}: {path.group(1)}" if path else cause
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {_first_line(err)}"


# Orbax splits the write of an array replicated over several devices among the replicas, each
# slicing its part on its device first: one compiled slice per leaf shape and device in every
# process (a tiny model's state on 8 devices: ~70 programs at its first save, 1.5 CPU-seconds
# against 0.14 for four saves written from one replica). Slices under this many bytes are not
# worth it: their arrays are written whole by one replica; a large model's big arrays still are
# written in parallel.
MIN_REPLICA_SLICE_BYTES = 1 << 20


@functools.cache
def small_arrays_from_one_replica() -> None:
    """Register Orbax's array handler with ``MIN_REPLICA_SLICE_BYTES`` (the default handler's
    array metadata kept), once per process, before the first checkpoint is written."""
    default = ocp.type_handlers.get_type_handler(jax.Array)
    handler = ocp.type_handlers.ArrayHandler(
        array_metadata_store=getattr(default, "_array_metadata_store", None),
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _device_copy(state: Any) -> Any:
    """A copy of a state's arrays where they are, with their shardings (the runtime copies the
    buffers: no program is compiled, where a jitted copy compiled one per state's shapes in every
    process)."""
    return jax.device_put(state, jax.tree.map(lambda x: x.sharding, state), may_alias=False)


class Checkpoints:
    """Wraps ``ocp.CheckpointManager``s for ``<workdir>/checkpoints``, ``best`` and ``snapshots``.

    ``identity`` (the run's flattened config) is sealed into every step; a checkpoint whose sealed
    identity differs outside ``resumable`` fields is refused."""

    def __init__(self, workdir: str | Path, *, keep: int, every_steps: int, every_minutes: float,
                 keep_best: bool, snapshot_steps: tuple[int, ...] = (),
                 identity: dict[str, Any] | None = None, resumable: tuple[str, ...] = ()):
        workdir = str(workdir)
        # Orbax needs absolute paths; gs:// and other URLs pass through.
        root = epath.Path(run_path(workdir) if is_remote(workdir) else os.path.abspath(workdir))
        self.root = root
        self.identity, self.resumable = identity, tuple(resumable)
        self.every_steps = max(1, int(every_steps))
        self.every_seconds = float(every_minutes) * 60.0
        self._last_save_time = time.monotonic()
        small_arrays_from_one_replica()
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False))
        # The best state: one step, replaced only once its successor is saved and sealed
        # (:meth:`save_best`), so best/ always holds a finished, evaluated step.
        self.best = (ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False))
            if keep_best else None)
        self._held_best: tuple[int, Any, dict[str, float]] | None = None  # see hold_best
        # Snapshots: states at fixed steps (fractions of the run), never deleted; fine-tuning can
        # start from any of them (``init.which=step:N``).
        self.snapshot_steps = tuple(sorted(set(int(s) for s in snapshot_steps)))
        self.snapshots = (ocp.CheckpointManager(
            root / "snapshots",
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False))
            if self.snapshot_steps else None)

    # ------------------------------------------------------------------------------ saving
    def _step_dir(self, manager: ocp.CheckpointManager, step: int) -> epath.Path:
        return epath.Path(str(manager.directory)) / str(step)

    def _write(self, manager: ocp.CheckpointManager, step: int, args: Any) -> None:
        """Save ``step`` (replacing a corrupt copy of it) and seal it."""
        held_folders.check()  # a held root moved away: no checkpoint re-creates its old path
        if step in manager.all_steps():
            if seal.verify(self._step_dir(manager, step)).ok:
                return
            self._quarantine(manager, [step], "it is corrupt or was never sealed")
        try:
            manager.save(step, args=args, force=True)
            manager.wait_until_finished()
            if jax.process_index() == 0:
                seal.write_seal(self._step_dir(manager, step), self.identity)
        except Exception as err:  # disk full, read-only, quota: Orbax wraps the OS error
            held_folders.check()  # the folder went away during the write: say that
            raise CheckpointWriteError(
                f"cannot save the checkpoint at step {step} in {manager.directory} "
                f"({_storage_cause(err)}); the earlier checkpoints are kept") from err
        _sync("seal")

    def save_snapshot(self, step: int, state: Any) -> None:
        """Keep ``state`` at ``step`` if it is a snapshot step (and not saved already)."""
        if self.snapshots is None or step not in self.snapshot_steps:
            return
        self._write(self.snapshots, step, ocp.args.StandardSave(state))

    def saved_steps(self) -> list[int]:
        """The steps of the kept regular checkpoints (what a resumption can start from)."""
        return list(self.latest.all_steps())

    def due(self, step: int) -> bool:
        """Whether ``step`` is a save point by count or by elapsed time."""
        return (step % self.every_steps == 0
                or time.monotonic() - self._last_save_time >= self.every_seconds)

    def save(self, step: int, state: Any) -> None:
        self.publish_best()  # first: best/ never lags behind the checkpoint a resumption starts from
        self._write(self.latest, step, ocp.args.StandardSave(state))
        self._last_save_time = time.monotonic()

    def hold_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        """Keep ``state`` as the best so far (a device copy) and publish it with the next regular
        checkpoint, or when the best is read or these checkpoints are closed: an improving
        evaluation costs no write. ``best/`` always reflects every evaluation up to the newest
        checkpoint, and a resumed run evaluates the later steps again."""
        if self.best is not None:
            self._held_best = (step, _device_copy(state), metrics)

    def publish_best(self) -> None:
        """Write the best held by :meth:`hold_best`, if any."""
        held, self._held_best = self._held_best, None
        if held is not None:
            self.save_best(*held)

    def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        """Publish ``state`` as the best: the new step is written and sealed before the old one is
        deleted, so a kill at any moment leaves a complete best (readers take the newest sealed)."""
        if self.best is None:
            return
        self._write(self.best, step, ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        metrics=ocp.args.JsonSave(metrics)))
        for old in self.best.all_steps():
            if old != step:
                self.best.delete(old)

    # ----------------------------------------------------------------------------- reading
    def _quarantine(self, manager: ocp.CheckpointManager, steps: list[int], why: str) -> None:
        """Move ``steps`` aside (process 0), then make ``manager`` forget them."""
        for step in steps:
            if jax.process_index() == 0:
                target = seal.quarantine(self._step_dir(manager, step), self.root)
                print(f"warning: {manager.directory.name}/{step} {why}: moved to {target}",
                      flush=True)
        _sync("quarantine")
        manager.reload()

    def _check_identity(self, where: str, verdict: seal.Verdict) -> None:
        if self.identity is None or verdict.identity is None:
            return
        diffs = run_identity.hold(verdict.identity, dict(self.identity), self.resumable,
                                  QUIET_DEFAULTS, where)
        if diffs:
            raise CheckpointError(f"{where} was written by a run with a different config "
                                  f"({run_identity.describe(verdict.identity, self.identity, diffs)}"
                                  "); use a new --workdir")

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any] | None:
        """Newest usable (step, state), or None when there is no checkpoint.

        Sealed checkpoints are preferred: corrupt and unsealed ones newer than the newest sealed one
        are quarantined (the run then recomputes and saves those steps). With no sealed checkpoint,
        the newest unsealed one is used (with a note). A checkpoint of another config, or one that
        verifies but does not restore (another model's shapes), is an error that moves nothing;
        checkpoints that exist but none usable is an error naming each."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            return None
        verdicts = {step: seal.verify(self._step_dir(self.latest, step)) for step in steps}
        sealed = [s for s in steps if verdicts[s].ok]
        unsealed = [s for s in steps if verdicts[s].state == "unsealed"]
        chosen = sealed[0] if sealed else (unsealed[0] if unsealed else None)
        where = str(self._step_dir(self.latest, chosen)) if chosen is not None else ""
        if chosen is None:
            failures = "; ".join(f"step {s}: {verdicts[s].reason}" for s in steps)
            raise CheckpointError(f"no usable checkpoint in {self.latest.directory} ({failures}); "
                                  "nothing was changed: move the folder aside to start over")
        self._check_identity(f"checkpoint {where}", verdicts[chosen])
        try:
            state = self.latest.restore(chosen, args=ocp.args.StandardRestore(abstract_state))
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {where} ({verdicts[chosen].state}) does not restore into this run's "
                f"state ({type(err).__name__}: {_first_line(err)}); nothing was changed") from err
        newer = [s for s in steps if s > chosen]
        for step in newer:
            self._quarantine(self.latest, [step], f"is not usable ({verdicts[step].reason})")
        if newer:
            print(f"warning: falling back to the checkpoint at step {chosen}", flush=True)
        if not verdicts[chosen].ok:
            print(f"note: checkpoint at step {chosen} has no seal; restored unverified", flush=True)
        return chosen, state

    def _verified_best(self) -> int | None:
        """The best step: the newest sealed one (a newer unsealed one was being published when
        the run stopped), else an unsealed one (it predates seals); a corrupt newest is an error."""
        if self.best is None or self.best.latest_step() is None:
            return None
        steps = sorted(self.best.all_steps(), reverse=True)
        verdicts = {step: seal.verify(self._step_dir(self.best, step)) for step in steps}
        if verdicts[steps[0]].state == "corrupt":
            raise CheckpointError(f"best checkpoint {self._step_dir(self.best, steps[0])} is "
                                  f"corrupt ({verdicts[steps[0]].reason}); move it aside to go on "
                                  "without it")
        step = next((s for s in steps if verdicts[s].ok), steps[0])
        self._check_identity(f"best checkpoint {self._step_dir(self.best, step)}", verdicts[step])
        return step

    def restore_best(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        self.publish_best()
        step = self._verified_best()
        if step is None:
            return None
        out = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), metrics=ocp.args.JsonRestore()))
        return step, out.state, dict(out.metrics)

    def best_metrics(self) -> dict | None:
        self.publish_best()
        step = self._verified_best()
        if step is None:
            return None
        out = self.best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
        return dict(out.metrics)

    def close(self) -> None:
        self.publish_best()
        self.latest.close()
        if self.snapshots is not None:
            self.snapshots.close()
        if self.best is not None:
            self.best.close()


def _sync(name: str) -> None:
    """A barrier across processes (no-op on one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"checkpoint {name}")


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs with shardings, as Orbax restore targets."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


# ------------------------------------------------------------------ the on-disk layout, for readers
def find_checkpoint(workdir: RunPath, which: str) -> tuple[int, RunPath]:
    """(step, directory of the saved train state): ``best``, ``latest`` or ``step:N`` (a snapshot
    or a kept checkpoint at step N), in a local or ``gs://`` workdir."""
    workdir = run_path(str(workdir))
    if which.startswith("step:"):
        try:
            step = int(which[len("step:"):])
        except ValueError:
            raise UserError(f"init.which={which!r}: expected step:<integer>") from None
        for folder in ("snapshots", "checkpoints"):
            path = workdir / folder / str(step) / "default"
            if path.is_dir():
                return step, path
        raise UserError(f"no checkpoint at step {step} in {workdir} (snapshots/{step} or "
                        f"checkpoints/{step}); set checkpoint.keep_fractions when pre-training")
    if which not in ("best", "latest"):
        raise UserError(f"init.which must be 'best', 'latest' or 'step:N', not {which!r}")
    if which == "best":
        best = published_best(workdir)
        if best is not None:
            return best
        if keeps_best(workdir) and not is_done(workdir):
            raise UserError(f"no evaluated best checkpoint in {workdir} yet (best/ holds no "
                            "finished step and the run has not finished); use the newest "
                            "checkpoint instead with which=latest (--which latest, "
                            "init.which=latest)")
        # a run that keeps no best, or finished without evaluating: its newest checkpoint
    candidates = sorted(((int(p.name), p / "default") for p in (workdir / "checkpoints").glob("*")
                         if p.name.isdigit() and (p / "default").is_dir()), reverse=True)
    if not candidates:
        raise UserError(f"no checkpoint in {workdir} (expected best/<step>/state or "
                        "checkpoints/<step>/default)")
    # the newest sealed one: a newer unsealed one is being sealed (or predates seals: then newest)
    sealed = [c for c in candidates if (c[1].parent / seal.SEAL_NAME).exists()]
    return (sealed or candidates)[0]


def published_best(workdir: RunPath) -> tuple[int, RunPath] | None:
    """(step, state directory) of the best checkpoint in ``workdir``: the newest sealed step of
    ``best/`` (a newer unsealed one is still being published), or the newest unsealed one when
    none is sealed (it predates seals); None when ``best/`` holds no finished step."""
    steps = sorted(((int(p.name), p) for p in (workdir / "best").glob("*")
                    if p.name.isdigit() and (p / "state").is_dir()), reverse=True)
    sealed = [(step, path) for step, path in steps if (path / seal.SEAL_NAME).exists()]
    chosen = (sealed or steps or [None])[0]
    return None if chosen is None else (chosen[0], chosen[1] / "state")


def keeps_best(workdir: RunPath) -> bool:
    """Whether the run in ``workdir`` keeps a best checkpoint (``checkpoint.keep_best`` with a
    validation split); a run that keeps none is read from its newest checkpoint instead."""
    try:
        flat = json.loads((workdir / "config.json").read_text())
    except (OSError, ValueError):
        return True  # unknown: never guess that an unevaluated step will do
    return bool(flat.get("checkpoint.keep_best", True)) and bool(flat.get("data.eval_split", "x"))


def load_encoder(checkpoint_dir: RunPath, model: ModelConfig) -> nnx.State:
    """The encoder part (parameters and other state, e.g. BatchNorm statistics) of the ``MaskedLM``
    train state saved in ``checkpoint_dir`` (from :func:`find_checkpoint`), as host arrays in the
    layout of ``SequenceClassifier.encoder``; nothing else is read."""
    return load_model_state(checkpoint_dir, model, part="encoder")


@functools.lru_cache(maxsize=32)
def _host_shapes(model: ModelConfig, factory: Any, part: str | None) -> tuple[Any, Any]:
    """The (parameters, rest) of the ``MaskedLM`` ``model`` builds, or of its ``part``, as shapes
    on this process's first device (traced once per config and encoder class in a process)."""
    del factory  # in the key only: an encoder module imported again builds another encoder
    abstract = nnx.eval_shape(lambda: MaskedLM(model, rngs=nnx.Rngs(params=0)))
    _, params, rest = nnx.split(getattr(abstract, part) if part else abstract, nnx.Param, ...)
    host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host),
                        (params, rest))


def load_model_state(checkpoint_dir: RunPath, model: ModelConfig,
                     part: str | None = None) -> nnx.State:
    """The ``MaskedLM`` state (parameters and other state) saved in ``checkpoint_dir``, or only its
    ``part`` (e.g. ``"encoder"``), as host arrays; optimizer state is never read."""
    kept = _host_shapes(model, encoder_factory(model.arch), part)
    params, rest = jax.tree.map(lambda x: x, kept)  # new containers: the kept ones stay as built
    nest = (lambda tree: {part: tree}) if part else (lambda tree: tree)
    item: dict[str, Any] = {"params": nest(params)}
    if jax.tree.leaves(rest):
        item["rest"] = nest(rest)
    checkpoint_dir = run_path(str(checkpoint_dir))
    verdict = seal.verify(checkpoint_dir.parent)
    if verdict.state == "corrupt":
        raise CheckpointError(f"checkpoint {checkpoint_dir.parent} is corrupt "
                              f"({verdict.reason}); use another (init.which) or re-create it")
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            str(checkpoint_dir if is_remote(checkpoint_dir) else checkpoint_dir.resolve()),
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True))
    except Exception as err:  # shape mismatch, partial write
        raise CheckpointError(f"cannot read the {part or 'model'} of {checkpoint_dir} "
                              f"({type(err).__name__}: {_first_line(err)})") from err
    unnest = (lambda tree: tree[part]) if part else (lambda tree: tree)
    parts = [unnest(restored["params"])] + ([unnest(restored["rest"])] if "rest" in item else [])
    state = nnx.merge_state(*parts) if len(parts) > 1 else parts[0]
    return jax.tree.map(np.asarray, state)  # host arrays: placed by the caller's jit
