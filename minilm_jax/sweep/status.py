"""A sweep's stage records: the state of every stage of every run, their one writer and reader.

One file per stage, ``<root>/status/<digest>.json`` holding ``{"run", "stage", "state", "time",
...}`` (many workers record at once without rewriting each other's entries; a root of an earlier
version keeps its single ``status.json``, read beneath them). Stages are ``pretrain``,
``evals:<name>`` and ``finetune:<task>:<label>``; states:

- ``running``: started and not ended (a sweep killed with SIGKILL leaves it so);
- ``done``: the stage's run finished (completed or stopped early);
- ``failed``: it raised (``error`` and ``traceback`` say what); the sweep went on;
- ``interrupted``: SIGTERM or Ctrl-C stopped it after saving (``signal``, ``step``); the sweep
  stopped there and re-running the same command resumes it.

Anything but ``done`` means the sweep's results are incomplete; the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import minilm_jax.exclusive_files as exclusive_files
from minilm_jax.storage import RunPath, atomic_write_json, run_path

STATUS_DIR = "status"
LEGACY_NAME = "status.json"  # the single file of earlier versions
STATES = ("running", "done", "failed", "interrupted")


class SweepStatus:
    """The stage records of the sweep root ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = run_path(str(root))
        self.folder = self.root / STATUS_DIR

    def path_of(self, name: str, stage: str) -> RunPath:
        digest = hashlib.sha256(f"{name}\n{stage}".encode()).hexdigest()[:20]
        return self.folder / f"{digest}.json"

    def _legacy(self) -> dict[str, dict[str, dict[str, Any]]]:
        data = _read_json(self.root / LEGACY_NAME)
        return data if isinstance(data, dict) else {}

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{run: {stage: entry}}`` of every recorded stage, a run's stages in the order they
        were recorded (empty when nothing was recorded; unreadable entries are left out)."""
        status = self._legacy()
        for file in sorted(exclusive_files.listing(self.folder)):
            entry = _read_json(self.folder / file)
            if isinstance(entry, dict) and "run" in entry and "stage" in entry:
                name, stage = entry.pop("run"), entry.pop("stage")
                status.setdefault(name, {})[stage] = entry
        return {name: dict(sorted(stages.items(), key=lambda kv: float(kv[1].get("time", 0))))
                for name, stages in status.items()}

    def entry(self, name: str, stage: str) -> dict[str, Any]:
        """The record of one stage ({} when none)."""
        entry = _read_json(self.path_of(name, stage))
        if isinstance(entry, dict):
            return {k: v for k, v in entry.items() if k not in ("run", "stage")}
        return self._legacy().get(name, {}).get(stage) or {}

    def record(self, name: str, stage: str, state: str, **extra: Any) -> None:
        """Set ``state`` (one of :data:`STATES`) for ``stage`` of run ``name``."""
        assert state in STATES, state
        atomic_write_json(self.path_of(name, stage), {"run": name, "stage": stage,
                                                      "state": state, "time": time.time(),
                                                      **extra})

    def failures(self, names: set[str]) -> dict[str, dict[str, str]]:
        """``{run: {stage: error}}`` of the failed stages of the runs in ``names``."""
        out = {name: {stage: s.get("error", "") for stage, s in stages.items()
                      if s.get("state") == "failed"}
               for name, stages in self.read().items() if name in names}
        return {k: v for k, v in out.items() if v}

    def unfinished(self) -> list[str]:
        """``"<run> <stage>: <state>"`` for every recorded stage that is not done."""
        return [f"{name} {stage}: {s.get('state')}"
                for name, stages in sorted(self.read().items())
                for stage, s in stages.items() if s.get("state") != "done"]


def _read_json(path: RunPath) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
