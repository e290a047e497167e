"""The one route from image references to results rows, for a local run and every Ray actor alike."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa

from ..classifier import Classifier
from ..errors import ImgclassError
from ..media.inputs import ImageRef, local_files
from .table import results_table


def classify_rows(net: Classifier, refs: Sequence[ImageRef], topk: int = 1, threshold: float = 0.0,
                  batch_size: int = 8, workers: int | None = None) -> pa.Table:
    """Classify ``refs`` with ``net.classify_files`` (``workers`` decoding threads) into results rows: the
    one route of both the local and the Ray run (decoded here or in the actor), so both give the same table.

    Messages name each image as INPUT does, not by the absolute path or local copy that was read.
    """
    with local_files([r.source for r in refs]) as files:
        readable = [f for f in files if isinstance(f, Path)]
        found = iter(net.classify_files(readable, topk, threshold, batch_size, workers=workers))
        results = [f if isinstance(f, ImgclassError) else next(found)[1] for f in files]
    results = [ImgclassError(str(r).replace(str(f), ref.name)) if isinstance(r, ImgclassError) and
               isinstance(f, Path) else r for r, f, ref in zip(results, files, refs)]
    return results_table([r.name for r in refs], results)
