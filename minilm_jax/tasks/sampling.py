"""Deterministic class-balanced sampling and splitting of example lists."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from .base import Example, TaskDataError


def _indices_by_class(examples: Sequence[Example]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.label is None or isinstance(ex.label, float):
            raise TaskDataError(f"{ex.uid}: balanced sampling needs integer class labels, "
                                f"got {ex.label!r}")
        groups[int(ex.label)].append(i)
    return dict(groups)


def class_name(label: int, label_names: Sequence[str] = ()) -> str:
    """A class as a message names it: its label (``world``) where the task names its classes,
    else ``class <index>``."""
    if 0 <= label < len(label_names):
        return f"class {label_names[label]!r}"
    return f"class {label}"


def sample_per_class(examples: Sequence[Example], k: int, seed: int,
                     allow_fewer: bool = False) -> list[Example]:
    """Draw ``k`` examples of every class, deterministically from ``seed``.

    One ``random.Random(seed)`` draws ``rng.sample(rows_of_class, k)`` for each
    class in ascending label order; the chosen examples are returned in their
    original order. A class with fewer than ``k`` examples raises
    :class:`TaskDataError` unless ``allow_fewer`` (then all of it is kept).
    """
    return split_per_class(examples, (k,), seed, allow_fewer)[0]


def split_per_class(examples: Sequence[Example], sizes: Sequence[int], seed: int,
                    allow_fewer: bool = False, label_names: Sequence[str] = ()
                    ) -> list[list[Example]]:
    """Cut every class into disjoint parts of ``sizes`` (e.g. ``(630, 70)``).

    For each class (ascending label) one ``rng.sample`` of ``sum(sizes)`` rows is
    taken and cut in order; each part keeps the original example order. With
    ``allow_fewer`` a short class fills the parts in order as far as it goes. ``label_names``
    (the task's) name a short class in the error.
    """
    if any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be non-negative, got {tuple(sizes)}")
    need = sum(sizes)
    rng = random.Random(seed)
    chosen: list[set[int]] = [set() for _ in sizes]
    for label, rows in sorted(_indices_by_class(examples).items()):
        if len(rows) < need and not allow_fewer:
            raise TaskDataError(f"{class_name(label, label_names)} has {len(rows)} examples, "
                                f"fewer than the {need} requested (pass allow_fewer=True to keep "
                                "them all)")
        picked = rng.sample(rows, min(need, len(rows)))
        start = 0
        for part, size in zip(chosen, sizes):
            part.update(picked[start:start + size])
            start += size
    return [[ex for i, ex in enumerate(examples) if i in part] for part in chosen]


def split_off_fraction(examples: Sequence[Example], fraction: float, seed: int,
                       stratified: bool = True) -> tuple[list[Example], list[Example]]:
    """Seeded split into ``(rest, part)`` with ``part`` about ``fraction`` of the examples.

    ``stratified``: every class (ascending label, one ``random.Random(seed)``) gives
    ``round(fraction * n)`` of its ``n`` examples, at least 1 and at most ``n - 1``
    (a one-example class stays in ``rest``); otherwise (regression) a plain seeded
    sample. Both parts keep the original example order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    if stratified:
        part: set[int] = set()
        for _, rows in sorted(_indices_by_class(examples).items()):
            k = min(max(1, round(fraction * len(rows))), len(rows) - 1)
            part.update(rng.sample(rows, k))
    else:
        n = len(examples)
        part = set(rng.sample(range(n), min(max(1, round(fraction * n)), n - 1))) if n > 1 else set()
    rest = [ex for i, ex in enumerate(examples) if i not in part]
    return rest, [ex for i, ex in enumerate(examples) if i in part]


def fold_assignment(examples: Sequence[Example], folds: int, seed: int,
                    stratified: bool = True, label_names: Sequence[str] = ()) -> list[int]:
    """Each example's fold ``0 .. folds - 1`` for k-fold cross-validation, seeded.

    ``stratified``: every class (ascending label, one ``random.Random(seed)``) is shuffled and dealt
    round-robin, continuing where the previous class stopped, so each fold holds ``n_c / folds``
    (+-1) rows of every class and fold sizes differ by at most one; otherwise (regression) a seeded
    shuffle of all rows dealt the same way. A class with fewer rows than folds is refused: some
    fold would train without it (named by its label in ``label_names``, the task's)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(examples) < folds:
        raise TaskDataError(f"{len(examples)} examples cannot be cut into {folds} folds")
    rng = random.Random(seed)
    groups = (sorted(_indices_by_class(examples).items()) if stratified
              else [(None, list(range(len(examples))))])
    fold = [0] * len(examples)
    dealt = 0
    for label, rows in groups:
        if stratified and len(rows) < folds:
            lower = f"lower it to {len(rows)} or less, or " if len(rows) >= 2 else ""
            raise TaskDataError(f"{class_name(label, label_names)} has {len(rows)} examples, "
                                f"fewer than the {folds} folds (data.cv_folds): {lower}give that "
                                "class more rows")
        rows = list(rows)
        rng.shuffle(rows)
        for row in rows:
            fold[row] = dealt % folds
            dealt += 1
    return fold
