"""jetson_utils: images (``loadImage``, ``saveImage``, the legacy ``loadImageRGBA`` / ``saveImageRGBA``,
the CUDA image routines of ``compat.cuda``),
``cudaFont``, ``Log``, ``videoSource`` / ``videoOutput``.

Images are numpy arrays (HxWxC) with jetson's ``width``/``height``/``channels``/``format``
attributes, so scripts that read ``img.width`` or call ``cudaResize`` keep working.
"""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ImgclassError
from ..flags import LOG_LEVELS, set_log_level
from ..media.images import load_image, save_image
from ..overlay import _font
from .cuda import *  # noqa: F401,F403  (jetson_utils exports them all at top level)
from .cuda import __all__ as _cuda_all
from .cuda import as_image, convert, cudaImage, rgb8, wrap
from .video import videoOutput, videoSource

__all__ = ["Log", "loadImage", "saveImage", "loadImageRGBA", "saveImageRGBA", "cudaFont", "videoSource", "videoOutput",
           *_cuda_all]


class Log:
    """jetson_utils.Log: ``Log.SetLevel("verbose")``, ``Log.Info("...")``, ``Log.Usage()``.

    Levels (jetson's): silent, error, warning, success, info, verbose, debug; they set how much
    imgclass's own log says. Messages go to stdout, warnings and errors to stderr, as jetson's do.
    """

    _level = "info"

    @staticmethod
    def SetLevel(level: str) -> None:
        set_log_level(level)
        Log._level = level.lower()

    @staticmethod
    def GetLevel() -> str:
        return Log._level

    @staticmethod
    def _print(level: str, *messages) -> None:
        if LOG_LEVELS[level] >= LOG_LEVELS[Log._level]:  # "silent" is above every level
            print(*messages, file=sys.stderr if level in ("error", "warning") else sys.stdout, flush=True)

    @staticmethod
    def Error(*messages) -> None:
        Log._print("error", *messages)

    @staticmethod
    def Warning(*messages) -> None:
        Log._print("warning", *messages)

    @staticmethod
    def Success(*messages) -> None:
        Log._print("success", *messages)

    @staticmethod
    def Info(*messages) -> None:
        Log._print("info", *messages)

    @staticmethod
    def Verbose(*messages) -> None:
        Log._print("verbose", *messages)

    @staticmethod
    def Debug(*messages) -> None:
        Log._print("debug", *messages)

    @staticmethod
    def Usage() -> str:
        return f"logging arguments:\n  --log-level=LEVEL  message output threshold: {', '.join(LOG_LEVELS)} (default: info)\n"


def loadImage(filename: str, format: str = "rgb8", timestamp: int = 0) -> cudaImage:
    """Load an image file (jetson's ``loadImage``) in ``format``: rgb8 (default), rgba8, rgb32f, rgba32f, ..."""
    return wrap(np.ascontiguousarray(convert(load_image(filename), "rgb8", format.lower())), format.lower(),
                int(timestamp))


def loadImageRGBA(filename: str, format: str = "rgba32f", timestamp: int = 0) -> tuple[cudaImage, int, int]:
    """jetson's legacy ``loadImageRGBA``: ``(image, width, height)``, the image in ``format`` (default rgba32f)."""
    image = loadImage(filename, format, timestamp)
    return image, image.width, image.height


def saveImage(filename: str, image, quality: int = 95) -> None:
    """Save an image of any format (jetson's ``saveImage``); atomic, file type from the suffix."""
    save_image(filename, rgb8(image), quality)


def saveImageRGBA(filename: str, image, width: int = 0, height: int = 0, max_pixel: float = 255.0,
                  quality: int = 95) -> None:
    """jetson's legacy ``saveImageRGBA``: save an image whose float pixels span 0..``max_pixel`` (1.0 for
    0..1 images; 8-bit pixels are saved as they are).

    A cudaImage carries its own size and format, so ``width`` and ``height`` go unused, as in jetson;
    they size a block from ``cudaAllocMapped(size=...)``, read as float4 RGBA (jetson's cudaMemory case).
    """
    if max_pixel <= 0:
        raise ImgclassError(f"saveImageRGBA: max_pixel {max_pixel:g}: give the largest pixel value, above 0 "
                            "(255 for 0..255 images, 1.0 for 0..1)")
    if isinstance(image, np.ndarray) and image.ndim == 1:
        image = _float4_image(image, width, height)
    image = as_image(image, "saveImageRGBA")
    if image.dtype == np.float32 and max_pixel != 255:
        image = wrap(np.asarray(image) * np.float32(255 / max_pixel), image.format)
    saveImage(filename, image, quality)


def _float4_image(memory: np.ndarray, width: int, height: int) -> cudaImage:
    """A flat block of bytes (jetson's cudaMemory) as the ``width`` x ``height`` rgba32f image it holds."""
    needed = int(width) * int(height) * 16
    if needed <= 0 or memory.nbytes != needed:
        raise ImgclassError(f"saveImageRGBA: a block of {memory.nbytes} bytes is not a {width}x{height} float4 RGBA "
                            f"image ({max(needed, 0)} bytes); pass the image's width and height, or a cudaImage")
    return wrap(memory.view(np.float32).reshape(int(height), int(width), 4), "rgba32f")


class cudaFont:
    """jetson's text overlay: ``font.OverlayText(img, text=..., x=5, y=5, color=font.White, background=font.Gray40)``."""

    White, Black, Red, Green, Blue = (255, 255, 255, 255), (0, 0, 0, 255), (255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255)
    Gray40, Gray80 = (40, 40, 40, 100), (80, 80, 80, 180)

    def __init__(self, font: str | None = None, size: int = 32):
        self.size = size

    def GetSize(self) -> int:
        return self.size

    def OverlayText(self, image, width=None, height=None, text: str = "", x: int = 0, y: int = 0,
                    color=White, background=Gray40, padding: int = 5) -> None:
        """Draw ``text`` onto an rgb8/rgba8 ``image`` in place (width/height are accepted and unused, as in jetson's newer API)."""
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] < 3:
            raise ImgclassError("cudaFont.OverlayText: draws on rgb8/rgba8 images; convert others with cudaConvertColor")
        canvas = Image.fromarray(pixels[..., :3]).convert("RGBA")
        layer = Image.new("RGBA", canvas.size)
        draw, font = ImageDraw.Draw(layer), _font(self.size)
        left, top, right, bottom = font.getbbox(text)
        if background is not None and background[3] > 0:
            draw.rectangle((x, y, x + right + 2 * padding, y + bottom + 2 * padding), fill=tuple(int(c) for c in background))
        draw.text((x + padding, y + padding), text, font=font, fill=tuple(int(c) for c in color))
        pixels[..., :3] = np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"))

