"""Batch classification into a results table on Ray Data against the same job in this process, in the
same run: N images (a folder's JPEGs repeated through a list file), img/s of each (the median of
--repeats runs, alternated, each the whole ``classify_table`` call: listing, model load, the actors'
start, merge), the tables compared, then the same job on a 2-node Ray cluster on this machine (head +
one worker, the CPUs split between them), whose table must be the same too.

Ray's own start is timed apart (a cluster is started once and serves many jobs; the local Ray idles
beside the runs in this process, at about 1% of a core), and shown once added to the first job.

    python benchmarks/ray_batch.py [--images 1000] [--folder GLOB] [--repeats 3] [--threads T --ray-actors N]
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster

import imgclass
from imgclass.batch import classify_table
from imgclass.media.inputs import list_images

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed_run(images: Path, out: Path, classifier: dict, **options) -> tuple[float, str]:
    """(img/s of one whole classify_table call, where it ran); ``out`` holds its table."""
    start = time.perf_counter()
    summary = classify_table(str(images), out, classifier, **options)
    return summary.images / (time.perf_counter() - start), summary.where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--folder", default=str(DATA / "hymenoptera" / "val" / "*" / "*.jpg"), help="image folder or glob")
    ap.add_argument("--images", type=int, default=1000, help="images per job (the folder's files repeated)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (per actor on Ray)")
    ap.add_argument("--ray-actors", type=int, default=None, help="default: the cluster's CPUs / threads per actor")
    ap.add_argument("--skip-cluster", action="store_true", help="leave out the 2-node cluster run")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    classifier = {"threads": args.threads}
    options = {"topk": 5, "shard_size": 256}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images.txt"
        files = list(itertools.islice(itertools.cycle(list_images(args.folder)), args.images))
        images.write_text("".join(f"{p.resolve()}\n" for p in files))
        imgclass.Classifier()  # the engine is built and cached before anything is timed

        start = time.perf_counter()
        ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        ray_start = time.perf_counter() - start
        local, on_ray = [], []
        for _ in range(args.repeats):  # alternated, so that the machine's drift hits both alike
            local.append(timed_run(images, tmp / "local.parquet", classifier, **options)[0])
            on_ray.append(timed_run(images, tmp / "ray.parquet", classifier, ray="local", ray_actors=args.ray_actors,
                                    **options))
        ray.shutdown()
        same = pq.read_table(tmp / "ray.parquet").equals(pq.read_table(tmp / "local.parquet"))

        if not args.skip_cluster:
            node = {"num_cpus": max(1, cpus // 2), "object_store_memory": 200 * 2**20}
            cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
            try:
                cluster.add_node(**{**node, "num_cpus": max(1, cpus - cpus // 2)})
                ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
                two_nodes = timed_run(images, tmp / "cluster.parquet", classifier, ray=cluster.address,
                                      ray_actors=args.ray_actors, **options)
                ray.shutdown()
            finally:
                cluster.shutdown()
            same_cluster = pq.read_table(tmp / "cluster.parquet").equals(pq.read_table(tmp / "local.parquet"))

    ray_rates = [rate for rate, _ in on_ray]
    print(f"{args.images} images ({len(set(files))} distinct JPEGs from {args.folder}), efficientnet-lite0 top-5, "
          f"{cpus} CPUs, {args.repeats} runs each")
    print(f"in this process (classify_files):  {statistics.median(local):7.1f} img/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in local)})")
    print(f"Ray Data, {on_ray[0][1][len('on Ray: '):]}:  {statistics.median(ray_rates):7.1f} img/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in ray_rates)}); Ray's own start {ray_start:.1f} s, apart")
    print(f"Ray / this process:                {statistics.median(ray_rates) / statistics.median(local):7.0%}  "
          "(target >= 75%)")
    print(f"a first job with Ray's start (as `imgclass classify ... --ray` alone): "
          f"{args.images / (args.images / ray_rates[0] + ray_start):.1f} img/s")
    print(f"tables identical (Ray vs this process): {same}")
    if not args.skip_cluster:
        print(f"2-node cluster on this machine, {two_nodes[1][len('on Ray: '):]}: {two_nodes[0]:.1f} img/s; "
              f"table identical: {same_cluster}")


if __name__ == "__main__":
    main()
