"""Image -> network input. The settings travel with the model (registry or ONNX metadata),
so training, export and inference always agree."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import ImgclassError, first_line

MAX_SIZE = 4096  # the largest network input side: one image is then 200 MB of float32 (a model's metadata
                 # saying 20000 would take 4 GB a row)
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes a normalized NCHW float32 tensor.

    Attributes:
        size: side of the square network input.
        resize: "crop" (short side to size/crop_pct, then center crop; what the weights were
            trained for) or "stretch" (whole frame to size x size, as jetson does).
        crop_pct: fraction of the resized short side kept by the center crop.
        interpolation: "bicubic", "bilinear" or "nearest".
        mean, std: per-channel, on the 0..1 scale.
        channel_order: "rgb" or "bgr" (what the network expects).

    Example:
        >>> p = Preprocess(size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> p(np.zeros((375, 500, 3), np.uint8)).shape
        (3, 224, 224)
    """

    size: int = 224
    resize: str = "crop"
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "rgb"

    def __post_init__(self):
        """Refuse settings that cannot work, whoever gives them (a model's metadata is anyone's text).

        Raises:
            ImgclassError: the first setting out of bounds, in words.
        """
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 1 <= self.size <= MAX_SIZE:
            raise ImgclassError(f"input size {self.size!r} is outside 1..{MAX_SIZE}")
        if self.resize not in ("crop", "stretch"):
            raise ImgclassError(f"resize {self.resize!r} is not crop or stretch")
        if not _number(self.crop_pct) or not 0 < self.crop_pct <= 1:
            raise ImgclassError(f"crop_pct {self.crop_pct!r} is outside (0, 1]")
        if self.interpolation not in _RESAMPLE:
            raise ImgclassError(f"interpolation {self.interpolation!r} is not one of {', '.join(_RESAMPLE)}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not isinstance(values, tuple) or len(values) != 3 or not all(_number(v) for v in values):
                raise ImgclassError(f"{name} {values!r} is not 3 numbers")
        if min(self.std) <= 0:
            raise ImgclassError(f"std {self.std!r} is not above 0 (each channel is divided by it)")
        if self.channel_order not in ("rgb", "bgr"):
            raise ImgclassError(f"channel_order {self.channel_order!r} is not rgb or bgr")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, where: str = "preprocessing settings") -> "Preprocess":
        """Settings ``to_json`` wrote, read back (from a model's metadata, a checkpoint: ``where``).

        Raises:
            ImgclassError: not JSON, or settings missing, mistyped or out of bounds (``__post_init__``).
        """
        try:
            d = json.loads(text)
            for k in ("mean", "std"):
                d[k] = tuple(d[k])
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except ImgclassError as e:
            why = str(e)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            why = f"not the settings imgclass writes: {type(e).__name__} {first_line(e, 80)}"
        raise ImgclassError(f"{where}: {why}")

    @property
    def decode_size(self) -> int:
        """The short side an image needs before the resize: a JPEG may be decoded at a reduced
        scale (DCT scaling) down to this, and every file meant for the network is decoded so."""
        return self.size if self.resize == "stretch" else round(self.size / self.crop_pct)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the image is resized to before the crop."""
        if self.resize == "stretch":
            return self.size, self.size
        short = round(self.size / self.crop_pct)
        scale = short / min(width, height)
        return max(self.size, round(width * scale)), max(self.size, round(height * scale))

    def resize_and_crop(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """Resize (and crop) to size x size; returns HxWx3 uint8 RGB.

        A crop resizes only the part it keeps: a box of the source, rows then columns as Pillow
        resizes a whole frame, so the pixels are those of resizing the frame and cropping it (a
        level or two apart on a few) for 60% of the work.
        """
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        width, height = image.size
        w, h = self.resized_size(width, height)
        resample = _RESAMPLE[self.interpolation]
        if (w, h) == (self.size, self.size):  # nothing to crop
            return np.asarray(image if (w, h) == image.size else image.resize((w, h), resample))
        left, top = (w - self.size) // 2, (h - self.size) // 2
        if w != width:
            x0, x1 = left * width / w, (left + self.size) * width / w
            image = image.resize((self.size, height), resample, box=(x0, 0, x1, height))
        elif self.size != width:
            image = image.crop((left, 0, left + self.size, height))
        if h != height:
            y0, y1 = top * height / h, (top + self.size) * height / h
            image = image.resize((self.size, self.size), resample, box=(0, y0, self.size, y1))
        elif self.size != height:
            image = image.crop((0, top, self.size, top + self.size))
        return np.asarray(image)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """HxWx3 (or NxHxWx3) uint8 RGB -> CHW (or NCHW) float32, normalized."""
        planar = np.moveaxis(pixels, -1, -3)  # a view: the multiply below is the one pass that copies
        if self.channel_order == "bgr":
            planar = planar[..., ::-1, :, :]
        scale = 1 / (np.asarray(self.std, np.float32) * 255)
        shift = np.asarray(self.mean, np.float32) * 255 * scale
        out = np.empty(planar.shape, np.float32)
        np.multiply(planar, scale[:, None, None], out=out)
        out -= shift[:, None, None]
        return out

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        return self.normalize(self.resize_and_crop(image))

    def batch(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        return self.normalize(np.stack([self.resize_and_crop(im) for im in images]))


def _number(value: object) -> bool:
    """A finite int or float (JSON's numbers; not a bool, not nan)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
