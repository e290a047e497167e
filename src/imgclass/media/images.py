"""Still images: read (upright RGB), write (atomically, through fileio, marked as imgclass's) and the sink of annotated copies."""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImgclassError
from ..fileio import atomic_write
from .jpeg import eighth_scale_scans

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"}  # what media.sinks writes
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
EXIF_SOFTWARE = 0x0131
ANNOTATED_BY = "imgclass"  # the mark of files imgclass writes (EXIF Software, a video's comment): the only ones it replaces
# The most pixels an image is decoded to: a decompression bomb (a 20 KB PNG of 169 megapixels) would
# take seconds and a gigabyte each, under Pillow's own limit. A JPEG above it is decoded at a reduced
# DCT scale that fits (a 100 MP photo as 25 MP); other formats cannot reduce, and are refused from
# their header, before any decoding. IMGCLASS_MAX_PIXELS overrides it.
MAX_PIXELS_ENV = "IMGCLASS_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000
# Pillow's warning at open of a large image: max_pixels governs here (a JPEG of 100 MP decodes reduced).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def natural_key(path: str | Path) -> list:
    """Sort key so that img2.jpg comes before img10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def max_pixels() -> int:
    """The most pixels an image is decoded to: ``$IMGCLASS_MAX_PIXELS``, else DEFAULT_MAX_PIXELS.

    Raises:
        ImgclassError: the variable is not a whole number of 1 or more.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdecimal() or int(text) < 1:
        raise ImgclassError(f"{MAX_PIXELS_ENV}={text}: give the most pixels an image may have, e.g. 40000000")
    return int(text)


def check_regular_file(path: Path) -> None:
    """Refuse what is not a plain file before it is opened: opening a FIFO waits for a writer for
    ever (deaf to SIGTERM), a device reads without end.

    Raises:
        ImgclassError: a FIFO, device, socket or folder; a missing or unreachable file.
    """
    with _os_errors(path):
        _refuse_irregular(path, os.stat(path).st_mode)


