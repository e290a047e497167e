"""The checking pass run before training: class counts, empty or much smaller classes, skipped
files, duplicates across train and val. Findings are warnings; only what makes training
impossible is an error."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImgclassError
from .images import ImageIndex

SMALL_CLASS_RATIO = 0.25  # a class with under a quarter of the median count is worth a warning


def check_dataset(classes: list[str], train: ImageIndex, val: ImageIndex, skipped: list[tuple[Path, str]]) -> list[str]:
    """Check the train/val images; returns warnings (one line each).

    Raises:
        ImgclassError: a class has no training image, or there is no validation image at all.

    Example:
        >>> for line in check_dataset(ds.classes, train, val, ds.skipped + bad):  # doctest: +SKIP
        ...     print("warning:", line)
    """
    n_train = np.bincount(train.labels, minlength=len(classes))
    n_val = np.bincount(val.labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, n_train) if n == 0]
    if empty:
        raise ImgclassError(f"class(es) {', '.join(empty)} have no readable training image; add images or drop the class")
    if len(val) == 0:
        raise ImgclassError("no readable validation image; add a val/<class>/ folder or lower --val-split's rounding "
                            "by adding images")
    warnings = []
    no_val = [c for c, n in zip(classes, n_val) if n == 0]
    if no_val:
        warnings.append(f"class(es) {', '.join(no_val)} have no validation image; their accuracy is not measured")
    median = float(np.median(n_train))
    small = [f"{c} ({n})" for c, n in zip(classes, n_train) if n < SMALL_CLASS_RATIO * median]
    if small:
        warnings.append(f"class(es) {', '.join(small)} have far fewer training images than the median ({median:.0f}); "
                        "expect lower accuracy on them")
    for path, reason in skipped:
        warnings.append(f"skipped {path}: {reason}")
    in_train = {d: p for d, p in zip(train.digests, train.paths)}
    dupes = [(p, in_train[d]) for d, p in zip(val.digests, val.paths) if d in in_train]
    if dupes:
        example = f"{dupes[0][0]} = {dupes[0][1]}"
        warnings.append(f"{len(dupes)} validation image(s) are also in train (e.g. {example}); "
                        "val accuracy will look better than it is")
    return warnings


def count_table(classes: list[str], train: ImageIndex, val: ImageIndex) -> str:
    """Images per class and split, as a small text table."""
    n_train = np.bincount(train.labels, minlength=len(classes))
    n_val = np.bincount(val.labels, minlength=len(classes))
    width = max(5, *map(len, classes))
    rows = [f"{'class':<{width}}  train    val"]
    rows += [f"{c:<{width}}  {t:5d}  {v:5d}" for c, t, v in zip(classes, n_train, n_val)]
    rows.append(f"{'total':<{width}}  {n_train.sum():5d}  {n_val.sum():5d}")
    return "\n".join(rows)
