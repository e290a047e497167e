"""A split's images: decoded once into memory for the small jobs that want pixels (checks,
calibration), or only indexed (labels, files, digests) for training, which streams them."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ImgclassError
from ..media.decode import decode_files
from ..preprocess import Preprocess
from .folder import file_digest


@dataclass
class ImageIndex:
    """Which images a split holds, without their pixels (what the dataset checks read).

    Attributes:
        labels: (N,) int64 class indices.
        paths: the files.
        digests: sha256 of each file's bytes (finds duplicates across splits).
    """

    labels: np.ndarray
    paths: list[Path]
    digests: list[str]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Images(ImageIndex):
    """Decoded images, already resized and center-cropped the way the model's preprocessing does.

    Attributes:
        pixels: (N, size, size, 3) uint8 RGB.
    """

    pixels: np.ndarray


def unreadable(path: Path, decoded: np.ndarray | ImgclassError) -> str | None:
    """Why ``path`` cannot be trained on, given what ``media.decode`` made of it, or None when it can:
    the one test of which files training skips (the activation store, the full fine-tune's checks)."""
    return str(decoded).removeprefix(f"{path}: ") if isinstance(decoded, ImgclassError) else None


def index_images(paths: list[Path], labels: np.ndarray, workers: int = 2) -> ImageIndex:
    """The index of readable images: their digests are read in ``workers`` threads.

    Raises:
        ImgclassError: a file can no longer be read.
    """
    def digest(path: Path) -> str:
        try:
            return file_digest(path)
        except OSError as e:
            raise ImgclassError(f"{path}: cannot read the file ({e.strerror or e})") from None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return ImageIndex(labels, paths, list(pool.map(digest, paths)))


def index_readable(samples: list[tuple[Path, int]], preprocess: Preprocess, workers: int = 2, desc: str = "check",
                   device: str = "cpu") -> tuple[ImageIndex, list[tuple[Path, str]]]:
    """The index (``index_images``) of the ``(path, label)`` samples that decode as ``preprocess`` says,
    each decoded once and its pixels dropped at once (memory flat in their number), and the unreadable
    ones as ``(path, why)``.

    Raises:
        ImgclassError: a file decoded and then could not be read.
    """
    good, bad = [], []
    paths = [p for p, _ in samples]
    decoded = (item for batch in decode_files(paths, preprocess, 32, workers, device) for item in batch)
    for (path, label), (_, image) in zip(samples, tqdm(decoded, total=len(samples), desc=desc, unit="img",
                                                       leave=False, disable=None)):
        why = unreadable(path, image)
        if why is None:
            good.append((path, label))
        else:
            bad.append((path, why))
    return index_images([p for p, _ in good], np.array([label for _, label in good], np.int64), workers), bad


def decode_images(samples: list[tuple[Path, int]], preprocess: Preprocess, workers: int = 2,
                  desc: str = "decode", device: str = "cpu") -> tuple[Images, list[tuple[Path, str]]]:
    """Decode ``(path, label)`` samples through ``media.decode`` (threads; on a CUDA ``device`` the GPU,
    20-30x faster than 2 CPU workers); unreadable files are returned, not raised.

    Example:
        >>> images, bad = decode_images(ds.train, spec.preprocess)  # doctest: +SKIP
        >>> images.pixels.shape  # doctest: +SKIP
        (244, 224, 224, 3)
    """
    def digest(path: Path) -> str | None:
        try:
            return file_digest(path)
        except OSError:  # the decoder says what is wrong with the file
            return None

    pixels, labels, paths, digests, bad = [], [], [], [], []
    decoded = (item for batch in decode_files([p for p, _ in samples], preprocess, 32, workers, device) for item in batch)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = zip(tqdm(decoded, total=len(samples), desc=desc, unit="img", leave=False, disable=None),
                      pool.map(digest, (p for p, _ in samples)))
        for (path, label), ((_, image), sha) in zip(samples, results):
            why = unreadable(path, image)
            if why is not None or sha is None:
                bad.append((path, why or "cannot read the file"))
                continue
            pixels.append(image), labels.append(label), paths.append(path), digests.append(sha)
    size = preprocess.size
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return Images(np.asarray(labels, np.int64), paths, digests, array), bad
