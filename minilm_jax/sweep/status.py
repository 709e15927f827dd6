"""A sweep's ``status.json``: the state of every stage of every run, its one writer and reader.

``{run name: {stage: {"state": ..., "time": ..., ...}}}`` with stages ``pretrain`` and
``finetune:<task>:<label>`` and states:

- ``running``: started and not ended (a sweep killed with SIGKILL leaves it so);
- ``done``: the stage's run finished (completed or stopped early);
- ``failed``: it raised (``error`` and ``traceback`` say what); the sweep went on;
- ``interrupted``: SIGTERM or Ctrl-C stopped it after saving (``signal``, ``step``); the sweep
  stopped there and re-running the same command resumes it.

Anything but ``done`` means the sweep's results are incomplete; the report says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from minilm_jax.storage import atomic_write_json

STATUS_NAME = "status.json"
STATES = ("running", "done", "failed", "interrupted")


class SweepStatus:
    """The ``status.json`` of the sweep root ``root``."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / STATUS_NAME

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every run's stages (empty when nothing was recorded, or the file is unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, name: str, stage: str, state: str, **extra: Any) -> None:
        """Set ``state`` (one of :data:`STATES`) for ``stage`` of run ``name``."""
        assert state in STATES, state
        status = self.read()
        status.setdefault(name, {})[stage] = {"state": state, "time": time.time(), **extra}
        atomic_write_json(self.path, status)

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
