"""What a finished fine-tuning run keeps of its model: ``parameters.npz``, each member's final and
selected parameters (no optimizer state), and the dropping of its training checkpoints.

A finished run (``summary.json`` status completed or early_stopped) is read by later stages through
its summary and ``predictions/`` (tables, committees, reports) and, for a model that leaves the tool
(``minilm-interop export``), through this file. Training checkpoints (parameters, two optimizer
moments and the selected parameters, ``checkpoint.keep`` of them) are only needed to resume, so a
finished run drops them unless ``checkpoint.keep_finished=True``. Order (safe to kill anywhere):
predictions -> ``parameters.npz`` -> ``summary.json`` -> checkpoints removed; a run whose summary is
finished and whose ``parameters.npz`` is readable is finished, whatever checkpoints remain.

File layout: one array per leaf, named ``<which>/<part>/<path>`` (``which``: final | selected;
``part``: params | rest; ``path``: the leaf's place in the model, ``/``-joined), each with a
leading member axis (the run's seeds in ``summary.json`` order).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, Iterable

import jax
import numpy as np
from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_classifier
from minilm_jax.storage import RunPath, atomic_write_bytes, remove_tree, run_path
from minilm_jax.train.distributed import from_process_0, gathered
from minilm_jax.train.records import is_done, read_finetune_summary
from minilm_jax.train.run_log import log_line

PARAMETERS = "parameters.npz"
WHICH = ("final", "selected")
PARTS = ("params", "rest")


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flat_leaves(tree: Any) -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` for every leaf of ``tree`` (host copies)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    return {"/".join(_key_name(k) for k in path): np.asarray(leaf) for path, leaf in leaves}


def parameters_bytes(final: dict[str, Any], selected: dict[str, Any], members: slice) -> bytes:
    """The ``.npz`` bytes of ``members`` of the final and selected ``{"params", "rest"}`` trees."""
    arrays = {}
    for which, tree in (("final", final), ("selected", selected)):
        for part in PARTS:
            for path, leaf in flat_leaves(tree[part]).items():
                arrays[f"{which}/{part}/{path}"] = leaf[members]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_parameters(runs: list[tuple[RunPath, slice]], final: dict[str, Any],
                    selected: dict[str, Any]) -> None:
    """Write each run's ``parameters.npz`` (its ``members`` of the final and selected
    ``{"params", "rest"}`` trees) atomically; every process calls, process 0 writes."""
    final, selected = gathered(final), gathered(selected)
    if jax.process_index() == 0:
        for workdir, members in runs:
            atomic_write_bytes(run_path(workdir) / PARAMETERS,
                               parameters_bytes(final, selected, members))


def load_parameters(workdir: str | RunPath, which: str = "selected") -> dict[str, dict[str, np.ndarray]]:
    """``{"params": {path: [S, ...]}, "rest": {...}}`` of a finished run's ``which`` parameters.
    A damaged file (its zip CRCs) is one ``UserError`` line, never read as parameters."""
    if which not in WHICH:
        raise UserError(f"which must be one of {', '.join(WHICH)}, not {which!r}")
    path = run_path(workdir) / PARAMETERS
    if not path.exists():
        raise UserError(f"{workdir} has no {PARAMETERS}: not a finished fine-tuning run (or one "
                        "finished before runs kept their parameters; its checkpoints/ hold them)")
    try:
        with np.load(io.BytesIO(path.read_bytes())) as npz:
            out: dict[str, dict[str, np.ndarray]] = {part: {} for part in PARTS}
            for name in npz.files:
                w, part, leaf = name.split("/", 2)
                if w == which:
                    out[part][leaf] = npz[name]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is damaged ({err}); re-run the fine-tuning command with "
                        "checkpoint.keep_finished=True in a new workdir") from err
    return out


def finished(workdir: str | RunPath) -> bool:
    """A finished run that kept its parameters (its training checkpoints are not needed)."""
    workdir = run_path(workdir)
    if not is_done(workdir) or not (workdir / PARAMETERS).exists():
        return False
    try:
        with zipfile.ZipFile(io.BytesIO((workdir / PARAMETERS).read_bytes())) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def finished_summaries(workdirs: list[RunPath]) -> list[dict[str, Any]] | None:
    """The summaries of runs that all finished and kept their parameters (process 0 decides; the
    other processes get placeholders), or None when any did not."""
    mine = jax.process_index() == 0 and all(finished(w) for w in workdirs)
    if not from_process_0(mine):
        return None
    if jax.process_index() != 0:
        return [{"status": "completed"} for _ in workdirs]
    return [read_finetune_summary(w).to_json() for w in workdirs]


def drop_checkpoints(workdirs: Iterable[RunPath]) -> None:
    """Remove finished runs' ``checkpoints/`` (process 0), saying so."""
    if jax.process_index() != 0:
        return
    for workdir in workdirs:
        folder = run_path(workdir) / "checkpoints"
        if folder.exists():
            remove_tree(folder)
            log_line(f"dropped the training checkpoints of the finished run {workdir} "
                     "(checkpoint.keep_finished=True keeps them)")


def member_index(seeds: list[int], validation: dict[str, Any] | None, seed: int | None) -> int:
    """The member of a run of ``seeds`` to read: the one trained with ``seed``, else the best
    validation score (the first when there is none)."""
    if seed is not None:
        if seed not in seeds:
            raise UserError(f"--seed={seed}: the run trained the seeds {seeds}")
        return seeds.index(seed)
    scores = [m.get("score") for m in (validation or {}).get("members") or []]
    if len(scores) == len(seeds) and all(isinstance(s, (int, float)) for s in scores):
        return int(np.argmax(scores))
    return 0


def classifier_member(cfg: ModelConfig, arrays: dict[str, dict[str, np.ndarray]], member: int,
                      where: RunPath) -> Any:
    """A :class:`SequenceClassifier` holding member ``member`` of ``parameters.npz`` arrays."""
    heads = [v for k, v in arrays["params"].items() if k.startswith("head/classifier/kernel")]
    if len(heads) != 1:
        raise UserError(f"{where}/parameters.npz holds no classifier head (head/classifier)")
    model = build_classifier(cfg, int(heads[0].shape[-1]))
    _, *parts = nnx.split(model, nnx.Param, ...)
    filled = []
    for name, state in zip(("params", "rest"), parts):
        wanted, saved = flat_leaves(state), arrays[name]
        missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
        if missing or extra:
            raise UserError(f"{where}/parameters.npz does not match the run's model: missing "
                            f"{missing[:4]}, unexpected {extra[:4]}")
        leaves = []
        for key, want in wanted.items():
            value = saved[key][member]
            if value.shape != want.shape:
                raise UserError(f"{where}/parameters.npz: {key} has shape {value.shape}, the "
                                f"model's is {want.shape}")
            leaves.append(value.astype(want.dtype))
        filled.append(jax.tree.unflatten(jax.tree.structure(state), leaves))
    nnx.update(model, *filled)
    return model
