"""The label box drawn on frames: top-K lines ``"97.31% orange"`` in a translucent box, top left."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def short_label(label: str) -> str:
    """ImageNet labels list synonyms (``tabby, tabby cat``); the overlay shows the first."""
    return label.split(",")[0].strip()


def overlay_lines(predictions: Sequence) -> list[str]:
    return [f"{p.confidence * 100:05.2f}% {short_label(p.label)}" for p in predictions]


def draw_overlay(image: np.ndarray, lines: Sequence[str], alpha: float = 0.55) -> np.ndarray:
    """Return a copy of an HxWx3 uint8 RGB image with ``lines`` in a translucent box at the top left.

    The text height scales with the image (about 1/22 of its short side), so it reads the same
    on a thumbnail and on a 4K frame.

    Example:
        >>> out = draw_overlay(np.zeros((360, 640, 3), np.uint8), ["97.31% orange"])
        >>> out.shape
        (360, 640, 3)
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if not lines:
        return out
    h, w = out.shape[:2]
    size = max(10, min(h, w) // 22)
    font, pad = _font(size), max(2, size // 3)
    boxes = [font.getbbox(line) for line in lines]
    line_h = size + pad
    box_w = min(w, max(b[2] for b in boxes) + 2 * pad)
    box_h = min(h, line_h * len(lines) + pad)
    region = out[:box_h, :box_w].astype(np.float32)
    out[:box_h, :box_w] = (region * (1 - alpha)).astype(np.uint8)  # darken: a black box at `alpha`
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)
