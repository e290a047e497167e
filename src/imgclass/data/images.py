"""Decode a dataset once into memory: small datasets fit in RAM, and decoding is what a CPU
spends most of its time on, so every epoch and every stage reuses these pixels."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ImgclassError
from ..media.images import open_image
from ..preprocess import Preprocess
from .folder import file_digest


@dataclass
class Images:
    """Decoded images, already resized and center-cropped the way the model's preprocessing does.

    Attributes:
        pixels: (N, size, size, 3) uint8 RGB.
        labels: (N,) int64 class indices.
        paths: the files they came from.
        digests: sha256 of each file's bytes (finds duplicates across splits).
    """

    pixels: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    digests: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def decode_images(samples: list[tuple[Path, int]], preprocess: Preprocess, workers: int = 2,
                  desc: str = "decode", device: str = "cpu") -> tuple[Images, list[tuple[Path, str]]]:
    """Decode ``(path, label)`` samples in threads (on a CUDA ``device``: JPEGs decoded and resampled on
    the GPU, 20-30x faster than 2 CPU workers); unreadable files are returned, not raised.

    Example:
        >>> images, bad = decode_images(ds.train, spec.preprocess)  # doctest: +SKIP
        >>> images.pixels.shape
        (244, 224, 224, 3)
    """
    def one(sample: tuple[Path, int]):
        path = sample[0]
        try:
            digest = file_digest(path)
            return preprocess.resize_and_crop(open_image(path, min_size=preprocess.decode_size)), digest
        except ImgclassError as e:
            return str(e).removeprefix(f"{path}: "), None
        except OSError as e:
            return f"cannot read ({e.strerror})", None

    def on_gpu(pool: ThreadPoolExecutor):
        from ..media.gpu_decode import decode_to_pixels

        def digest(sample: tuple[Path, int]) -> str | None:
            try:
                return file_digest(sample[0])
            except OSError:  # the decoder says what is wrong with the file
                return None
        for (path, crop), sha in zip(decode_to_pixels([p for p, _ in samples], preprocess, device), pool.map(digest, samples)):
            good = not isinstance(crop, ImgclassError) and sha is not None
            yield (crop, sha) if good else (str(crop).removeprefix(f"{path}: "), None)

    pixels, labels, paths, digests, bad = [], [], [], [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = on_gpu(pool) if device.startswith("cuda") else pool.map(one, samples)
        results = tqdm(decoded, total=len(samples), desc=desc, unit="img", leave=False, disable=None)
        for (path, label), (image, digest) in zip(samples, results):
            if digest is None:
                bad.append((path, image))
                continue
            pixels.append(image), labels.append(label), paths.append(path), digests.append(digest)
    size = preprocess.size
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return Images(array, np.asarray(labels, np.int64), paths, digests), bad
