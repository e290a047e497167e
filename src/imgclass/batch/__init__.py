"""Batch classification into a results table, in this process or on Ray Data.

``imgclass classify INPUT results.parquet`` (or .csv, .jsonl) and ``classify_table`` write one row per
image: path, top-k indices, labels, confidences, and the error of an image that could not be read.

    inputs.py   what INPUT names (folder, glob, list file, a table's column; pyarrow.fs for URIs)
    table.py    the table's columns, and writing it as Parquet / CSV / JSON lines
    shards.py   finished parts kept beside OUTPUT, so a re-run continues where a stopped run was
    job.py      ``classify_table``: list, classify part by part (here or on Ray), merge
    raydata.py  the Ray Data runner: ``map_batches`` on a pool of actors, one Classifier each

Needs pyarrow (and Ray for ``ray=``): ``pip install 'imgclass[ray]'``. This module itself imports
neither, so the CLI can ask ``is_table_output`` on any install.

Example:
    >>> from imgclass.batch import classify_table
    >>> classify_table("photos/", "results.parquet", {"network": "resnet-18"}, topk=5, ray="local")  # doctest: +SKIP
    TableSummary(output=PosixPath('results.parquet'), images=1000, resumed=0, ...)
"""
from __future__ import annotations

from pathlib import Path

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl")
RAY_WORDS = ("here", "local", "auto")  # ``ray=`` values that name no address (``raydata.ray_session``)

__all__ = ["RAY_WORDS", "TABLE_SUFFIXES", "TableSummary", "classify_table", "is_table_output"]


def is_table_output(output: str | None) -> bool:
    """Whether OUTPUT names a results table rather than images or video."""
    return output is not None and "://" not in output and Path(output).suffix.lower() in TABLE_SUFFIXES


def __getattr__(name: str):
    # classify_table and TableSummary import pyarrow: only when asked for.
    if name in ("classify_table", "TableSummary"):
        from . import job
        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
