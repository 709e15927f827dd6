"""Orbax checkpoints: the last K train states (every N steps and every M minutes), the best one by
validation loss, and fallback to the previous step when the newest is corrupt or partial."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import MaskedLM

log = logging.getLogger(__name__)


class Checkpoints:
    """Wraps two ``ocp.CheckpointManager``s: ``<workdir>/checkpoints`` and ``<workdir>/best``."""

    def __init__(self, workdir: str | Path, *, keep: int, every_steps: int, every_minutes: float,
                 keep_best: bool, snapshot_steps: tuple[int, ...] = ()):
        workdir = str(workdir)
        # Orbax needs absolute paths; gs:// and other URLs pass through.
        root = epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))
        self.every_steps = max(1, int(every_steps))
        self.every_seconds = float(every_minutes) * 60.0
        self._last_save_time = time.monotonic()
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False))
        self.best = (ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                 enable_async_checkpointing=False))
            if keep_best else None)
        # Snapshots: states at fixed steps (fractions of the run), never deleted; fine-tuning can
        # start from any of them (``init.which=step:N``).
        self.snapshot_steps = tuple(sorted(set(int(s) for s in snapshot_steps)))
        self.snapshots = (ocp.CheckpointManager(
            root / "snapshots",
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False))
            if self.snapshot_steps else None)

    def save_snapshot(self, step: int, state: Any) -> None:
        """Keep ``state`` at ``step`` if it is a snapshot step (and not saved already)."""
        if self.snapshots is None or step not in self.snapshot_steps:
            return
        if step in self.snapshots.all_steps():
            return
        self.snapshots.save(step, args=ocp.args.StandardSave(state), force=True)
        self.snapshots.wait_until_finished()

    def due(self, step: int) -> bool:
        """Whether ``step`` is a save point by count or by elapsed time."""
        return (step % self.every_steps == 0
                or time.monotonic() - self._last_save_time >= self.every_seconds)

    def save(self, step: int, state: Any) -> None:
        if step in self.latest.all_steps():
            return
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)
        self.latest.wait_until_finished()
        self._last_save_time = time.monotonic()

    def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        if self.best is None:
            return
        for old in self.best.all_steps():
            self.best.delete(old)
        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     metrics=ocp.args.JsonSave(metrics)), force=True)
        self.best.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any] | None:
        """Newest restorable (step, state); a corrupt newest checkpoint falls back with a warning."""
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                state = self.latest.restore(step, args=ocp.args.StandardRestore(abstract_state))
                return step, state
            except Exception as err:  # corrupt or partial: try the previous one
                log.warning("checkpoint at step %d is unreadable (%s: %s); falling back to an "
                            "earlier one", step, type(err).__name__, str(err).splitlines()[0][:200])
                print(f"warning: checkpoint at step {step} is unreadable "
                      f"({type(err).__name__}); falling back to an earlier one", flush=True)
        return None

    def restore_best(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        if self.best is None or self.best.latest_step() is None:
            return None
        step = self.best.latest_step()
        out = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), metrics=ocp.args.JsonRestore()))
        return step, out.state, dict(out.metrics)

    def best_metrics(self) -> dict | None:
        if self.best is None or self.best.latest_step() is None:
            return None
        step = self.best.latest_step()
        out = self.best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
        return dict(out.metrics)

    def close(self) -> None:
        self.latest.close()
        if self.snapshots is not None:
            self.snapshots.close()
        if self.best is not None:
            self.best.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs with shardings, as Orbax restore targets."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


# ------------------------------------------------------------------ the on-disk layout, for readers
def find_checkpoint(workdir: Path, which: str) -> tuple[int, Path]:
    """(step, directory of the saved train state): ``best``, ``latest`` or ``step:N`` (a snapshot
    or a kept checkpoint at step N)."""
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
    candidates: list[tuple[int, Path]] = []
    if which == "best":
        candidates = [(int(p.name), p / "state") for p in (workdir / "best").glob("*")
                      if p.name.isdigit() and (p / "state").is_dir()]
    if not candidates:
        candidates = [(int(p.name), p / "default") for p in (workdir / "checkpoints").glob("*")
                      if p.name.isdigit() and (p / "default").is_dir()]
    if not candidates:
        raise UserError(f"no checkpoint in {workdir} (expected best/<step>/state or "
                        "checkpoints/<step>/default)")
    return max(candidates)


def load_encoder(checkpoint_dir: Path, model: ModelConfig) -> nnx.State:
    """The encoder part (parameters and other state, e.g. BatchNorm statistics) of the ``MaskedLM``
    train state saved in ``checkpoint_dir`` (from :func:`find_checkpoint`), as host arrays in the
    layout of ``SequenceClassifier.encoder``; nothing else is read."""
    abstract = nnx.eval_shape(lambda: MaskedLM(model, rngs=nnx.Rngs(params=0)))
    _, params, rest = nnx.split(abstract.encoder, nnx.Param, ...)
    host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params, rest = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host), (params, rest))
    item: dict[str, Any] = {"params": {"encoder": params}}
    if jax.tree.leaves(rest):
        item["rest"] = {"encoder": rest}
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            str(Path(checkpoint_dir).resolve()),
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True))
    except Exception as err:  # shape mismatch, partial write
        raise UserError(f"cannot read the encoder of {checkpoint_dir} "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    parts = [restored["params"]["encoder"]] + ([restored["rest"]["encoder"]] if "rest" in item else [])
    state = nnx.merge_state(*parts) if len(parts) > 1 else parts[0]
    return jax.tree.map(np.asarray, state)  # host arrays: placed by the caller's jit
