"""Class label files: jetson's synset format (``n01440764 tench, Tinca tinca``) or one name per line."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .errors import ImgclassError

_SYNSET = re.compile(r"^(n\d{8})\s+(.*)$")


def parse_labels(text: str) -> tuple[list[str], list[str]]:
    """Split label-file text into (descriptions, synsets); a plain line's synset is its own text.

    Example:
        >>> parse_labels("n01440764 tench, Tinca tinca\\nbees\\n")
        (['tench, Tinca tinca', 'bees'], ['n01440764', 'bees'])
    """
    descs, synsets = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _SYNSET.match(line)
        descs.append(m.group(2).strip() if m else line)
        synsets.append(m.group(1) if m else line)
    return descs, synsets


def read_labels(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a labels file; returns (descriptions, synsets)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImgclassError(f"{path}: labels file not found; check the path given to --labels") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ImgclassError(f"{path}: cannot read labels file ({e}); it must be UTF-8 text, one class per line") from None
    descs, synsets = parse_labels(text)
    if not descs:
        raise ImgclassError(f"{path}: labels file is empty; it must list one class per line")
    return descs, synsets


def imagenet_labels() -> tuple[list[str], list[str]]:
    """The 1000 ImageNet-1k classes in standard order, shipped with the package."""
    text = resources.files("imgclass.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return parse_labels(text)
