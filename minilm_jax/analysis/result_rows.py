"""The sweep results table (``results.jsonl``): its row schema, reading and validation.

One JSON object per line, one row per evaluation point of every run. ``kind`` is
``validation``, ``test``, ``downstream``, ``minimal_pairs``, ``perplexity`` or ``baseline``; the fields each kind needs are listed in
:data:`REQUIRED`. Fields in :data:`OPTIONAL` may be absent (their default is used).
Every problem is reported as one :class:`ResultsError` naming the file, the line and the field.

Each row is counted once. A row identical to an earlier one (a table written or concatenated twice)
is dropped with one warning line naming the file and the count. Two rows with the same identity
(:func:`row_identity`: a run's validation step, a run's test, one fine-tuning run of a run, one
baseline of a shard set) but different values are mixed results: a :class:`ResultsError` names the
file and both lines, since averaging them would be silently wrong.

The queries over the rows read here (selection, per-run summaries, downstream scores) are in
:mod:`minilm_jax.analysis.results`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from minilm_jax.errors import UserError
from minilm_jax.storage import run_path

KINDS = ("validation", "test", "downstream", "minimal_pairs", "perplexity", "baseline")
INITS = ("pretrained", "random")


class ResultsError(UserError, ValueError):
    """A malformed results table: the message names the file, the line and the field."""


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return _is_number(v) and float(v).is_integer()


def _is_number_or_null(v: Any) -> bool:
    return v is None or _is_number(v)


def _is_scalar_or_null(v: Any) -> bool:
    return v is None or _is_str(v) or _is_number(v)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


_CHECKS: dict[Callable[[Any], bool], str] = {
    _is_str: "a string", _is_number: "a number", _is_int: "an integer",
    _is_number_or_null: "a number or null", _is_scalar_or_null: "a number, a string or null",
    _is_dict: "an object",
}

_COMMON = {"run": _is_str, "workdir": _is_str, "point": _is_str, "group": _is_str, "base": _is_str,
           "factor": _is_str, "params_total": _is_int, "params_non_embedding": _is_int,
           "kind": _is_str}
_CURVE = {"step": _is_int, "flops_paper": _is_number, "flops_complete": _is_number,
          "loss": _is_number, "perplexity": _is_number}
_DOWNSTREAM = {"task": _is_str, "init": _is_str, "score": _is_number, "flops_paper": _is_number,
               "flops_complete": _is_number}

_MINIMAL_PAIRS = {"evaluation": _is_str, "suite": _is_str, "paradigm": _is_str,
                  "phenomenon": _is_str, "rule": _is_str, "init": _is_str, "step": _is_int,
                  "pairs": _is_int, "scored": _is_int, "correct": _is_int, "outcomes": _is_str,
                  "flops_paper": _is_number, "flops_complete": _is_number}

#: Required fields per kind, with their type checks.
REQUIRED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "validation": {**_COMMON, **_CURVE},
    "test": {**_COMMON, **_CURVE},
    "downstream": {**_COMMON, **_DOWNSTREAM},
    # Zero-shot accuracy of one model (a checkpoint or the random twin) on one paradigm, one rule
    # (minilm_jax.evals.minimal_pairs); outcomes: per pair 1 right, 0 wrong, - skipped.
    "minimal_pairs": {**_COMMON, **_MINIMAL_PAIRS},
    # Masked-LM perplexity of one model on one split, by an evaluator (minilm_jax.evals.perplexity)
    "perplexity": {**_COMMON, "evaluation": _is_str, "split": _is_str, "init": _is_str,
                   "step": _is_int, "loss": _is_number, "perplexity": _is_number,
                   "flops_paper": _is_number, "flops_complete": _is_number},
    # Count-based reference perplexities of a shard set (minilm_jax.data.baselines); no run.
    "baseline": {"kind": _is_str, "name": _is_str, "split": _is_str, "loss": _is_number,
                 "perplexity": _is_number},
}
#: Optional fields: (type check, default).
OPTIONAL: dict[str, tuple[Callable[[Any], bool], Any]] = {
    "factor_value": (_is_scalar_or_null, None),
    "sequences_seen": (_is_number_or_null, None),
    "metrics": (_is_dict, None),
    "final_validation_perplexity": (_is_number_or_null, None),
    "pretrain_seed": (_is_number_or_null, None),  # the run's pre-training seed
    "design": (_is_scalar_or_null, None),  # the declared run it replicates (several seeds)
    # the encoder (model.arch): a built-in's name (roberta, bert, bert_conv) or a user's variant;
    # absent in tables written before built-in rows carried it (read as BUILT_IN: row_arch)
    "arch": (_is_str, None),
    "variant_fields": (_is_dict, None),  # a variant's fields (model.extra), defaults included
    "counts_source": (_is_str, None),  # a variant's counts: declared | derived
    # changes of a user encoder's code accepted (MINILM_ACCEPT_CODE_CHANGE=1) while the run was
    # trained or read: the row's numbers come from code other than the run recorded first
    "code_changes": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), None),
}
#: The architecture the analyses give every row of one of this library's encoders.
BUILT_IN = "built-in"


def row_arch(row: Mapping[str, Any]) -> str:
    """The architecture a row's numbers come from, as the analyses compare them: a user's
    variant's ``arch``, else :data:`BUILT_IN` (a built-in encoder's name, or no ``arch``)."""
    arch = row.get("arch")
    if not arch:
        return BUILT_IN
    from minilm_jax.model.registry import is_library_encoder  # noqa: PLC0415 (imports jax)

    return BUILT_IN if is_library_encoder(str(arch)) else str(arch)


def _canonical(obj: Mapping[str, Any]) -> str:
    """A row as compared for copies: key order ignored, and a built-in encoder's ``arch``
    dropped (a table written before built-in rows carried it holds the same row without it)."""
    if obj.get("arch") and row_arch(obj) == BUILT_IN:
        obj = {k: v for k, v in obj.items() if k != "arch"}
    return json.dumps(obj, sort_keys=True)


#: Fields that must agree on every row of one run.
RUN_FIELDS = ("workdir", "point", "group", "base", "factor", "params_total", "params_non_embedding")


def _validate_row(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ResultsError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if "kind" not in obj:
        raise ResultsError(f"{where}: missing field 'kind'")
    if kind not in KINDS:
        raise ResultsError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    row = dict(obj)
    for field, check in REQUIRED[kind].items():
        if field not in obj:
            raise ResultsError(f"{where}: missing field '{field}' (kind '{kind}')")
        if not check(obj[field]):
            raise ResultsError(f"{where}: field '{field}' must be {_CHECKS[check]}, "
                               f"got {obj[field]!r}")
    if kind == "baseline":
        return row
    for field, (check, default) in OPTIONAL.items():
        if field not in obj or obj[field] is None:
            row[field] = {} if field == "metrics" else default
        elif not check(obj[field]):
            raise ResultsError(f"{where}: field '{field}' must be {_CHECKS[check]}, "
                               f"got {obj[field]!r}")
    if kind in ("downstream", "minimal_pairs", "perplexity") and row["init"] not in INITS:
        raise ResultsError(f"{where}: field 'init' must be one of {', '.join(INITS)}, "
                           f"got {row['init']!r}")
    if not row["run"]:
        raise ResultsError(f"{where}: field 'run' must not be empty")
    return row


def row_identity(row: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What one row stands for (as written by :mod:`minilm_jax.sweep.results`): a validation row
    is one evaluation step of a run (a name, ``run@group`` for each further group), a test row
    the test of a run's best checkpoint, a downstream row one fine-tuning run (its workdir, or
    without one its task, init, checkpoint and seeds) reported under a run name, a baseline row one
    count model of a split of a shard set. None for a hand-made per-seed downstream row that
    names neither a fine-tuning workdir nor its seeds: only an identical copy repeats it."""
    kind = row["kind"]
    if kind == "validation":
        return (kind, row["run"], int(row["step"]))
    if kind == "test":
        return (kind, row["run"])
    if kind == "baseline":
        return (kind, row["name"], row["split"], row.get("shards"))
    if kind == "minimal_pairs":
        return (kind, row["run"], row["evaluation"], row["suite"], row["paradigm"], row["rule"],
                row["init"], int(row["step"]))
    if kind == "perplexity":
        return (kind, row["run"], row["evaluation"], row["split"], row["init"], int(row["step"]))
    if row.get("finetune_workdir"):
        return (kind, row["run"], str(row["finetune_workdir"]))
    seeds = row.get("seeds")
    if seeds:
        return (kind, row["run"], row["task"], row["init"], row.get("checkpoint_step"),
                json.dumps(seeds))
    return None


