"""Still images: read, write (atomically) and expand a file / directory / glob into a file list."""
from __future__ import annotations

import glob as globlib
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImgclassError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}


def natural_key(path: str | Path) -> list:
    """Sort key so that img2.jpg comes before img10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def list_images(spec: str | Path) -> list[Path]:
    """Expand an image file, a directory (natural order, not recursive) or a glob into paths.

    Example:
        >>> list_images("photos/*.jpg")  # doctest: +SKIP
        [PosixPath('photos/1.jpg'), PosixPath('photos/2.jpg'), PosixPath('photos/10.jpg')]
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        if not files:
            raise ImgclassError(f"{text}: directory holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if path.exists():
        return [path]
    if is_glob(text):
        files = sorted((Path(p) for p in globlib.glob(os.path.expanduser(text)) if Path(p).is_file()), key=natural_key)
        if not files:
            raise ImgclassError(f"{text}: no file matches this pattern; check it, and quote it so the shell leaves it alone")
        return files
    raise ImgclassError(f"{text}: no such file or directory; check the path")


def open_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode an image file to an RGB PIL image, upright (EXIF orientation applied).

    Args:
        min_size: when given, a JPEG may be decoded at a reduced scale (DCT scaling, much
            faster on large photos) as long as its short side stays >= min_size.
    """
    path = Path(path)
    try:
        image = Image.open(path)
        if min_size and image.format == "JPEG":
            w, h = image.size
            scale = min_size / min(w, h)
            if scale < 1:
                image.draft("RGB", (int(w * scale) + 1, int(h * scale) + 1))
        image.load()
        image = ImageOps.exif_transpose(image)
        return image if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise ImgclassError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise ImgclassError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImgclassError(f"{path}: not an image, or a format Pillow cannot read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImgclassError(f"{path}: corrupt or truncated image ({e})") from None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array.

    Example:
        >>> img = load_image("cat.jpg")  # doctest: +SKIP
        >>> img.shape, img.dtype
        ((375, 500, 3), dtype('uint8'))
    """
    return np.array(open_image(path))  # writable, so overlays can draw on it


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    with atomic_output(path) as tmp:
        write(tmp)
    return Path(path)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block ends
    normally, deleted when it raises. For outputs written over time (a video), unlike atomic_write.

    Example:
        >>> with atomic_output("out.mp4") as tmp:  # doctest: +SKIP
        ...     write_video(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the user's file gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(path: str | Path, image: np.ndarray | Image.Image, quality: int = 95) -> Path:
    """Write an RGB image; the format follows the suffix (.jpg, .png, ...). Atomic."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImgclassError(f"{path}: unknown image type '{path.suffix}'; use .jpg, .png, .bmp or .webp")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **options))


def is_image_path(spec: str) -> bool:
    return Path(spec).suffix.lower() in IMAGE_SUFFIXES


class ImageSink:
    """Write frames as images: one file, a pattern (``out_%i.jpg``, ``out_%04i.png``, ``out_*.jpg``,
    counter from 0) or a directory (``0.jpg``, ``1.jpg``, ...). Every write is atomic.

    Example:
        >>> sink = ImageSink("out_%03i.jpg")
        >>> sink.path(7).name
        'out_007.jpg'
    """

    def __init__(self, spec: str | Path, quality: int = 95):
        text = str(spec).replace("*", "%i")
        self.quality, self.count = quality, 0
        if "%" in text:
            self.pattern = re.sub(r"%(0?\d*)i", r"%\1d", text)
            try:
                self.pattern % 0
            except (TypeError, ValueError):
                raise ImgclassError(f"{spec}: bad output pattern; use one counter like out_%i.jpg or out_%04i.png") from None
        elif Path(text).is_dir() or text.endswith(os.sep) or not Path(text).suffix:
            self.pattern = os.path.join(text, "%d.jpg")
        else:
            self.pattern = None
            self.single = Path(text)
        if not is_image_path(self.path(0)):
            raise ImgclassError(f"{spec}: unknown image type; end the output name in .jpg, .png, .bmp or .webp")

    @property
    def single_file(self) -> bool:
        return self.pattern is None

    def path(self, index: int) -> Path:
        return self.single if self.pattern is None else Path(self.pattern % index)

    def write(self, image: np.ndarray) -> Path:
        path = save_image(self.path(self.count), image, self.quality)
        self.count += 1
        return path
