"""``classify_table``: classify a list of images into a results table, in this process or on Ray Data."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa

from ..classifier import Classifier
from ..config import ClassifierConfig
from ..errors import ImgclassError
from ..runtime.base import Job
from ..media.images import file_ids
from . import TABLE_SUFFIXES
from ..media.inputs import ImageList, ImageRef, is_uri, resolve_input
from .rows import classify_rows
from .shards import Shards
from .table import check_output, write_results

DEFAULT_SHARD_SIZE = 512  # images per part: what an interruption can cost, and one manifest write each


@dataclass
class TableSummary:
    """What a ``classify_table`` run did."""

    output: Path
    images: int                # rows of the table
    resumed: int               # of them, classified by an earlier run that was stopped
    seconds: float             # this run's classifying (resumed parts took none)
    network: str
    where: str                 # "in this process", "on Ray: 2 actors on 2 nodes"
    errors: list[str] = field(default_factory=list)  # the error column's messages, in order


def classify_table(input: str, output: str | Path, classifier: ClassifierConfig | dict | None = None, *, topk: int = 1,
                   threshold: float = 0.0, batch_size: int = 8, path_column: str = "path",
                   shard_size: int = DEFAULT_SHARD_SIZE, ray: str | None = None, ray_actors: int | None = None,
                   on_progress: Callable[[int], None] | None = None) -> TableSummary:
    """Classify every image INPUT names into a table at ``output`` (.parquet, .csv or .jsonl): one row per
    image, in INPUT's order; an image that cannot be read gets a row with its error, and the rest go on.

    The rows are kept in parts beside ``output`` (``Shards``) as they finish, and merged into ``output``
    (atomically) at the end: the same call after an interruption classifies only what is missing.

    Args:
        input: folder, glob, image, ``.txt`` list, or a ``.parquet`` / ``.csv`` / ``.jsonl`` table whose
            ``path_column`` holds paths or URIs (see ``media.inputs.resolve_input``).
        classifier: the Classifier's settings (a ``ClassifierConfig``, or its fields as a dict); each Ray
            actor builds its own Classifier from them.
        ray: None: classify here with ``Classifier.classify_files``. Else on Ray Data: "local" starts a
            Ray on this machine; an address (``host:6379``, ``ray://host:10001``, ``auto``) joins a cluster;
            "here" joins the one ``ray start`` began on this machine, else starts one (``--ray`` alone);
            a caller that has already called ``ray.init`` keeps its connection.
        ray_actors: Ray actors, one Classifier each (default: see ``raydata.actor_plan``).
        on_progress: called with the number of images of each part as it finishes.

    Raises:
        ImgclassError: a bad INPUT, OUTPUT or model (before any work), or a Ray cluster out of reach.
    """
    output = Path(output)
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise ImgclassError(f"{output}: a results table ends in {', '.join(TABLE_SUFFIXES)}")
    if shard_size < 1:
        raise ImgclassError(f"shard size {shard_size}: give 1 or more images")
    found = resolve_input(input, output, path_column)
    if not isinstance(found, ImageList):
        raise ImgclassError(f"{input}: a results table classifies image files; give a folder, glob, list or table "
                            "of images (a video goes to `imgclass classify VIDEO`)")
    refs = found.refs
    check_output(output, set() if is_uri(input) else file_ids([input]))
    classifier = classifier if isinstance(classifier, ClassifierConfig) else ClassifierConfig(**(classifier or {}))
    session = None
    if ray is not None:
        from .raydata import RayJob, RaySession
        session = RaySession(ray)  # Ray starts while the model loads
    try:
        # On Ray, built here on the CPU too: a bad model fails before any image is classified, in one line
        # (once Ray's start, already under way, is over), and the engine cache is warm for the actors.
        net = Classifier(**(replace(classifier, device="cpu") if ray is not None else classifier).options(),
                         job=Job(images=len(refs)))
        about = {"network": net.network_name, "topk": topk, "threshold": threshold}
        shards = Shards(output, fingerprint(refs, classifier, about), len(refs))
        resumed, todo, start = shards.finished, shards.pending(shard_size), time.perf_counter()
        if session is None:
            parts = ((span, classify_rows(net, refs[slice(*span)], topk, threshold, batch_size)) for span in todo)
        else:
            del net  # the actors have their own
            job = RayJob(session, classifier, topk=topk, threshold=threshold, batch_size=batch_size, actors=ray_actors)
            parts = job.parts(refs, todo)
        for span, table in parts:
            shards.save(span, table)
            if on_progress is not None:
                on_progress(span[1] - span[0])
    finally:
        if session is not None:
            session.close()
    where = "in this process" if ray is None else job.describe()
    seconds = time.perf_counter() - start
    errors: list[str] = []
    write_results(output, _noting_errors(shards.tables(), errors), about)
    shards.clear()
    return TableSummary(output, len(refs), resumed, seconds, about["network"], where, errors)


def fingerprint(refs: Sequence[ImageRef], classifier: ClassifierConfig, about: dict) -> str:
    """What makes two runs' rows interchangeable: the image list and every setting that changes a result,
    the model, labels and weights files' size and time included (a retrained model.onnx is another)."""
    def stat(path) -> list | None:
        try:
            st = os.stat(path)
        except (OSError, TypeError, ValueError):
            return None
        return [st.st_size, st.st_mtime_ns]

    job = {"sources": [r.source for r in refs], "about": about,
           "classifier": {k: str(v) for k, v in sorted(classifier.options().items()) if k != "threads" and v is not None},
           "files": {k: stat(getattr(classifier, k)) for k in ("model", "labels", "weights") if getattr(classifier, k)}}
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def _noting_errors(tables: Iterator[pa.Table], errors: list[str]) -> Iterator[pa.Table]:
    """``tables`` as they are, each one's error messages appended to ``errors`` on the way."""
    for table in tables:
        errors += [e for e in table.column("error").to_pylist() if e is not None]
        yield table
