"""Progress bars: shown on a terminal only, cleared when done so an error line starts clean."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(enabled: bool, iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (``disable=None``: only when stderr is a terminal), removed on close."""
    return tqdm(iterable, disable=None if enabled else True, leave=False, **kwargs)
