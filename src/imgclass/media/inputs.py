"""What INPUT means, decided once by ``resolve_input`` for every verb and OUTPUT kind (image files,
video, streams, results tables, Ray), for ``--calibration`` and for the capture tool:

    a folder              its images, searched recursively in natural order, leaving out hidden files and
                          folders (imgclass's temporary files), the OUTPUT, and subfolders of annotated
                          copies imgclass wrote (their first image's EXIF mark tells); names keep their path
                          below the folder, so annotated copies keep the tree
    a quoted glob, a file the images it matches, or that image
    a ``.txt`` list       one path or URI a line (blank and ``#`` lines skipped), relative to the list
    a table               ``.parquet``, ``.csv`` or ``.jsonl``: its column of paths or URIs (pyarrow)
    anything else         a video file, camera or stream (``media.sources``)

A list or a table may itself be a URI (s3://, gs://, file://: whatever pyarrow.fs opens), and so may
its entries: ``local_files`` copies remote ones for the decoder. pyarrow is imported only for them.
"""
from __future__ import annotations

import glob as globlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit

from ..errors import ImgclassError, first_line
from .images import IMAGE_SUFFIXES, is_annotated_copy, is_glob, is_image_path, natural_key

LIST_SUFFIXES = {".txt"}
TABLE_INPUT_SUFFIXES = {".parquet", ".csv", ".jsonl"}


class ImageRef(NamedTuple):
    """One image of a job."""

    name: str    # as the input names it: the table's path column and error messages say this
    source: str  # where any process, on any node, reads it: an absolute local path or a URI


@dataclass(frozen=True)
class ImageList:
    """Still images, in order (``resolve_input``)."""

    refs: list[ImageRef]

    @property
    def paths(self) -> list[Path]:
        """The images as local files, for the verbs that decode here.

        Raises:
            ImgclassError: an entry is a remote URI, which only a results table reads.
        """
        remote = next((r.name for r in self.refs if is_uri(r.source) and not r.source.startswith("file:")), None)
        if remote is not None:
            raise ImgclassError(f"{remote}: a URI; only a results table (OUTPUT .parquet, .csv or .jsonl) reads "
                                "images from URIs")
        # as INPUT named it where that names the same file from here (a folder's, a glob's), else where it is
        return [Path(r.name) if os.path.abspath(r.name) == r.source else Path(r.source.removeprefix("file://"))
                for r in self.refs]


@dataclass(frozen=True)
class MediaInput:
    """A video file, camera or stream, read frame by frame (``media.sources.open_source``)."""

    uri: str


def resolve_input(spec: str | Path, output: str | Path | None = None, path_column: str = "path"
                  ) -> ImageList | MediaInput:
    """What INPUT names (see the module's docstring); ``output`` is left out of a folder's images.

    Example:
        >>> [p.name for p in resolve_input("examples/images").paths][:2]
        ['banana.jpg', 'black_bear.jpg']

    Raises:
        ImgclassError: a missing path, a folder or glob with no images, an unreadable list or table.
    """
    text = str(spec)
    kind = suffix(text)
    if kind in TABLE_INPUT_SUFFIXES:
        return ImageList(_listed(read_column(text, path_column), text))
    if kind in LIST_SUFFIXES:
        with open_input(text) as f:
            lines = [line.strip() for line in f.read().decode("utf-8-sig", "replace").splitlines()]
        return ImageList(_listed([n for n in lines if n and not n.startswith("#")], text))
    local = text.removeprefix("file://")
    if "://" in local or re.fullmatch(r"\d+", local) and not Path(local).exists() or local.startswith("/dev/"):
        return MediaInput(text)  # a stream or a camera
    path = Path(local).expanduser()
    if path.is_dir() or is_image_path(local) or (is_glob(local) and not path.exists()):
        return ImageList([ImageRef(name, os.path.abspath(name)) for name in _image_names(local, output)])
    if not path.exists():
        raise ImgclassError(f"{text}: no such file or directory; check the path")
    return MediaInput(text)


def _listed(names: list[str], listing: str) -> list[ImageRef]:
    if not names:
        raise ImgclassError(f"{listing}: lists no images")
    return [ImageRef(name, beside(name, listing)) for name in names]


