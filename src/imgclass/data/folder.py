"""Dataset folders: ``DIR/train/<class>/*``, ``DIR/val/<class>/*`` (or ``validation/``, ``valid/``),
optional ``DIR/test/<class>/*`` and ``DIR/labels.txt``; or class folders only, split by file content.

The split of a dataset without a val folder depends only on the files' bytes (sha256), never on
their names, dates or the order the disk lists them, and it is written to ``split.json`` so a run
(or its resume) sees exactly the same images. Images added later are placed by the same rule, and
the images already split keep their side.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImgclassError
from ..labels import read_labels
from ..fileio import atomic_write
from ..media.images import IMAGE_SUFFIXES, natural_key

VAL_NAMES = ("val", "validation", "valid")
SPLIT_FILE = "split.json"


@dataclass
class Dataset:
    """Where a dataset's images are and which class each one belongs to.

    Attributes:
        root: the dataset folder.
        classes: class names; a sample's label is an index into this list.
        train, val, test: ``(path, label)`` pairs (``test`` may be empty).
        split: how val was made: "folders" (a val folder) or "hash" (split by content).
        split_saved: True when train and val are exactly what the split file holds (nothing to write).
        skipped: files that are not images (by suffix), as ``(path, reason)``.
        warnings: non-fatal findings about the layout (e.g. a folder missing from labels.txt).

    Example:
        >>> ds = find_dataset("data/hymenoptera")  # doctest: +SKIP
        >>> ds.classes, len(ds.train), len(ds.val)  # doctest: +SKIP
        (['ants', 'bees'], 244, 153)
    """

    root: Path
    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]] = field(default_factory=list)
    split: str = "folders"
    split_saved: bool = False
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_dataset(root: str | Path, val_split: float = 0.2, split_file: str | Path | None = None) -> Dataset:
    """Read a dataset folder's layout (no image is decoded here).

    Args:
        root: the dataset folder.
        val_split: fraction of each class held out for validation when there is no val folder.
        split_file: a ``split.json`` written by an earlier run; when it exists its split is reused
            (images added since are placed by content, images gone are dropped: ``follow_split``).

    Raises:
        ImgclassError: no such folder, fewer than 2 classes, labels.txt naming a missing folder, a bad split file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImgclassError(f"{root}: dataset folder not found; give a folder holding train/<class>/ (or <class>/) folders")
    if not 0 < val_split < 1:
        raise ImgclassError(f"--val-split {val_split}: must be between 0 and 1 (e.g. 0.2 holds out 20%)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
    ds = Dataset(root=root, classes=[], train=[], val=[])
    ds.classes = _class_names(root, train_dir, ds.warnings)
    ds.train = _samples(train_dir, ds.classes, ds.skipped)
    if val_dir is not None:
        ds.val = _samples(val_dir, ds.classes, ds.skipped, required=False)
        ds.warnings += _val_only_classes(train_dir, val_dir, ds.classes)
    if (root / "test").is_dir():
        ds.test = _samples(root / "test", ds.classes, ds.skipped, required=False)
    if val_dir is None:
        ds.split = "hash"
        saved = Path(split_file) if split_file is not None else None
        if saved is not None and saved.is_file():
            ds.train, ds.val, change = follow_split(ds.train, *read_split(saved, root, ds.classes), val_split)
            ds.split_saved = change is None
            if change is not None:
                ds.warnings.append(f"{saved}: {change}")
        else:
            ds.train, ds.val = hash_split(ds.train, val_split)
    return ds


def _class_names(root: Path, train_dir: Path, warnings: list[str]) -> list[str]:
    """Class names: labels.txt's order when present (every label needs a folder), else sorted folder names."""
    folders = sorted((p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and not (train_dir == root and p.name in (*VAL_NAMES, "test"))), key=natural_key)
    if (root / "labels.txt").is_file():
        classes, _ = read_labels(root / "labels.txt")
        missing = [c for c in classes if c not in folders]
        if missing:
            raise ImgclassError(f"{root / 'labels.txt'}: label(s) {', '.join(missing)} have no folder in {train_dir}; "
                                "create the folders or fix labels.txt")
        if len(set(classes)) != len(classes):
            raise ImgclassError(f"{root / 'labels.txt'}: a label is listed twice; list each class once")
        extra = [f for f in folders if f not in classes]
        if extra:
            warnings.append(f"folder(s) {', '.join(extra)} in {train_dir} are not in labels.txt and are ignored")
        if len(classes) < 2:  # one class trains to a "100%" model that answers it for every image
            raise ImgclassError(f"{root / 'labels.txt'}: lists {len(classes)} class(es); a classifier needs at least "
                                "2: list 2 or more classes, each with a folder of images")
        return classes
    if len(folders) < 2:
        raise ImgclassError(f"{train_dir}: found {len(folders)} class folder(s); a classifier needs at least 2 "
                            "(lay the dataset out as train/<class>/*.jpg)")
    return folders


def _val_only_classes(train_dir: Path, val_dir: Path, classes: list[str]) -> list[str]:
    """Warnings for class folders with images in val but no folder in train (such a class is not trained)."""
    return [f"{val_dir / name} has images but there is no {train_dir / name} folder: class {name} is not trained "
            f"and its val images are ignored; add training images to {train_dir / name}/"
            for name in sorted((p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in classes
                                and not (train_dir / p.name).is_dir()), key=natural_key)
            if any(f.suffix.lower() in IMAGE_SUFFIXES for f in (val_dir / name).iterdir())]


def _samples(split_dir: Path, classes: list[str], skipped: list, required: bool = True) -> list[tuple[Path, int]]:
    """``(path, label)`` for every image file in ``split_dir/<class>/``; other files go to ``skipped``."""
    out = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            if required:
                raise ImgclassError(f"{folder}: class folder missing; create it or drop '{name}' from labels.txt")
            continue
        for path in sorted(folder.iterdir(), key=natural_key):
            if path.name.startswith(".") or path.is_dir():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                out.append((path, label))
            else:
                skipped.append((path, f"not an image file ({path.suffix or 'no suffix'})"))
    return out


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (the key of the split and of the duplicate check)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hash_split(samples: list[tuple[Path, int]], val_split: float) -> tuple[list, list]:
    """Split each class by file content: files sorted by sha256, the first ``val_split`` of them go to val.

    Stratified (every class with 2+ images keeps one in each part) and independent of file names,
    so renaming or re-copying a dataset gives the same split.

    Example:
        >>> train, val = hash_split(samples, 0.2)  # doctest: +SKIP
    """
    by_class: dict[int, list[tuple[str, Path]]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append((file_digest(path), path))
    train, val = [], []
    for label, items in sorted(by_class.items()):
        items.sort()
        n_val = min(len(items) - 1, max(1, round(len(items) * val_split))) if len(items) > 1 else 0
        val += [(p, label) for _, p in items[:n_val]]
        train += [(p, label) for _, p in items[n_val:]]
    return sorted(train, key=lambda s: (s[1], natural_key(s[0]))), sorted(val, key=lambda s: (s[1], natural_key(s[0])))


def write_split(path: str | Path, ds: Dataset, val_split: float) -> Path:
    """Write the train/val file lists (relative to the dataset) so a later run reuses them. Atomic."""
    doc = {"dataset": str(ds.root.resolve()), "val_split": val_split, "classes": ds.classes,
           "train": [[str(p.relative_to(ds.root)), l] for p, l in ds.train],
           "val": [[str(p.relative_to(ds.root)), l] for p, l in ds.val]}
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))