def read_file(path: Path) -> np.ndarray:
    """A plain file's bytes, as a 1-D uint8 array, refused as ``check_regular_file`` refuses.

    Read by the OS calls themselves, which run outside the GIL, into the array: 12 us a file of 10 KB
    against 21 for ``np.fromfile`` plus the check, most of it under the GIL (the 2-core VM), which
    the GPU decoder's 8 reader threads share with its decode and network threads.

    Example:
        >>> read_file(Path(__file__)).dtype
        dtype('uint8')
    """
    with _os_errors(path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once, to be refused
        try:
            info = os.fstat(fd)
            _refuse_irregular(path, info.st_mode)
            data = np.empty(info.st_size, np.uint8)
            return data[:os.readv(fd, [data])]
        finally:
            os.close(fd)


@contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise ImgclassError(f"{path}: file not found; check the path") from None
    except OSError as e:  # no permission on it or its folder, a name too long
        raise ImgclassError(f"{path}: cannot read ({e.strerror or e})") from None


def _refuse_irregular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ImgclassError(f"{path}: not a regular file ({kind}), not an image")


def _reduce(image: Image.Image, min_size: int | None, limit: int, where: str | Path) -> int:
    """Set ``image`` (opened, not decoded) to decode at the smallest size it allows, or refuse it;
    returns the denominator of the scale set (1, 2, 4 or 8).

    A JPEG gets DCT scaling (1/2, 1/4, 1/8): as far as ``limit`` pixels need, and further while its
    short side stays >= ``min_size``; any other format over ``limit`` is refused from its header.

    Raises:
        ImgclassError: over ``limit`` pixels even so (``where`` names it).
    """
    w, h = image.size
    reduction = 1
    if image.format in ("JPEG", "MPO"):  # MPO: a phone's JPEG with a second picture inside
        k = next((k for k in (1, 2, 4, 8) if (w // k) * (h // k) <= limit), 8)  # the reduction the limit needs
        want = (w // k, h // k)
        if min_size and min_size * k < min(w, h):
            scale = min_size / min(w, h)
            want = (min(want[0], int(w * scale) + 1), min(want[1], int(h * scale) + 1))
        if want != (w, h):
            drafted = image.draft("RGB", want)  # the largest reduction whose size stays >= want
            if drafted is not None:  # (mode, box of the frame at the new scale)
                reduction = round(w / drafted[1][2])
            w, h = image.size
    if w * h > limit:
        raise ImgclassError(f"{where}: {w}x{h} pixels, more than the {limit:,} imgclass decodes (a decompression "
                            f"bomb, or a huge scan); scale it down, or raise {MAX_PIXELS_ENV}")
    return reduction


def _without_unseen_scans(image: Image.Image, source: bytes | Path) -> Image.Image:
    """``image``, a progressive JPEG set to decode at 1/8 scale, opened again without the scans that
    scale never looks at (``jpeg.eighth_scale_scans``: the same pixels, a large photo in half the
    time); ``image`` itself where that cannot be done, to decode (or fail) as it is."""
    lean = eighth_scale_scans(source if isinstance(source, bytes) else source.read_bytes())
    if lean is None:
        return image
    try:
        thin = Image.open(io.BytesIO(lean))
        thin.draft("RGB", (thin.size[0] // 8, thin.size[1] // 8))
        if thin.size != image.size:
            return image
        thin.load()
    except (OSError, ValueError, SyntaxError):
        return image
    image.close()
    return thin


def open_image(path: str | Path | bytes, min_size: int | None = None, name: str = "image") -> Image.Image:
    """Decode an image file to an RGB PIL image, upright (EXIF orientation applied), of at most
    ``max_pixels()`` pixels (a larger JPEG is decoded at a reduced scale; another image is refused).

    Args:
        path: the file, or its encoded bytes (an upload; error messages then call it ``name``).
        min_size: when given, a JPEG may be decoded at a reduced scale (DCT scaling, much
            faster on large photos) as long as its short side stays >= min_size.

    Raises:
        ImgclassError: missing, not a regular file, not an image, corrupt, or too large.
    """
    limit = max_pixels()
    data = path if isinstance(path, bytes) else None
    path = name if data is not None else Path(path)
    if data is None:
        check_regular_file(path)
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
        if _reduce(image, min_size, limit, path) == 8 and image.info.get("progressive"):
            image = _without_unseen_scans(image, data if data is not None else path)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: otherwise it copies every upright photo
        return image if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise ImgclassError(f"{path}: file not found; check the path") from None
    except UnidentifiedImageError:
        raise ImgclassError(f"{path}: not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError:
        raise ImgclassError(f"{path}: over {2 * Image.MAX_IMAGE_PIXELS} pixels, too large to decode safely; "
                            "scale it down first") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImgclassError(f"{path}: corrupt or truncated image ({e})") from None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array.

    Example:
        >>> img = load_image("cat.jpg")  # doctest: +SKIP
        >>> img.shape, img.dtype  # doctest: +SKIP
        ((375, 500, 3), dtype('uint8'))
    """
    return np.array(open_image(path))  # writable, so overlays can draw on it


def save_image(path: str | Path, image: np.ndarray | Image.Image, quality: int = 95, software: str | None = None) -> Path:
    """Write an RGB image; the format follows the suffix (.jpg, .png, ...). Atomic.

    Args:
        software: recorded as EXIF Software where the format has EXIF (JPEG, PNG, WebP, TIFF).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImgclassError(f"{path}: unknown image type '{path.suffix}'; use .jpg, .png, .bmp or .webp")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if software:
        exif = Image.Exif()
        exif[EXIF_SOFTWARE] = software
        options["exif"] = exif.tobytes()
    try:
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **options))
    except OSError as e:  # the disk filled up, the folder went away, ...
        raise ImgclassError(f"{path}: writing failed ({e.strerror or e})") from None


def file_ids(paths: Iterable[str | Path]) -> set[tuple[int, int]]:
    """(device, inode) of each existing file: equal for every name of one file (``./a.jpg``, ``a.jpg``, a link)."""
    ids = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def is_annotated_copy(path: str | Path) -> bool:
    """Whether ``path`` is an image an imgclass sink wrote (EXIF Software "imgclass")."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(EXIF_SOFTWARE) == ANNOTATED_BY
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def check_replaceable(path: str | Path, inputs: set[tuple[int, int]], hint: str = "",
                      is_own: Callable[[str | Path], bool] | None = is_annotated_copy) -> None:
    """Refuse to write ``path`` over one of the ``inputs`` (``file_ids``) or over any existing file
    that ``is_own`` does not recognize as an annotated copy imgclass wrote (someone's photo or video).

    Args:
        is_own: whether an existing file carries imgclass's mark (``is_annotated_copy`` for images,
            ``media.sinks.is_annotated_video``); None: the caller checks what is there itself.

    Raises:
        ImgclassError: ``path`` must not be written; ``hint`` ends the message.
    """
    try:
        st = os.stat(path)
    except OSError:
        return  # nothing there yet (or out of reach: writing it will say why)
    if (st.st_dev, st.st_ino) in inputs:
        raise ImgclassError(f"{path}: OUTPUT is an input file, and imgclass never writes over its input; "
                            f"give another OUTPUT{hint}")
    if is_own is not None and not is_own(path):
        raise ImgclassError(f"{path}: OUTPUT already exists and is not an annotated copy imgclass wrote, so it is "
                            f"left alone; delete it or give another OUTPUT{hint}")


def unquoted_glob_hint(first_input: str | Path, output: str | Path) -> str:
    """The end of a refusal of ``output`` where the shell may have made it out of an unquoted glob
    (``classify photos/*.jpg`` runs as ``classify photos/a.jpg photos/b.jpg``): what to type
    instead; "" unless ``output`` is another file beside the first input file."""
    first = Path(first_input)
    try:
        beside = first.is_file() and Path(output).parent.resolve() == first.parent.resolve() \
            and not os.path.samefile(first, output)
    except OSError:  # OUTPUT is missing: no glob made it
        beside = False
    if not beside:
        return ""
    glob = first.parent / f"*{first.suffix}"
    if is_image_path(first):
        return f"; an unquoted glob? quote it so that all its files are INPUT: '{glob}'"
    return f'; an unquoted glob? classify takes one video per run: for f in {glob}; do imgclass classify "$f"; done'


def is_image_path(spec: str | Path) -> bool:
    return Path(spec).suffix.lower() in IMAGE_SUFFIXES


class ImageSink:
    """Write annotated images: one file, a pattern (``out_%i.jpg``, ``out_%04i.png``, ``out_*.jpg``,
    counter from 0) or a directory, where still images keep their names (``photos/cat.jpg`` ->
    ``annotated/cat.jpg``, see ``targets``) and frames are numbered (``0.jpg``, ``1.jpg``, ...).

    Every write is atomic and marks the file as imgclass's (EXIF Software), and a sink replaces no
    other file: not an input, not a photo that was there (``classify photos/*.jpg`` unquoted makes
    the shell pass the second photo as OUTPUT).

    Example:
        >>> sink = ImageSink("out_%03i.jpg")
        >>> sink.path(7).name
        'out_007.jpg'
    """

    def __init__(self, spec: str | Path, quality: int = 95):
        text = str(spec).replace("*", "%i")
        self.quality, self.count = quality, 0
        self.directory: Path | None = None
        if "%" in text:
            self.pattern = re.sub(r"%(0?\d*)i", r"%\1d", text)
            try:
                self.pattern % 0
            except (TypeError, ValueError):
                raise ImgclassError(f"{spec}: bad output pattern; use one counter like out_%i.jpg or out_%04i.png") from None
        elif Path(text).is_dir() or text.endswith(os.sep) or not Path(text).suffix:
            self.pattern = os.path.join(text, "%d.jpg")
            self.directory = Path(text)
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

    def targets(self, inputs: Sequence[Path]) -> list[Path]:
        """Where the annotated copy of each input image goes, checked before anything is written:
        into a directory, each keeps its path below the inputs' common folder (``cat.jpg``, or
        ``a/cat.jpg`` and ``b/cat.jpg`` for the glob ``'*/*.jpg'``).

        Raises:
            ImgclassError: one file for several inputs; a target that is an input, or a file that
                imgclass did not write.
        """
        if not inputs:
            return []
        if self.single_file and len(inputs) > 1:
            raise ImgclassError(f"{self.single}: one output file for {len(inputs)} input images; "
                                "give a directory or a pattern like out_%i.jpg")
        if self.directory is not None:
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in inputs])
            paths = [self.directory / os.path.relpath(os.path.abspath(p), root) for p in inputs]
        else:
            paths = [self.path(i) for i in range(len(inputs))]
        hint = unquoted_glob_hint(inputs[0], paths[0]) if self.single_file else ""
        ids = file_ids(inputs)
        for path in paths:
            check_replaceable(path, ids, hint)
        return paths

    def write(self, image: np.ndarray, path: Path | None = None) -> Path:
        """Write ``image`` to ``path`` (one of ``targets``) or, for frames, the next numbered name."""
        if path is None:
            path = self.path(self.count)
            check_replaceable(path, set())
        save_image(path, image, self.quality, software=ANNOTATED_BY)
        self.count += 1
        return path
