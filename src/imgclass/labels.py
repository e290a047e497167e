"""Class label files: jetson's synset format (``n01440764 tench, Tinca tinca``) or one name per line."""
from __future__ import annotations

import re
import unicodedata
from importlib import resources
from pathlib import Path

from .errors import ImgclassError

_SYNSET = re.compile(r"^(n\d{8})\s+(.*)$")
MAX_LABELS_BYTES = 1 << 20  # 1 MB: 100,000 names of 10 letters; what is larger is no labels file (/dev/urandom)
MAX_CLASSES = 100_000


def parse_labels(text: str) -> tuple[list[str], list[str]]:
    """Split label-file text into (descriptions, synsets); a plain line's synset is its own text.

    Example:
        >>> parse_labels("n01440764 tench, Tinca tinca\\nbees\\n")
        (['tench, Tinca tinca', 'bees'], ['n01440764', 'bees'])
    """
    descs, synsets = [], []
    for line in text.removeprefix("\ufeff").splitlines():  # a BOM (Windows' Notepad) is not in the first name
        line = line.strip()
        if not line:
            continue
        m = _SYNSET.match(line)
        descs.append(m.group(2).strip() if m else line)
        synsets.append(m.group(1) if m else line)
    return descs, synsets


def read_labels(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a labels file; returns (descriptions, synsets).

    Raises:
        ImgclassError: missing, unreadable, over MAX_LABELS_BYTES, not UTF-8, empty, or not names
            (``check_labels``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LABELS_BYTES + 1)  # bounded: a device or a huge file is not read whole
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ImgclassError(f"{path}: labels file not found; check the path given to --labels") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ImgclassError(f"{path}: cannot read labels file ({e}); it must be UTF-8 text, one class per line") from None
    if len(data) > MAX_LABELS_BYTES:
        raise ImgclassError(f"{path}: over {MAX_LABELS_BYTES // (1 << 20)} MB, not a labels file; "
                            "it must be UTF-8 text, one class per line")
    descs, synsets = parse_labels(text)
    if not descs:
        raise ImgclassError(f"{path}: labels file is empty; it must list one class per line")
    check_labels(descs, path)
    check_labels(synsets, path)
    return descs, synsets


def check_labels(labels: object, where: str | Path) -> list[str]:
    """``labels`` as class names: a list of at most MAX_CLASSES strings of printable text. A control
    character is refused here, where labels are read, so that no escape sequence in a model or a
    labels file ever reaches the terminal that prints results.

    Raises:
        ImgclassError: anything else (``where`` names its source).
    """
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ImgclassError(f"{where}: the labels are not a list of class names")
    if len(labels) > MAX_CLASSES:
        raise ImgclassError(f"{where}: {len(labels):,} labels, over the {MAX_CLASSES:,} classes imgclass takes")
    for i, label in enumerate(labels):
        if any(unicodedata.category(c) == "Cc" and c != "\t" for c in label):
            raise ImgclassError(f"{where}: label {i + 1} holds control characters ({ascii(label)[:80]}); labels "
                                "must be printable text")
    return labels


def imagenet_labels() -> tuple[list[str], list[str]]:
    """The 1000 ImageNet-1k classes in standard order, shipped with the package."""
    text = resources.files("imgclass.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return parse_labels(text)
