"""What a numeric config field allows: :class:`Allowed` (a range written as the error message says
it), the rules of the sections both recipes share (:data:`SHARED_RULES`: optimizer, checkpoints,
mesh, multi-host launch), and the one-line complaints (:func:`range_problems`,
:func:`raise_problems`). Each recipe's own fields' rules: :mod:`~minilm_jax.settings.pretraining`
and :mod:`~minilm_jax.settings.finetuning`."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from minilm_jax.model.config import ConfigError

from .command_line import flatten
from .mlm_cap import mask_cap_problems


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The values a numeric config field may take, written as the error message says them: an
    interval ``"(0, 1)"``, ``"[0, model.vocab_size)"`` (a bound may name another field of the same
    config) or a half-line ``">= 1"``, ``"> 0"``. ``why`` says what the field is, in a few words;
    ``integer`` is for counts, ids and seeds; ``also`` lists sentinel values outside the range
    (``-1``: detected); ``each`` checks every element of a sequence field. Non-finite values (nan,
    inf) are never allowed."""

    range: str
    why: str
    integer: bool = False
    also: tuple[Any, ...] = ()
    each: bool = False

    def _bounds(self, fields: Mapping[str, Any]) -> tuple[Any, bool, Any, bool]:
        """(low, low included, high, high included); a bound naming a field is its value."""
        text = self.range.strip()
        for op in (">=", "<=", ">", "<"):
            if text.startswith(op):
                bound = _bound(text[len(op):], fields)
                return ((bound, op == ">=", None, False) if op[0] == ">"
                        else (None, False, bound, op == "<="))
        low, high = text[1:-1].split(",")
        return _bound(low, fields), text[0] == "[", _bound(high, fields), text[-1] == "]"

    def admits(self, value: Any, fields: Mapping[str, Any]) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if (self.integer and not isinstance(value, int)) or not math.isfinite(value):
            return False
        low, low_in, high, high_in = self._bounds(fields)
        return ((low is None or value > low or (low_in and value == low))
                and (high is None or value < high or (high_in and value == high)))

    def describe(self, fields: Mapping[str, Any]) -> str:
        """``must be an integer in [0, model.vocab_size=19010)``, ``must be >= 0, or -1``."""
        shown = re.sub(r"[A-Za-z_][\w.]*", lambda m: f"{m.group(0)}={fields.get(m.group(0))}",
                       self.range)
        kind = "an integer " if self.integer else ""
        where = f"in {shown}" if shown[0] in "([" else shown
        also = "".join(f", or {v}" for v in self.also)
        return f"must be {kind}{where}{also}"

    def problem(self, field: str, fields: Mapping[str, Any]) -> str | None:
        """The one-line complaint about ``field``'s value, or None when it is allowed."""
        value = fields[field]
        if not self.each:
            if self.admits(value, fields):
                return None
            return f"{field}={_show(value)}: {self.describe(fields)} ({self.why})"
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value])
               if not self.admits(v, fields)]
        if not bad:
            return None
        return (f"{field}={_show(value)}: each {self.describe(fields)}, not {_show(bad[0])} "
                f"({self.why})")


def _bound(text: str, fields: Mapping[str, Any]) -> Any:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return fields[text]  # another field of the config (model.vocab_size)


def _show(value: Any) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)


# The sections both recipes share (optimizer, checkpoints, mesh, multi-host launch).
SHARED_RULES: dict[str, Allowed] = {
    "optim.peak_lr": Allowed("> 0", "the peak learning rate; 0 trains nothing"),
    "optim.b1": Allowed("[0, 1)", "Adam's first-moment decay"),
    "optim.b2": Allowed("[0, 1)", "Adam's second-moment decay"),
    "optim.eps": Allowed("> 0", "added to Adam's denominator; 0 divides 0 by 0 for a parameter "
                                "with no gradient"),
    "optim.weight_decay": Allowed(">= 0", "decoupled weight decay; 0: none"),
    "optim.warmup_steps": Allowed(">= 0", "-1: min(4000, 5% of the updates)", integer=True,
                                  also=(-1,)),
    "optim.end_lr_fraction": Allowed("[0, 1]", "the final learning rate as a fraction of the peak"),
    "optim.clip_norm": Allowed(">= 0", "global-norm clipping; 0: none"),
    "train.steps_per_dispatch": Allowed(">= 1", "optimizer steps per compiled call", integer=True),
    "train.log_every": Allowed(">= 1", "steps between log lines", integer=True),
    "checkpoint.every_steps": Allowed(">= 1", "steps between saves", integer=True),
    "checkpoint.every_minutes": Allowed("> 0", "minutes between saves; 0 would save at every "
                                               "dispatch"),
    "checkpoint.keep": Allowed(">= 1", "regular checkpoints kept; resuming needs one",
                               integer=True),
    "mesh.data": Allowed(">= 1", "devices on the data axis; -1: all not used by fsdp",
                         integer=True, also=(-1,)),
    "mesh.fsdp": Allowed(">= 1", "devices that shard the parameters", integer=True),
    "mesh.members": Allowed(">= 1", "devices a population's members are spread over",
                            integer=True),
    "distributed.num_processes": Allowed(">= 0", "0: detected", integer=True),
    "distributed.process_id": Allowed(">= 0", "-1: detected", integer=True, also=(-1,)),
}


def batch_over_data(batch_size: int, rows: int, what: str) -> str | None:
    """The complaint about a ``train.batch_size`` over the ``rows`` it is drawn from (``what``
    names them; a batch would hold some twice, and a step more than a pass), or None."""
    if int(batch_size) <= int(rows):
        return None
    return (f"train.batch_size={batch_size} is more than the {rows:,} {what}: every batch would "
            f"hold some of them twice (a step {int(batch_size) / max(int(rows), 1):.2f} passes "
            f"over them); pass --config.train.batch_size<={rows} or give it more data")


def range_problems(config: ml_collections.ConfigDict, rules: Mapping[str, Allowed]) -> list[str]:
    """One line per field of ``config`` outside its rule's range (fields a config lacks are
    skipped), then the rules that tie shared fields together."""
    fields = flatten(config)
    problems = [p for field, rule in rules.items() if field in fields
                if (p := rule.problem(field, fields)) is not None]
    problems += mask_cap_problems(fields)
    if (fields.get("optim.schedule") == "inverse_sqrt" and fields.get("optim.warmup_steps") == 0):
        problems.append("optim.warmup_steps=0: must be >= 1, or -1, with optim.schedule="
                        "inverse_sqrt (peak * min(s/W, sqrt(W/s)) is 0 at every step for W=0)")
    processes = fields.get("distributed.num_processes")
    process = fields.get("distributed.process_id")
    if isinstance(processes, int) and isinstance(process, int) and 0 < processes <= process:
        problems.append(f"distributed.process_id={process}: must be below "
                        f"distributed.num_processes={processes} (or -1: detected)")
    return problems


def raise_problems(problems: list[str]) -> None:
    """One :class:`ConfigError` (one line) listing every problem; nothing when there is none."""
    if problems:
        raise ConfigError("; ".join(problems))
