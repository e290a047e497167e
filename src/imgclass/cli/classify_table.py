"""``imgclass classify INPUT results.parquet|.csv|.jsonl [--ray [ADDRESS]]``: the flags of a results-table
run and its report; the work is ``imgclass.batch.classify_table``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from . import sigterm_stops_like_ctrl_c
from ..batch import TABLE_SUFFIXES, is_table_output
from ..config import ClassifierConfig
from ..errors import ImgclassError

SHOWN_ERRORS = 20  # the rest are in the table's error column

__all__ = ["add_table_arguments", "is_table_output", "run_table"]


def add_table_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("results table (OUTPUT ending in .parquet, .csv or .jsonl)")
    g.add_argument("--ray", nargs="?", const="here", default=None, metavar="ADDRESS",
                   help="classify on Ray Data: alone, on the Ray cluster `ray start` began on this machine if one "
                        "answers, else on a Ray started for this run (local: always one of its own); or on the "
                        "cluster at ADDRESS (HOST:6379, ray://HOST:10001, auto: the one `ray start` began here, or "
                        "an error). Give it after INPUT and OUTPUT. Every node must reach the images by the same "
                        "path or URI")
    g.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="Ray actors, one classifier each, with --threads threads each (default: one actor of 1 "
                        "thread per CPU of the cluster; or one per GPU with --device cuda)")
    g.add_argument("--path-column", default="path", metavar="NAME",
                   help="the column of image paths or URIs when INPUT is a .parquet, .csv or .jsonl table")
    g.add_argument("--shard-size", type=int, default=512, metavar="N",
                   help="images per part kept beside OUTPUT as it is done: the same command after an interruption "
                        "does only the parts not done")


def run_table(args, classifier: ClassifierConfig) -> int:
    """Classify into the results table ``args.output``; print the skipped images and a summary."""
    if not is_table_output(args.output):
        raise ImgclassError(f"--ray writes a results table: give an OUTPUT ending in {', '.join(TABLE_SUFFIXES)}")
    try:
        from ..batch import classify_table
    except ImportError as e:
        raise ImgclassError(f"results tables need {e.name}: pip install 'imgclass[ray]'") from None
    # SIGTERM (a scheduler stopping the job) ends it as Ctrl-C does: with the hint below.
    with sigterm_stops_like_ctrl_c(), tqdm(unit="img", file=sys.stderr, leave=False, disable=None) as bar:
        try:
            summary = classify_table(args.input, args.output, classifier, topk=args.topk, threshold=args.threshold,
                                     batch_size=args.batch_size, path_column=args.path_column,
                                     shard_size=args.shard_size, ray=args.ray, ray_actors=args.ray_actors,
                                     on_progress=bar.update)
        except KeyboardInterrupt:
            bar.close()
            if Path(f"{args.output}.parts").is_dir():
                print(f"imgclass: the parts done are kept in {args.output}.parts; the same command continues",
                      file=sys.stderr)
            raise
    for error in summary.errors[:SHOWN_ERRORS]:
        print(f"imgclass: skipped: {error}", file=sys.stderr)
    more = len(summary.errors) - SHOWN_ERRORS
    if more > 0:
        print(f"imgclass: {more} more skipped (the error column says why)", file=sys.stderr)
    done = summary.images - summary.resumed
    print(f"imgclass: {summary.images - len(summary.errors)} of {summary.images} images classified with "
          f"{summary.network} {summary.where}"
          + (f", {done} in {summary.seconds:.1f} s ({done / summary.seconds:.1f} img/s)" if done else "")
          + (f"; {summary.resumed} were done by the stopped run" if summary.resumed else "")
          + (f"; {len(summary.errors)} skipped" if summary.errors else "")
          + f"; table in {summary.output}", file=sys.stderr)
    return 1 if summary.errors else 0
