"""The network's input side for a training run: the one place that decides it.

The network's own (224 for efficientnet-lite0), unless ``--resolution`` says otherwise, or the
dataset's images are smaller than it: then the network runs at 8/7 of its side (256 for lite0), chosen
by measurement, not derived. On flowers12 downscaled to 128 px (``benchmarks/train_small_images.py``,
BENCHMARKS.md), val images right out of 240 with lite0: 224 (the network's own) 232, 256 234, 288 233,
176 231, 128 227; another upscale filter (Lanczos) 233, the whole frame without the center crop 231;
full-resolution flowers12 gives 235. A larger network (lite1, lite2) also gives 235, but costs more
(lite1 1.17x the whole command, lite2 2.8x on larger sets) and changes the network: the user's choice
(``--arch``). Measured on lite0 only: 8/7 for other networks is an extrapolation.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from functools import lru_cache

from PIL import Image

from ..errors import ImgclassError
from ..media.inputs import list_images
from ..models import ModelSpec
from ..preprocess import Preprocess
from .config import TrainConfig

HEADERS = 256  # image headers read, evenly spread over the dataset: a 100k-image set costs what a small one does
SMALL_SCALE = 8 / 7  # network side for small images, over its own: 224 -> 256, the best of those measured


@lru_cache(maxsize=4)  # asked for the run's input, then for each network --time weighs: the folder is walked once
def median_short_side(dataset: str, limit: int = HEADERS) -> int | None:
    """The median short side of up to ``limit`` of the dataset's images, from their headers only
    (no pixels decoded); None when there is none to read (the data step then says what is wrong)."""
    try:
        files = list_images(dataset)
    except ImgclassError:
        return None
    sides = []
    for path in files[::max(1, len(files) // limit)][:limit]:
        try:
            with Image.open(path) as image:  # lazy: parses the header, decodes nothing
                sides.append(min(image.size))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # the decode step reports unreadable files
    return round(statistics.median(sides)) if sides else None


def choose_input(spec: ModelSpec, cfg: TrainConfig, checkpoint: dict | None = None) -> tuple[Preprocess, str]:
    """The run's preprocessing (its ``size`` is the network's input side) and one line saying why.

    A resumed run keeps its checkpoint's; ``cfg.resolution`` wins over the dataset's image sizes.

    Example:
        >>> pre, why = choose_input(get_spec("efficientnet-lite0"), TrainConfig("thumbnails"))  # doctest: +SKIP
        >>> pre.size, why  # doctest: +SKIP
        (256, 'input: 256 px: the images (median short side 128 px) are smaller than ...')
    """
    own = spec.preprocess
    if checkpoint is not None:
        resumed = Preprocess.from_json(checkpoint["preprocess"], "the checkpoint's preprocessing")
        return resumed, f"input: {resumed.size} px, the resumed run's"
    if cfg.resolution:
        return replace(own, size=cfg.resolution), f"input: {cfg.resolution} px (--resolution)"
    side = median_short_side(cfg.dataset)
    if side is None or side >= own.size:
        return own, f"input: {own.size} px, {spec.name}'s own"
    size = round(own.size * SMALL_SCALE)
    return replace(own, size=size), (f"input: {size} px: the images (median short side {side} px) are smaller than "
                                     f"{spec.name}'s {own.size}, and upscaled ones train better shown larger "
                                     "(--resolution sets it)")
