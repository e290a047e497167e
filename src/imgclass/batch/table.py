"""The results table: one row per image (path, top-k indices, labels, confidences, error), as Arrow in
memory and as a Parquet, CSV or JSON-lines file on disk (written atomically)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..classifier import Prediction
from ..errors import ImgclassError
from ..fileio import atomic_write, check_writable
from ..media.images import check_replaceable
from ..runtime.cache import file_sha256
from . import TABLE_SUFFIXES

SCHEMA = pa.schema([
    ("path", pa.string()),                    # the image as INPUT names it
    ("indices", pa.list_(pa.int32())),        # class indices, best first; null where error is set
    ("labels", pa.list_(pa.string())),
    ("confidences", pa.list_(pa.float32())),  # softmax, 0..1: the network's own float32 values
    ("error", pa.string()),                   # why the image was skipped; null when it was classified
])
# What marks a table as imgclass's own, so that it may be replaced. Parquet: a key of the file's key-value
# metadata, which travels with the file and which readers skip. CSV and JSON lines have no such place
# (a comment line breaks pyarrow's and pandas' default readers, an extra JSON line is a bogus row), and
# their header is no mark (a user's file may have the same columns): a hidden file beside the table
# holds the sha256 of the bytes imgclass wrote; a table edited or replaced since no longer matches.
META_KEY = b"imgclass"  # Parquet key-value metadata: what made the table
MARK_SUFFIX = ".imgclass"  # CSV / JSON lines: ``.results.csv.imgclass`` beside ``results.csv``
LIST_SEPARATOR = ";"    # CSV cells of lists: "950;951", "orange;lemon", "0.97;0.01"


def results_table(names: Sequence[str], results: Sequence[list[Prediction] | ImgclassError]) -> pa.Table:
    """Rows of ``SCHEMA``: each image's predictions, or its error with null lists."""
    def column(field: str) -> list:
        return [None if isinstance(r, ImgclassError) else [getattr(p, field) for p in r] for r in results]

    return pa.table({"path": list(names), "indices": column("index"), "labels": column("label"),
                     "confidences": column("confidence"),
                     "error": [str(r) if isinstance(r, ImgclassError) else None for r in results]}, schema=SCHEMA)


def write_results(path: Path, parts: Iterable[pa.Table], about: dict) -> None:
    """Write the rows of ``parts`` (in order) to ``path``, atomically, in the format its suffix names.

    Args:
        about: what made the table (network, top-k, threshold); kept in a Parquet file's metadata.
    """
    path = Path(path)
    write = WRITERS[path.suffix.lower()]
    atomic_write(path, lambda tmp: write(tmp, parts, about))
    if path.suffix.lower() != ".parquet":
        atomic_write(mark_path(path), lambda tmp: Path(tmp).write_text(file_sha256(path)))


def _write_parquet(path: str, parts: Iterable[pa.Table], about: dict) -> None:
    with pq.ParquetWriter(path, SCHEMA.with_metadata({META_KEY: json.dumps(about).encode()})) as writer:
        for part in parts:  # a row group per part: memory stays one part's worth
            writer.write_table(part)


def _write_csv(path: str, parts: Iterable[pa.Table], about: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(SCHEMA.names)
        for row in _rows(parts):
            out.writerow([row["path"]] + [LIST_SEPARATOR.join(map(str, row[c])) if row[c] is not None else ""
                                          for c in ("indices", "labels", "confidences")] + [row["error"] or ""])


def _write_jsonl(path: str, parts: Iterable[pa.Table], about: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in _rows(parts):
            if row["confidences"] is not None:
                row["confidences"] = [float(c) for c in row["confidences"]]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rows(parts: Iterable[pa.Table]) -> Iterable[dict]:
    """Rows as dicts; confidences as their shortest float32 text (0.97, not 0.9700000286102295), which
    reads back as the same float32."""
    for part in parts:
        for row in part.to_pylist():
            if row["confidences"] is not None:
                row["confidences"] = [str(np.float32(c)) for c in row["confidences"]]
            yield row


WRITERS: dict[str, Callable[[str, Iterable[pa.Table], dict], None]] = {
    ".parquet": _write_parquet, ".csv": _write_csv, ".jsonl": _write_jsonl}
assert set(WRITERS) == set(TABLE_SUFFIXES)


def mark_path(path: Path) -> Path:
    """The hidden file that marks a CSV or JSON-lines table as imgclass's (see MARK_SUFFIX)."""
    return path.with_name(f".{path.name}{MARK_SUFFIX}")


def is_results_table(path: Path) -> bool:
    """Whether ``path`` is a results table imgclass wrote, unchanged since: Parquet with its metadata
    key, CSV / JSON lines whose bytes are those its mark file records."""
    try:
        if path.suffix.lower() == ".parquet":
            return META_KEY in (pq.read_schema(path).metadata or {})
        with open(mark_path(path), encoding="utf-8") as f:
            mark = f.read(100)  # a digest: whatever else is there is no mark
        return mark == file_sha256(path)
    except (OSError, ValueError, pa.ArrowException):
        return False


def check_output(path: Path, inputs: set[tuple[int, int]]) -> None:
    """Refuse to write the table over an input file (``file_ids``), a folder, or a file that is not a
    results table imgclass wrote; or where it cannot be written (a read-only folder, /proc, a file
    used as a folder): before any image is classified, not when the first part is kept.

    Raises:
        ImgclassError: ``path`` must not be written.
    """
    check_replaceable(path, inputs, is_own=None)  # a table's own mark: is_results_table, below
    if path.is_dir():
        raise ImgclassError(f"{path}: is a folder; give OUTPUT a file name like results{path.suffix}")
    if path.exists() and not is_results_table(path):
        raise ImgclassError(f"{path}: OUTPUT already exists and is not a results table imgclass wrote, so it is "
                            "left alone; delete it or give another OUTPUT")
    check_writable(path)  # its parts (Shards) are written beside it
