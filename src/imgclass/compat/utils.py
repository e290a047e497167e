"""jetson_utils for still images: ``loadImage``, ``saveImage``, ``cudaFont``, numpy interop.

Images are numpy arrays (HxWx3 uint8 RGB) with jetson's ``width``/``height``/``channels``/``format``
attributes, so scripts that read ``img.width`` keep working.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..media.images import load_image, save_image
from ..overlay import _font
from .video import videoOutput, videoSource

__all__ = ["Log", "cudaImage", "loadImage", "saveImage", "cudaFont", "cudaToNumpy", "cudaFromNumpy", "cudaDeviceSynchronize",
           "videoSource", "videoOutput"]


class cudaImage(np.ndarray):
    """A numpy image that also answers to jetson's cudaImage attributes."""

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[2] if self.ndim == 3 else 1

    @property
    def format(self) -> str:
        return {1: "gray8", 3: "rgb8", 4: "rgba8"}.get(self.channels, "rgb8")


class Log:
    """jetson_utils.Log: the tutorial scripts call ``Log.Usage()`` in their --help text."""

    @staticmethod
    def Usage() -> str:
        return "logging arguments: --log-level=LEVEL (accepted for compatibility; imgclass logs warnings and errors)"


def cudaFromNumpy(array: np.ndarray) -> cudaImage:
    return np.asarray(array).view(cudaImage)


def cudaToNumpy(image: np.ndarray) -> np.ndarray:
    return np.asarray(image)


def cudaDeviceSynchronize() -> None:
    """Nothing to wait for: imgclass images live in host memory."""


def loadImage(filename: str, format: str = "rgb8") -> cudaImage:
    """Load an image file (jetson's ``loadImage``); only 8-bit RGB is produced."""
    return cudaFromNumpy(load_image(filename))


def saveImage(filename: str, image: np.ndarray, quality: int = 95) -> None:
    """Save an image (jetson's ``saveImage``); atomic, format from the suffix."""
    save_image(filename, np.asarray(image)[..., :3].astype(np.uint8), quality)


class cudaFont:
    """jetson's text overlay: ``font.OverlayText(img, text=..., x=5, y=5, color=font.White, background=font.Gray40)``."""

    White, Black, Red, Green, Blue = (255, 255, 255, 255), (0, 0, 0, 255), (255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255)
    Gray40, Gray80 = (40, 40, 40, 100), (80, 80, 80, 180)

    def __init__(self, font: str | None = None, size: int = 32):
        self.size = size

    def GetSize(self) -> int:
        return self.size

    def OverlayText(self, image: np.ndarray, width=None, height=None, text: str = "", x: int = 0, y: int = 0,
                    color=White, background=Gray40, padding: int = 5) -> None:
        """Draw ``text`` onto ``image`` in place (width/height are accepted and unused, as in jetson's newer API)."""
        pixels = np.asarray(image)
        canvas = Image.fromarray(pixels[..., :3]).convert("RGBA")
        layer = Image.new("RGBA", canvas.size)
        draw, font = ImageDraw.Draw(layer), _font(self.size)
        left, top, right, bottom = font.getbbox(text)
        if background is not None and background[3] > 0:
            draw.rectangle((x, y, x + right + 2 * padding, y + bottom + 2 * padding), fill=tuple(int(c) for c in background))
        draw.text((x + padding, y + padding), text, font=font, fill=tuple(int(c) for c in color))
        pixels[..., :3] = np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"))
