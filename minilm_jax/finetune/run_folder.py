"""One fine-tuning run folder inside a :class:`~minilm_jax.finetune.finetuner.Finetuner`: its
config, the checkpoint it starts from, its members' slice of the program's members, its validation
history (``history.json``), early stopping and predictions. A separate run is one folder; a
population of runs (several pre-trained checkpoints of one shape fine-tuned in one program) is
several, each written exactly as a separate run writes its own."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

import minilm_jax.run_identity as run_identity
from minilm_jax.errors import UserError
from minilm_jax.model.code_identity import arch_code
from minilm_jax.model.config import ModelConfig
from minilm_jax.run_identity import without_quiet_defaults
from minilm_jax.settings.command_line import flatten
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.storage import (RunPath, atomic_write_bytes, atomic_write_json, make_folder,
                                run_path)
from minilm_jax.train.distributed import from_process_0
from minilm_jax.train.population_folders import Each
from minilm_jax.tasks.table import cross_validated
from minilm_jax.train.records import FinetuneSummary
from minilm_jax.train.run_loop import check_workdir

from minilm_jax.settings.finetuning import validate_finetune_config
from minilm_jax.settings.model_fields import take_checkpoint_arch
from .model_selection import VALIDATION, majority_baseline, mean_std
from .task_batches import TaskBatches

# The fields in which the runs of one population may differ: the checkpoint each starts from.
POPULATION_FIELDS = ("init.checkpoint", "init.which")
# ... and those of cross-validation's fold runs (one checkpoint, or random init): the held-out fold,
# the partition (each fine-tuning seed's own) and so the seed.
FOLD_FIELDS = ("data.cv_fold", "data.cv_seed", "train.seeds")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def early_stop(history: list[dict[str, Any]], patience: int) -> bool:
    """No member improved its validation score in the last ``patience`` evaluations."""
    if patience <= 0 or len(history) <= patience:
        return False
    scores = np.asarray([[m["score"] for m in h["members"]] for h in history])  # [E, S]
    return bool(np.all(scores[-patience:].max(axis=0) <= scores[:-patience].max(axis=0)))


@dataclasses.dataclass
class RunFolder:
    """A fine-tuning run's folder and its members ``first .. first + size`` of the program."""

    name: str
    config: ml_collections.ConfigDict
    workdir: RunPath
    pretrained: PretrainedRun | None
    first: int = 0
    size: int = 0
    seeds: list[int] = dataclasses.field(default_factory=list)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    asked_arch: str | None = None  # --config.model.arch, held against the checkpoint's

    @property
    def members(self) -> slice:
        return slice(self.first, self.first + self.size)

    def identity(self, init_mode: str, tokenizer_sha256: str, model_cfg: ModelConfig,
                 task_data: dict[str, Any]) -> dict[str, Any]:
        """What the run is (its ``config.json``; :mod:`minilm_jax.run_identity`): its config, the
        model it builds and the code of a user's encoder, the tokenizer, the bytes of what it reads
        (``task_data``: its task examples as loaded, :func:`run_identity.examples_digest`; the
        checkpoint it starts from), the library version."""
        identity = without_quiet_defaults(flatten(self.config))
        identity["init.mode"] = init_mode
        identity["tokenizer_sha256"] = tokenizer_sha256
        identity["model_built"] = model_cfg.to_dict()
        identity["inputs.task_data"] = task_data
        if init_mode == "pretrained" and self.pretrained is not None:
            identity["inputs.init"] = self.pretrained.digest()
        identity[run_identity.LIBRARY_VERSION] = run_identity.library_version()
        code = arch_code(model_cfg.arch, model_cfg)  # a user's encoder: its source files
        if code:
            identity[run_identity.MODEL_CODE] = code
        return identity

    # ----------------------------------------------------------------------------- history
    def load_history(self, upto_step: int) -> None:
        """Process 0's ``history.json`` up to ``upto_step``, on every process."""
        path = self.workdir / "history.json"
        saved = json.loads(path.read_text()) if jax.process_index() == 0 and path.exists() else []
        self.history = [h for h in from_process_0(saved) if h["step"] <= upto_step]

    def append_history(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if jax.process_index() == 0:
            atomic_write_json(self.workdir / "history.json", self.history)

    def stopped(self, patience: int) -> bool:
        """Early stopping ended this run at its last evaluation (in a population, perhaps
        evaluations before the others ended)."""
        return early_stop(self.history, patience)

    def best_scores(self) -> np.ndarray:
        """Each member's best validation score so far (``-inf`` before the first evaluation)."""
        if not self.history:
            return np.full(self.size, -np.inf)
        return np.max([[m["score"] for m in h["members"]] for h in self.history], axis=0)

    # ----------------------------------------------------------------------------- outputs
    def scores(self, reported: dict[str, list[dict[str, float]]] | None) -> dict[str, Any]:
        """The summary's ``validation`` (each member at its selected epoch) and, given the
        program's ``reported`` metrics, this run's ``final`` and ``selected`` ones."""
        if not self.history:
            return {}
        history = self.history
        scores = np.asarray([[m["score"] for m in h["members"]] for h in history])  # [E, S]
        chosen = scores.argmax(axis=0)  # the first best epoch, as selection keeps it
        epochs = [history[int(e)]["epoch"] for e in chosen]
        valid = [history[int(e)]["members"][s] for s, e in enumerate(chosen)]
        out: dict[str, Any] = {"validation": {"epochs": epochs, "members": valid,
                                              **mean_std(valid)}}
        if reported is not None:
            final, selected = reported["final"][self.members], reported["selected"][self.members]
            out["final"] = {"epochs": [history[-1]["epoch"]] * len(final), "members": final,
                            **mean_std(final)}
            out["selected"] = {"epochs": epochs, "members": selected, "selected_on": VALIDATION,
                               **mean_std(selected)}
        return out

    def write_summary(self, task: TaskBatches, reported: dict[str, list[dict[str, float]]] | None,
                      common: dict[str, Any]) -> dict[str, Any]:
        """Write this run's :class:`FinetuneSummary` (process 0): ``common`` (what every run of
        the program shares: status, task, model, steps, tokenizer, ...) with this run's own
        checkpoint, seeds, data counts, majority baseline and scores; return it as JSON."""
        data, spec = self.config.data, task.spec
        summary: dict[str, Any] = {
            **common, "pretrained": self.pretrained.describe() if self.pretrained else None,
            "seeds": self.seeds, "examples": task.data.counts(),
            "reported_splits": task.reported,
            "cross_validation": ({"folds": int(data.cv_folds), "fold": int(data.cv_fold),
                                  "seed": int(data.cv_seed), "classes": list(spec.label_names)}
                                 if cross_validated(spec.name, data) else None),
            "dropped_chars": task.dropped_chars, "unk": task.unk,
            "majority": majority_baseline(
                spec.name, task.train_arrays["labels"],
                {split: arrays["labels"] for split, arrays in task.eval_arrays.items()},
                task.regression),
        }
        if task.data.filter_report is not None:
            report = task.data.filter_report
            summary["filter"] = {"total": report.total, "kept": report.kept,
                                 "top_oov": report.oov.most_common(10)}
        record = FinetuneSummary(**summary, **self.scores(reported))
        if jax.process_index() == 0:
            record.write(self.workdir)
        return record.to_json()

    def save_predictions(self, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                         which: str, uids: dict[str, list[str]] | None = None) -> None:
        """``predictions/<split>.<which>.npy`` [S, N, C] (this run's members),
        ``<split>.labels.npy`` and ``<split>.ids.json``: the N rows' ids in the order of the
        arrays (``<task>/<split>/<row>``, row = 0-based data row of the source file)."""
        if jax.process_index() != 0:
            return
        out = self.workdir / "predictions"
        out.mkdir(exist_ok=True)
        for split, array in logits.items():
            atomic_write_bytes(out / f"{split}.{which}.npy", npy_bytes(array[self.members]))
            atomic_write_bytes(out / f"{split}.labels.npy", npy_bytes(labels[split]))
            if uids is not None:
                atomic_write_bytes(out / f"{split}.ids.json",
                                   (json.dumps(uids[split]) + "\n").encode())


def open_folders(runs: Sequence[tuple[str, ml_collections.ConfigDict, Any]],
                 init_mode: str) -> list[RunFolder]:
    """A folder per run ``(name, config, workdir)``: its config checked, the checkpoint it starts
    from opened."""
    folders = []
    for name, run_config, run_dir in runs:
        validate_finetune_config(run_config)  # every field's range, before anything else
        pretrained = (PretrainedRun.open(run_config.init.checkpoint, run_config.init.which)
                      if run_config.init.checkpoint else None)
        if init_mode == "pretrained" and pretrained is None:
            raise UserError("init.mode=pretrained needs --config.init.checkpoint=<pre-training "
                            "workdir> (or use init.mode=random)")
        asked = take_checkpoint_arch(run_config, pretrained.model.arch if pretrained else None)
        folders.append(RunFolder(name, run_config, run_path(run_dir), pretrained,
                                 asked_arch=asked))
    return folders


def lock_folders(workdir: RunPath, folders: Sequence[RunFolder],
                 identities: Sequence[dict[str, Any]], resumable: Sequence[str],
                 population: bool) -> tuple[dict[str, Any], Any]:
    """Create and lock each run's folder (and a ``population``'s own folder ``workdir``, first),
    refusing one that holds another run (its identity but the ``resumable`` fields): (the
    identity of the run or population, its lock)."""
    targets = [(f.workdir, ident, "a fine-tuning run") for f, ident in zip(folders, identities)]
    identity = identities[0]
    if population:
        identity = population_identity(workdir, folders, identities, resumable)
        targets.insert(0, (workdir, identity, "a fine-tuning population"))
    locks = []
    try:
        for path, ident, what in targets:
            make_folder(path)
            locks.append(check_workdir(path, ident, resumable, what))
    except BaseException:
        Each(locks).release()
        raise
    return identity, (locks[0] if len(locks) == 1 else Each(locks))


def population_identity(workdir: RunPath, folders: Sequence[RunFolder],
                        identities: Sequence[dict[str, Any]], resumable: Sequence[str]
                        ) -> dict[str, Any]:
    """What a fine-tuning population is (its ``config.json``): each run's name, folder (relative
    to the population's ``workdir``) and identity without the ``resumable`` fields
    (:func:`minilm_jax.run_identity.member_entry`), then the first run's ``resumable`` fields."""
    return {"population.runs": [
        run_identity.member_entry(f.name, f.workdir, workdir, ident, resumable)
        for f, ident in zip(folders, identities)],
        **{k: v for k, v in identities[0].items() if k in resumable}}


def check_population(folders: list[RunFolder], init_mode: str, folds: bool) -> None:
    """Refuse runs that cannot share one program: configs differing outside
    :data:`POPULATION_FIELDS` (cross-validation folds: :data:`FOLD_FIELDS`), checkpoints of
    different shapes or tokenizers, random init (but for ``folds``: every run a fold run)."""
    first = folders[0]
    allowed = FOLD_FIELDS if folds else POPULATION_FIELDS
    if init_mode != "pretrained" and not folds:
        raise UserError("a fine-tuning population starts every run from a pre-trained "
                        f"checkpoint (init.mode=pretrained), not {init_mode}")
    base = {k: v for k, v in flatten(first.config).items() if k not in allowed}
    for folder in folders[1:]:
        other = {k: v for k, v in flatten(folder.config).items() if k not in allowed}
        diffs = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if diffs:
            raise UserError(f"fine-tuning runs {first.name} and {folder.name} differ in "
                            f"{', '.join(diffs[:5])}: only {', '.join(allowed)} may "
                            "differ within one population")
        if folds:
            continue  # one checkpoint (or none) for every fold
        if folder.pretrained.model.to_dict() != first.pretrained.model.to_dict():
            raise UserError(f"the checkpoints of {first.name} ({first.pretrained.workdir}) and "
                            f"{folder.name} ({folder.pretrained.workdir}) have different models: "
                            "they cannot be fine-tuned in one program")
        if folder.pretrained.tokenizer_sha256 != first.pretrained.tokenizer_sha256:
            raise UserError(f"the checkpoints of {first.name} and {folder.name} were pre-trained "
                            "with different tokenizers")