def _describe(row: Mapping[str, Any]) -> str:
    kind = row["kind"]
    if kind == "validation":
        return f"validation row of run '{row['run']}' at step {row['step']}"
    if kind == "test":
        return f"test row of run '{row['run']}'"
    if kind == "baseline":
        return (f"baseline row '{row['name']}' of split '{row['split']}' of shards "
                f"{row.get('shards')!r}")
    if kind == "perplexity":
        return (f"perplexity row of run '{row['run']}' ({row['evaluation']}, split "
                f"'{row['split']}', {row['init']} at step {row['step']})")
    if kind == "minimal_pairs":
        return (f"minimal_pairs row of run '{row['run']}' ({row['evaluation']}, paradigm "
                f"'{row['paradigm']}', rule '{row['rule']}', {row['init']} at step {row['step']})")
    if row.get("finetune_workdir"):
        return f"downstream row of run '{row['run']}' fine-tuned in '{row['finetune_workdir']}'"
    return (f"downstream row of run '{row['run']}' (task '{row['task']}', init '{row['init']}', "
            f"checkpoint step {row.get('checkpoint_step')}, seeds {row.get('seeds')})")


@dataclass(frozen=True)
class Duplicates:
    """Rows dropped as identical copies of earlier ones: how many, and the first (line, original)."""

    count: int = 0
    example: tuple[int, int] | None = None

    def warning(self, path: str | Path) -> str:
        """The warning line (empty when nothing was dropped)."""
        if not self.count:
            return ""
        line, first = self.example or (0, 0)
        return (f"warning: {path}: {self.count} duplicate row{'s' if self.count != 1 else ''} "
                f"dropped (each identical to an earlier line, e.g. line {line} repeats line "
                f"{first}); each row counted once")


