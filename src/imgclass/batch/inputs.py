"""What a table job classifies: the images a folder, a glob, a list file or a table column names; and a
local file to decode for each, copied from its filesystem (pyarrow.fs) when it is a remote URI."""
from __future__ import annotations

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import ImgclassError, first_line
from ..media.images import list_images

LIST_SUFFIXES = {".txt"}
TABLE_INPUT_SUFFIXES = {".parquet", ".csv", ".jsonl"}


class ImageRef(NamedTuple):
    """One image of a job."""

    name: str    # as the input names it: the table's path column and error messages say this
    source: str  # where any process, on any node, reads it: an absolute local path or a URI


def is_uri(text: str) -> bool:
    """``s3://bucket/a.jpg``, ``file:///data/a.jpg``: a scheme, then ``://``."""
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


def read_inputs(spec: str, path_column: str = "path") -> list[ImageRef]:
    """The images of INPUT, in order: a folder (natural order), a glob or an image file (as ``imgclass
    classify`` lists them); a ``.txt`` list (one path or URI a line; blank and ``#`` lines skipped); or a
    column of paths/URIs of a ``.parquet``, ``.csv`` or ``.jsonl`` table. A list or table may itself be a
    URI (s3://, gs://, file://: whatever pyarrow.fs opens); relative paths in it are relative to its folder.

    Raises:
        ImgclassError: INPUT is missing or unreadable, lists nothing, or has no such column.
    """
    if suffix(spec) in TABLE_INPUT_SUFFIXES:
        names = read_column(spec, path_column)
    elif suffix(spec) in LIST_SUFFIXES:
        with open_input(spec) as f:
            names = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
    else:
        return [ImageRef(str(p), os.path.abspath(p)) for p in list_images(spec)]
    if not names:
        raise ImgclassError(f"{spec}: lists no images")
    return [ImageRef(name, beside(name, spec)) for name in names]


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


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a URI and the path within it (``s3://bucket/a.jpg`` -> S3, ``bucket/a.jpg``).

    Raises:
        pyarrow.ArrowException, OSError: an unknown scheme, or a filesystem that cannot be reached.
    """
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
    except (OSError, pa.ArrowException) as e:
        raise ImgclassError(f"{spec}: cannot open ({first_line(e)})") from None
    with f:
        yield f


def read_column(spec: str, column: str) -> list[str]:
    """The ``column`` of a Parquet, CSV or JSON-lines table, as text.

    Raises:
        ImgclassError: an unreadable table, no such column, a column that is not text, or empty cells.
    """
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