def read_split(path: Path, root: Path, classes: list[str]) -> tuple[list, list]:
    """The (train, val) an earlier run wrote (some files may be gone since); its classes must be the dataset's."""
    try:
        doc = json.loads(path.read_text())
        if doc["classes"] != classes:
            raise ImgclassError(f"{path}: written for classes {doc['classes']}, but the dataset has {classes}; "
                                "delete it to split again, or use a new --model-dir")
        parts = [[(root / p, int(l)) for p, l in doc[k]] for k in ("train", "val")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImgclassError(f"{path}: unreadable split file ({e}); delete it to split the dataset again") from None
    return parts[0], parts[1]


def follow_split(samples: list[tuple[Path, int]], train: list, val: list, val_split: float) -> tuple[list, list, str | None]:
    """Split ``samples`` (the dataset's images now) as a saved split (``train``, ``val``) did.

    Images in the saved split keep their side; images added since go where ``hash_split`` of all
    ``samples`` puts them (the rule that made the split); images gone since are dropped.

    Returns:
        (train, val, what changed in one line, or None when the saved split is still exact).
    """
    in_val = {p: False for p, _ in train} | {p: True for p, _ in val}
    present = {p for p, _ in samples}
    added = [p for p, _ in samples if p not in in_val]
    gone = [p for p in in_val if p not in present]
    if not added and not gone:
        return train, val, None
    new_val = {p for p, _ in hash_split(samples, val_split)[1]}
    in_val |= {p: p in new_val for p in added}
    n_val = sum(in_val[p] for p in added)
    change = (f"the dataset changed since this split was written: {len(added)} new image(s) placed by content "
              f"({len(added) - n_val} train, {n_val} val), {len(gone)} removed image(s) dropped; "
              "the others keep their side")
    return [s for s in samples if not in_val[s[0]]], [s for s in samples if in_val[s[0]]], change
