"""Run records written by one stage and read by another: the ``summary.json`` of a pre-training run
and of a fine-tuning run, typed, with one writer and one reader each.

The loops build these records and write them; fine-tuning (the checkpoint it starts from), sweeps
(``results.jsonl`` rows, skip-if-done), committees and results tables read them back through
:func:`read_pretrain_summary` / :func:`read_finetune_summary` instead of parsing JSON by hand.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from minilm_jax.errors import UserError
from minilm_jax.storage import RunPath, atomic_write_json, run_path

SUMMARY = "summary.json"
DONE = ("completed", "early_stopped")

R = TypeVar("R", bound="_Record")


class RecordError(UserError, ValueError):
    """A run record that is missing, unreadable or lacks required fields."""


@dataclasses.dataclass
class _Record:
    status: str  # completed | early_stopped | preempted | diverged (a population member)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k in self._keep_none()}

    @classmethod
    def _keep_none(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any], where: str = "summary") -> R:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise RecordError(f"{where} lacks {', '.join(missing)} (not a {cls.__name__} record)")
        return cls(**{k: v for k, v in data.items() if k in fields})

    def write(self, workdir: str | RunPath) -> None:
        atomic_write_json(run_path(workdir) / SUMMARY, self.to_json())

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclasses.dataclass
class PretrainSummary(_Record):
    """What a pre-training run wrote at its end (or preemption)."""

    step: int
    point: str
    model: dict[str, Any]
    params: dict[str, int]
    flops_per_sequence: dict[str, float]  # paper | complete, per training sequence
    shards: dict[str, Any]  # the tokenizer identity of the shards: sha256, vocab_size, path
    wall_seconds_this_session: float = 0.0
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    devices: list[str] = dataclasses.field(default_factory=list)
    num_devices: int = 0
    best: dict[str, Any] | None = None  # step, validation_loss/perplexity, test_loss/perplexity
    final_params_sha256: str = ""
    device_memory: dict[str, Any] | None = None
    diverged_at: int | None = None  # a population member: the step whose loss was non-finite
    population: str | None = None  # a population member: the population's workdir
    # The shards' unigram / bigram perplexities of the validation split (minilm_jax.data.learned)
    # and whether the best validation perplexity is clearly below the unigram one.
    reference: dict[str, Any] | None = None
    learned: bool | None = None
    # The asked mlm.mask_prob beside the realised rate: predicted / maskable positions summed over
    # the training rows of metrics.jsonl, with the per-sequence cap used (``max_predictions``)
    # and whether it was derived (mlm.max_predictions=0).
    mask_rate: dict[str, Any] | None = None
    # Passes over the shards' train split: training sequences seen / the split's sequences.
    epochs: float | None = None
    # Where the parameter and FLOP counts come from: the paper's closed form (a built-in
    # encoder), plus a variant's declaration, or plus what its tree and trace give (derived).
    counts_source: str | None = None

    @classmethod
    def _keep_none(cls) -> tuple[str, ...]:
        return ("device_memory",)


@dataclasses.dataclass
class PopulationSummary(_Record):
    """What a pre-training population wrote at its end: its members, each a run with its own
    :class:`PretrainSummary` (``name``, ``workdir``, ``status``, ``step``, ``best``)."""

    step: int
    members: list[dict[str, Any]]
    strategy: str = ""  # vmap | map
    wall_seconds_this_session: float = 0.0


@dataclasses.dataclass
class FinetuneSummary(_Record):
    """What a fine-tuning run (S seeds of one task) wrote at its end."""

    task: str
    init: str  # pretrained | random
    seeds: list[int]
    point: str = ""
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # the model actually built
    examples: dict[str, int] = dataclasses.field(default_factory=dict)
    reported_splits: list[str] = dataclasses.field(default_factory=list)
    steps: int = 0
    steps_per_epoch: int = 0
    pretrained: dict[str, Any] | None = None  # workdir, step, point, validation_perplexity, ...
    wall_seconds_this_session: float = 0.0
    params_total: int = 0
    tokenizer: dict[str, str] = dataclasses.field(default_factory=dict)
    vocab_filter: str | None = None
    dropped_chars: list[str] | None = None  # data.drop_unknown_chars: characters removed
    unk: dict[str, Any] = dataclasses.field(default_factory=dict)
    majority: dict[str, Any] = dataclasses.field(default_factory=dict)
    filter: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None  # selection split: epochs, members, mean, std, n
    final: dict[str, Any] | None = None  # reported splits, final epoch
    selected: dict[str, Any] | None = None  # reported splits, each member's selected epoch
    # one fold run of a cross-validated labelled file: {"folds", "fold", "seed", "classes"}
    cross_validation: dict[str, Any] | None = None
    # init.partial: what did not fit the checkpoint (missing, unexpected, reshaped, variant fields)
    init_partial: dict[str, Any] | None = None

    @classmethod
    def _keep_none(cls) -> tuple[str, ...]:
        return ("pretrained", "vocab_filter")


def _read(cls: type[R], path: str | RunPath) -> R:
    path = run_path(path)
    if path.name != SUMMARY:
        path = path / SUMMARY
    if not path.exists():
        raise RecordError(f"no {SUMMARY} in {path.parent}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path} is unreadable ({type(err).__name__})") from None
    return cls.from_json(data, str(path))


def read_pretrain_summary(path: str | RunPath) -> PretrainSummary:
    """The pre-training summary of a workdir (or of a ``summary.json`` path)."""
    return _read(PretrainSummary, path)


def read_population_summary(path: str | RunPath) -> PopulationSummary:
    """The summary of a pre-training population's workdir."""
    return _read(PopulationSummary, path)


def read_finetune_summary(path: str | RunPath) -> FinetuneSummary:
    """The fine-tuning summary of a workdir (or of a ``summary.json`` path)."""
    return _read(FinetuneSummary, path)


def is_done(path: str | RunPath) -> bool:
    """Whether a workdir (or ``summary.json`` path) holds a run that finished (completed or stopped
    early); False when there is no readable summary."""
    path = run_path(path)
    path = path if path.name == SUMMARY else path / SUMMARY
    try:
        return json.loads(path.read_text()).get("status") in DONE
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
