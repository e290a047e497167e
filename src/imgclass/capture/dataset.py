"""The dataset being collected: ``DIR/<set>/<class>/<timestamp>-<n>.jpg`` plus ``DIR/labels.txt``.

Everything that turns user input (a typed class name, a set) into a path goes through here, so
one place guarantees that nothing is ever written outside ``DIR``.
"""
from __future__ import annotations

import io
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImgclassError
from ..labels import read_labels
from ..fileio import atomic_write
from ..media.images import IMAGE_SUFFIXES, save_image

SETS = ("train", "val", "test")
AUTO = "auto"
VAL_SHARE = 5  # "auto" sends 1 capture in VAL_SHARE to val
# Characters Windows refuses in file names: a dataset collected here must copy to any machine.
_FORBIDDEN = set('/\\<>:"|?*')
MAX_NAME = 100
MAX_PIXELS = 40_000_000  # a posted frame (8K video is 33 MP); a bigger one is a decompression bomb


def validate_class_name(name: str) -> str:
    """Return ``name`` without surrounding spaces, or raise if it cannot safely be a folder name.

    Refused: empty names, path separators, ``.``/``..`` and other leading dots (hidden folders),
    control characters (NUL included) and characters Windows forbids in file names.

    Example:
        >>> validate_class_name("  red mug ")
        'red mug'
        >>> validate_class_name("../../etc")
        Traceback (most recent call last):
        ...
        imgclass.errors.ImgclassError: class name '../../etc' contains '/'; use a plain name like 'red_mug'
    """
    if not isinstance(name, str):
        raise ImgclassError(f"class name {name!r} is not text; use a plain name like 'red_mug'")
    clean = name.strip()
    shown = repr(name)
    if not clean:
        raise ImgclassError("class name is empty; type a name like 'red_mug'")
    if len(clean) > MAX_NAME:
        raise ImgclassError(f"class name {shown[:40]}... is longer than {MAX_NAME} characters; use a shorter one")
    if bad := next((c for c in clean if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None):
        raise ImgclassError(f"class name {shown} contains the control character {bad!r}; use a plain name like 'red_mug'")
    if bad := next((c for c in clean if c in _FORBIDDEN), None):
        raise ImgclassError(f"class name {shown} contains '{bad}'; use a plain name like 'red_mug'")
    if clean.startswith("."):
        raise ImgclassError(f"class name {shown} starts with '.'; use a plain name like 'red_mug'")
    return clean


def validate_set(name: str) -> str:
    """``train``, ``val``, ``test`` or ``auto``, else a clear error.

    Example:
        >>> validate_set("val")
        'val'
    """
    if name not in (*SETS, AUTO):
        raise ImgclassError(f"set {name!r} is not one of train, val, test, auto")
    return name


@dataclass(frozen=True)
class Capture:
    """One saved image: where it went, relative to the dataset folder."""

    set: str
    label: str
    name: str

    @property
    def relpath(self) -> str:
        return f"{self.set}/{self.label}/{self.name}"


class Dataset:
    """A dataset folder being filled with captures; safe to use from several threads.

    Classes are the union of ``DIR/labels.txt``, the ``labels`` file given, and class folders
    already on disk, so collection can resume any time. A new class is appended to
    ``DIR/labels.txt`` (rewritten atomically).

    Example:
        >>> ds = Dataset("data/mugs", labels="mugs.txt")  # doctest: +SKIP
        >>> ds.save(frame, "auto", "red mug", quality=90).relpath  # doctest: +SKIP
        'train/red mug/20260129-101502-0.jpg'
        >>> ds.undo().relpath  # doctest: +SKIP
        'train/red mug/20260129-101502-0.jpg'
    """

    def __init__(self, root: str | Path, labels: str | Path | None = None):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ImgclassError(f"{root}: exists and is not a folder; give a dataset folder for --dataset")
        self._lock = threading.Lock()
        self._history: list[Capture] = []  # this session's captures, newest last: what undo removes
        self._sequence: dict[str, int] = {}  # per-second counter behind unique names
        on_disk = read_labels(self.labels_file)[0] if self.labels_file.exists() else []
        names = on_disk + (read_labels(labels)[0] if labels else [])
        names += sorted({p.name for s in SETS for p in (self.root / s).glob("*") if p.is_dir()})
        self.classes: list[str] = []
        for name in map(validate_class_name, names):
            if name not in self.classes:
                self.classes.append(name)
        if self.classes != on_disk:
            self._write_labels(self.classes)

    @property
    def labels_file(self) -> Path:
        return self.root / "labels.txt"

    def _write_labels(self, classes: list[str]) -> None:
        text = "".join(f"{c}\n" for c in classes)
        try:
            atomic_write(self.labels_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as e:
            raise ImgclassError(f"{self.labels_file}: cannot write ({e.strerror or e}); check the folder's "
                                "permissions and free disk space") from None

    def add_class(self, name: str) -> str:
        """Validate ``name`` and add it (to labels.txt too) if new; returns the clean name."""
        name = validate_class_name(name)
        with self._lock:
            if name not in self.classes:
                self._write_labels(self.classes + [name])  # the list changes only once the file has
                self.classes.append(name)
        return name

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per set and class on disk: ``{"train": {"cat": 12, ...}, "val": {...}, "test": {...}}``.

        Read from disk each time, so files added or removed by other means are counted too.
        """
        return {s: {c: _count_images(self.root / s / c) for c in self.classes} for s in SETS}

    def total(self) -> int:
        """Images in the dataset, all sets and classes."""
        return sum(n for per_set in self.counts().values() for n in per_set.values())

    def warnings(self, ratio: float = 3.0, minimum: int = 10) -> list[str]:
        """Classes with far fewer images (all sets) than the biggest one: a lopsided dataset trains badly."""
        totals = {c: sum(per_set[c] for per_set in self.counts().values()) for c in self.classes}
        most = max(totals.values(), default=0)
        if most < minimum:
            return []
        return [f"'{c}' has {n} image{'' if n == 1 else 's'}, the biggest class {most}: capture more of it"
                for c, n in totals.items() if n * ratio < most]

    def pick_set(self, name: str, label: str) -> str:
        """Resolve ``auto``: val when that keeps val at most 1 in VAL_SHARE of the class's train+val."""
        if validate_set(name) != AUTO:
            return name
        train, val = (_count_images(self.root / s / label) for s in ("train", "val"))
        return "val" if (val + 1) * VAL_SHARE <= train + val + 1 else "train"

    def save(self, image: np.ndarray | bytes, set_name: str, label: str, quality: int = 95) -> Capture:
        """Save one capture atomically under a unique ``<timestamp>-<n>.jpg`` name.

        Args:
            image: an HxWx3 uint8 RGB frame (encoded at ``quality``), or the bytes of a JPEG
                already encoded by the browser at that quality (kept as is: no second loss).
            set_name: train, val, test or auto.
            label: a class name; a new one is added to labels.txt.
            quality: JPEG quality 1..100.
        """
        if not 1 <= int(quality) <= 100:
            raise ImgclassError(f"JPEG quality {quality} is outside 1..100")
        if isinstance(image, (bytes, bytearray)):
            decode_jpeg(image)  # refuse a truncated or non-JPEG upload before it lands in the dataset
        label = self.add_class(label)
        with self._lock:
            set_name = self.pick_set(set_name, label)
            folder = self.root / set_name / label
            if folder.exists() and not folder.resolve().is_relative_to(self.root):  # a symlink planted in DIR
                raise ImgclassError(f"{folder}: leads outside the dataset folder; remove that link")
            path = self._unique_path(folder)
            try:
                if isinstance(image, (bytes, bytearray)):
                    atomic_write(path, lambda tmp: Path(tmp).write_bytes(image))
                else:
                    save_image(path, image, quality=int(quality))
            except OSError as e:
                raise ImgclassError(f"{path}: cannot write ({e.strerror or e}); check the folder's permissions "
                                    "and free disk space") from None
            capture = Capture(set_name, label, path.name)
            self._history.append(capture)
        return capture

    def _unique_path(self, folder: Path) -> Path:
        """``<folder>/<YYYYmmdd-HHMMSS>-<n>.jpg`` that does not exist yet; caller holds the lock."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = self._sequence.get(stamp, 0)
        while (path := folder / f"{stamp}-{n}.jpg").exists():
            n += 1
        self._sequence = {stamp: n + 1}  # only the current second matters
        return path

    def undo(self) -> Capture | None:
        """Delete this session's most recent capture still on disk; None when there is none."""
        with self._lock:
            while self._history:
                capture = self._history.pop()
                path = self.root / capture.relpath
                if path.exists():
                    path.unlink()
                    return capture
        return None

    def recent(self, n: int = 12) -> list[Capture]:
        """This session's last ``n`` captures, newest first."""
        with self._lock:
            return self._history[-n:][::-1]

    def resolve(self, relpath: str) -> Path:
        """The file ``relpath`` names inside the dataset; refuses anything that leads outside it."""
        try:
            path = (self.root / relpath).resolve()
            if path.is_relative_to(self.root) and path.is_file():
                return path
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            pass
        raise ImgclassError(f"{relpath if len(relpath) <= 60 else relpath[:57] + '...'}: no such image in the dataset")


def decode_jpeg(data: bytes) -> np.ndarray:
    """The HxWx3 RGB image of a complete JPEG (what the browser posts); anything else raises."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise ImgclassError(f"posted image is {image.format}, not JPEG")
            if image.width * image.height > MAX_PIXELS:
                raise ImgclassError(f"posted image of {image.width}x{image.height} pixels is too large "
                                    f"(at most {MAX_PIXELS:,})")
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:  # Image.open refuses sizes far over the limit before we see them
        raise ImgclassError(f"posted image is too large (at most {MAX_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImgclassError(f"posted image is not a readable JPEG ({e})") from None


def _count_images(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return 0