def read_results(path: str | Path) -> tuple[list[dict[str, Any]], Duplicates]:
    """Read and validate ``results.jsonl`` without printing: the rows, each counted once (they keep
    a ``line`` field), and the identical copies dropped. Blank lines are skipped. ``path`` may be
    a ``gs://`` location."""
    path = run_path(str(path))
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    rows: list[dict[str, Any]] = []
    first_seen: dict[str, dict[str, Any]] = {}
    by_text: dict[str, int] = {}  # canonical JSON of a row -> its first line
    by_identity: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
    dropped, example = 0, None
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                raise ResultsError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") \
                    from None
            row = _validate_row(obj, where)
            if row["kind"] != "baseline":
                _check_run_consistency(row, first_seen, where)
            canonical = _canonical(obj)  # NaN == NaN here, key order ignored
            if canonical in by_text:
                dropped += 1
                example = example or (number, by_text[canonical])
                continue
            by_text[canonical] = number
            identity = row_identity(row)
            if identity is not None:
                if identity in by_identity:
                    first, other = by_identity[identity]
                    raise ResultsError(_conflict(path, first, number, other, obj))
                by_identity[identity] = (number, obj)
            row["line"] = number
            rows.append(row)
    return rows, Duplicates(dropped, example)


def _conflict(path: Path, first: int, number: int, a: Mapping[str, Any], b: Mapping[str, Any]
              ) -> str:
    differ = sorted(k for k in {*a, *b}
                    if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True))
    return (f"{path}: lines {first} and {number} are the same {_describe(b)} with different values "
            f"({', '.join(differ)}); mixed results are never averaged: keep the row of the run "
            "you mean and delete the other")


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate ``results.jsonl`` (:func:`read_results`); prints one warning line to
    stderr when identical copies of rows were dropped."""
    rows, duplicates = read_results(path)
    if duplicates.count:
        print(duplicates.warning(path), file=sys.stderr, flush=True)
    return rows


def _check_run_consistency(row: dict[str, Any], first_seen: dict[str, dict[str, Any]],
                           where: str) -> None:
    first = first_seen.setdefault(row["run"], row)
    for field in RUN_FIELDS:
        if row[field] != first[field]:
            raise ResultsError(f"{where}: field '{field}' of run '{row['run']}' is {row[field]!r} "
                               f"here but {first[field]!r} on an earlier line")