def list_images(spec: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """The images of a folder (searched recursively, natural order; hidden files and folders and
    ``exclude`` left out), of a glob, or an image file.

    Example:
        >>> [p.name for p in list_images("examples/images/o*.jpg")]
        ['orange.jpg']

    Raises:
        ImgclassError: nothing there, or no image in it.
    """
    return [Path(name) for name in _image_names(str(spec), exclude)]


def _image_names(text: str, exclude: str | Path | None = None) -> list[str]:
    """``list_images`` as path strings: a folder of tens of thousands of images is listed in strings,
    sorted in strings, and made into paths once (Path objects cost microseconds each)."""
    path = Path(text).expanduser()
    if path.is_dir():
        skip = os.path.realpath(Path(exclude).expanduser()) if exclude is not None else None
        files = sorted(_walk(str(path), skip), key=natural_key)
        if not files:
            raise ImgclassError(f"{text}: directory holds no images in it or below it "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if path.exists():
        return [str(path)]
    if is_glob(text):
        files = sorted((str(Path(p)) for p in globlib.glob(os.path.expanduser(text)) if Path(p).is_file()),
                       key=natural_key)
        if not files:
            raise ImgclassError(f"{text}: no file matches this pattern; check it, and quote it so the shell leaves it alone")
        return files
    raise ImgclassError(f"{text}: no such file or directory; check the path")


def _walk(top: str, skip: str | None) -> Iterator[str]:
    for root, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and (skip is None or os.path.realpath(os.path.join(root, d)) != skip)]
        images = sorted(os.path.join(root, name) for name in files if not name.startswith(".")
                        and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
                        and (skip is None or os.path.realpath(os.path.join(root, name)) != skip))
        # A subfolder of annotated copies imgclass wrote (an earlier OUTPUT): its first image tells, one read a folder
        if root != top and images and is_annotated_copy(images[0]):
            dirs[:] = []
            continue
        yield from images


def is_uri(text: str) -> bool:
    """``s3://bucket/a.jpg``, ``file:///data/a.jpg``: a scheme, then ``://``."""
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


def suffix(spec: str) -> str:
    """The file suffix of a path or URI, lower case: ``s3://b/list.TXT?v=2`` -> ``.txt``."""
    return PurePosixPath(urlsplit(spec).path if is_uri(spec) else spec).suffix.lower()


def beside(name: str, listing: str) -> str:
    """Where an entry of a list or table file points: a URI or absolute path as it is, a relative path
    from the listing's folder (as an absolute path, or a URI when the listing is one)."""
    if is_uri(name) or os.path.isabs(name):
        return name
    if is_uri(listing):
        return f"{listing.rsplit('/', 1)[0]}/{name}"
    return os.path.join(os.path.dirname(os.path.abspath(listing)), name)


def filesystem(uri: str):
    """The pyarrow filesystem of a URI and the path within it (``s3://bucket/a.jpg`` -> S3, ``bucket/a.jpg``).

    Raises:
        pyarrow.ArrowException, OSError: an unknown scheme, or a filesystem that cannot be reached.
    """
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


@contextmanager
def open_input(spec: str) -> Iterator[BinaryIO]:
    """A list or table file, local or on any filesystem pyarrow.fs knows, opened for reading."""
    try:
        if is_uri(spec):
            fs, path = filesystem(spec)
            f = fs.open_input_file(path)
        else:
            f = open(spec, "rb")
    except FileNotFoundError:
        raise ImgclassError(f"{spec}: no such file; check the path") from None
    except IsADirectoryError:
        raise ImgclassError(f"{spec}: is a folder; give the list or table file") from None
    except Exception as e:  # OSError, or pyarrow's ArrowException for a filesystem it cannot reach
        raise ImgclassError(f"{spec}: cannot open ({first_line(e)})") from None
    with f:
        yield f


def read_column(spec: str, column: str) -> list[str]:
    """The ``column`` of a Parquet, CSV or JSON-lines table, as text.

    Raises:
        ImgclassError: an unreadable table, no such column, a column that is not text, or empty cells.
    """
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet as pq

    kind = suffix(spec)
    with open_input(spec) as f:
        try:
            if kind == ".parquet":
                names = pq.ParquetFile(f).schema_arrow.names
                table = pq.read_table(f, columns=[column]) if column in names else None
            elif kind == ".csv":
                table = pyarrow.csv.read_csv(f, convert_options=pyarrow.csv.ConvertOptions(
                    column_types={column: pa.string()}))
            else:
                table = pyarrow.json.read_json(f)
        except pa.ArrowException as e:
            raise ImgclassError(f"{spec}: not a readable {kind[1:]} table ({first_line(e)})") from None
    if table is not None:
        names = table.column_names
    if column not in names:
        raise ImgclassError(f"{spec}: no column '{column}' (it has: {', '.join(names)}); "
                            "name the column of image paths with --path-column")
    values = table.column(column)
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        raise ImgclassError(f"{spec}: column '{column}' holds {values.type}, not image paths; "
                            "name the column of image paths with --path-column")
    values = values.to_pylist()
    empty = [i for i, v in enumerate(values) if not v]
    if empty:
        raise ImgclassError(f"{spec}: {len(empty)} empty cell(s) in column '{column}' (the first in row {empty[0]}); "
                            "fill or drop those rows")
    return values


@contextmanager
def local_files(sources: Sequence[str]) -> Iterator[list[Path | ImgclassError]]:
    """A local file to decode for each of ``sources``, or why it cannot be read: a path or ``file://``
    URI is itself; a remote object is copied (in threads) into a temporary folder that lives as long
    as the block."""
    remote = any(is_uri(s) and not s.lower().startswith("file:") for s in sources)
    with tempfile.TemporaryDirectory(prefix="imgclass-") if remote else nullcontext() as folder:
        if not remote:
            yield [local_file(s, i, folder) for i, s in enumerate(sources)]
            return
        with ThreadPoolExecutor(8) as pool:  # object stores answer slowly and in parallel
            yield list(pool.map(local_file, sources, range(len(sources)), [folder] * len(sources)))


def local_file(source: str, index: int, folder: str | None) -> Path | ImgclassError:
    """``source`` as a local file: a path as it is; a URI through pyarrow.fs (copied into ``folder``,
    named by ``index``, unless its filesystem is the local one)."""
    if not is_uri(source):
        return Path(source)
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, path = filesystem(source)
        if isinstance(fs, pafs.LocalFileSystem):
            return Path(path)
        target = Path(folder) / f"{index}{PurePosixPath(path).suffix}"
        with fs.open_input_stream(path) as stream:
            target.write_bytes(stream.read())
        return target
    except FileNotFoundError:
        return ImgclassError(f"{source}: file not found; check the path")
    except (OSError, pa.ArrowException) as e:
        return ImgclassError(f"{source}: cannot read ({first_line(e)})")
