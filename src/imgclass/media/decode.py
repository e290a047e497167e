"""The one decode: every route from an image file (or its bytes) to network pixels calls this module
(the CLI, the Python API, video of image folders, tables and Ray actors, the server, training, capture,
int8 calibration), so a file gets the same pixels, and the same confidences, everywhere. On a CUDA
device the files are decoded in batches on the GPU (``gpu_decode``: nvJPEG, roi_align resize): the
same geometry within a level or two, whose top-1 agreement with the CPU is in BENCHMARKS.md.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ImgclassError
from ..parallel import prefetched
from ..preprocess import Preprocess
from .images import open_image

Decoded = tuple[Path, "np.ndarray | ImgclassError"]


def decode(image: str | Path | bytes, preprocess: Preprocess, name: str = "image") -> np.ndarray:
    """An image file, or its encoded bytes (``name`` in messages), as the network's HxWx3 uint8 RGB
    pixels: a JPEG decoded at the smallest DCT scale the input size allows (several times faster on
    large photos), upright, resized and cropped as ``preprocess`` says.

    Raises:
        ImgclassError: missing, unreadable or not an image.
    """
    return preprocess.resize_and_crop(open_image(image, min_size=preprocess.decode_size, name=name))


def decode_files(paths: Iterable[str | Path], preprocess: Preprocess, batch_size: int = 8,
                 workers: int | None = None, device: str = "cpu") -> Iterator[list[Decoded]]:
    """``decode`` of many files, in threads ahead of the caller (or on a CUDA ``device``'s GPU), in
    order, ``batch_size`` at a time; a file that cannot be read gives its ImgclassError in place of
    its pixels, and the rest go on. Memory stays bounded however many files there are.

    Example:
        >>> for batch in decode_files(["a.jpg", "b.jpg"], Preprocess()):  # doctest: +SKIP
        ...     pixels = [x for _, x in batch if not isinstance(x, ImgclassError)]
    """
    if str(device).startswith("cuda"):
        from .gpu_decode import decode_to_pixels

        batch: list[Decoded] = []
        for item in decode_to_pixels([Path(p) for p in paths], preprocess, device):
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return

    def one(path: str | Path) -> Decoded:
        try:
            return Path(path), decode(path, preprocess)
        except ImgclassError as e:
            return Path(path), e

    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        yield from prefetched(pool, one, iter(paths), ahead=2 * batch_size)
