"""Lazy access to TensorFlow Datasets (optional dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import TaskDataError


def import_tfds() -> Any:
    """Import ``tensorflow_datasets`` or raise an ImportError saying how to get it."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 (lazy on purpose)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The TFDS source needs the optional packages 'tensorflow-datasets' and "
            "'tensorflow' (pip install tensorflow-datasets tensorflow); "
            "or use the local-file source instead."
        ) from err
    return tfds


def iter_tfds(name: str, split: str, data_dir: str | None = None,
              download: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the records of TFDS dataset ``name`` / ``split`` as numpy dicts."""
    tfds = import_tfds()
    ds = tfds.load(name, split=split, data_dir=data_dir, download=download)
    yield from tfds.as_numpy(ds)


def as_text(value: Any) -> str:
    """TFDS strings arrive as bytes; decode them (UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item"):
        return as_text(value.item())
    return str(value)


def as_class_label(value: Any, num_labels: int, where: str) -> int | None:
    """Convert a TFDS class label; ``-1`` (unlabelled test row) becomes ``None``."""
    label = int(value)
    if label == -1:
        return None
    if not 0 <= label < num_labels:
        raise TaskDataError(f"{where}: label {label!r} outside 0..{num_labels - 1}")
    return label
