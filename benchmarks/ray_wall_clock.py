"""`imgclass classify FOLDER out.parquet` against the same command with `--ray` (a Ray started on this
machine for the run), as a user times them: fresh processes, start to exit, the engine cache warm as
after one earlier run, the two alternated, for each job size. Prints the medians, what `--ray` adds
(the fixed overhead: the difference of the walls), and the throughput after start-up (the images
between two job sizes over the difference of their walls, in which the fixed costs cancel out); each
table made on Ray must equal the local one, and its summary must say it ran on Ray. Ray's own floor is
timed beside them: a fresh process that starts a local Ray, runs a Ray Data job of the same shape on it
(an actor per CPU, each doing nothing to 400 rows) and shuts it down.

With --cluster, a head started first by `ray start --head` (as a user who keeps a cluster up) takes the
jobs: `--ray` alone joins it, and the floor is joining it and running the same empty job.

    python benchmarks/ray_wall_clock.py --images ../shared/data/flowers12 --sizes 400 4000
    python benchmarks/ray_wall_clock.py --images ../shared/data/flowers12 --sizes 400 4000 --cluster

Job folders hold copies of the photos under --images, repeated to each size, in a temporary folder.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from imgclass.media.inputs import list_images


RAY_FLOOR = r"""
import logging, sys, ray, ray.data
local = {"address": "local", "include_dashboard": False} if sys.argv[1] == "local" else {}  # else as ray.init() finds
ray.init(logging_level=logging.ERROR, log_to_driver=False, **local)
ray.data.DataContext.get_current().enable_progress_bars = False
class Nothing:
    def __call__(self, batch):
        return batch
cpus = int(ray.cluster_resources()["CPU"])
rows = ray.data.from_items([{"row": i} for i in range(400)], override_num_blocks=2 * cpus).map_batches(
    Nothing, batch_size=None, compute=ray.data.ActorPoolStrategy(size=cpus), num_cpus=1)
assert sum(len(b["row"]) for b in rows.iter_batches(batch_size=None)) == 400
ray.shutdown()
"""


def job_folder(root: Path, photos: list[Path], size: int) -> Path:
    """A folder of ``size`` copies of ``photos`` (repeated)."""
    folder = root / f"{size}"
    folder.mkdir(parents=True)
    for i, photo in zip(range(size), itertools.cycle(photos)):
        shutil.copyfile(photo, folder / f"{i:06d}{photo.suffix.lower()}")
    return folder


def run(command: list[str]) -> tuple[float, str]:
    """(wall seconds of a fresh process, start to exit; its summary line). A failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    summary = [line for line in done.stderr.splitlines() if " images classified with " in line]
    return seconds, summary[-1] if summary else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="a folder of photos (searched recursively), copied to each size")
    ap.add_argument("--sizes", type=int, nargs=2, default=[400, 4000], help="images per job: a small and a large one")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each command, alternated; the median is shown")
    ap.add_argument("--cluster", action="store_true", help="time --ray against a head that `ray start --head` began "
                    "first (default: each --ray run starts a Ray of its own)")
    args = ap.parse_args()
    with ray_head() if args.cluster else contextlib.nullcontext():
        measure(args)


@contextlib.contextmanager
def ray_head():
    """`ray start --head` on this machine, in a temporary RAY_TMPDIR that the commands inherit (so they
    find this head, and no other cluster here is touched); its processes are killed at the end."""
    with tempfile.TemporaryDirectory(prefix="rh", dir="/tmp") as temp:  # Ray's socket paths must stay short
        os.environ["RAY_TMPDIR"] = temp
        ray = Path(sys.executable).with_name("ray")
        head = subprocess.Popen([ray, "start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard",
                                 "false", "--disable-usage-stats", "--block"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            for line in head.stdout:
                if "Ray runtime started" in line:
                    break
            else:
                sys.exit("ray start --head failed")
            yield
        finally:
            head.terminate()  # `ray start --block` ends the processes it started
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()


def measure(args) -> None:
    photos = list_images(args.images)
    classify = [sys.executable, "-m", "imgclass", "classify"]
    walls: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ray-wall-clock-") as tmp:
        for size in args.sizes:
            folder = job_folder(Path(tmp), photos, size)
            tables = {mode: Path(tmp) / f"{size}-{mode}.parquet" for mode in ("local", "ray")}
            commands = {"local": [*classify, str(folder), str(tables["local"])],
                        "ray": [*classify, str(folder), str(tables["ray"]), "--ray"]}
            run(commands["local"])  # the engine cache warm, the files read once, as after one earlier run
            for _ in range(args.repeats):
                for mode, command in commands.items():
                    seconds, summary = run(command)
                    walls.setdefault((size, mode), []).append(seconds)
                    if mode == "ray" and " on Ray" not in summary:
                        sys.exit(f"the --ray run's summary does not say it ran on Ray: {summary!r}")
                walls.setdefault((0, "floor"), []).append(run([sys.executable, "-c", RAY_FLOOR, "here" if args.cluster else "local"])[0])
                print(f"{size} images: local {walls[size, 'local'][-1]:.2f} s, --ray {walls[size, 'ray'][-1]:.2f} s, "
                      f"Ray's floor {walls[0, 'floor'][-1]:.2f} s", file=sys.stderr, flush=True)
            if not pq.read_table(tables["ray"]).equals(pq.read_table(tables["local"])):
                sys.exit(f"{size} images: the table made on Ray differs from the local one")
    wall = {key: statistics.median(values) for key, values in walls.items()}
    small, large = args.sizes
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.repeats} runs of each, alternated; medians; "
          f"tables on Ray identical to local")
    print(f"{'images':>7} | {'local':>8} | {'--ray':>8} | {'--ray adds':>10}")
    for size in args.sizes:
        print(f"{size:>7} | {wall[size, 'local']:>7.2f}s | {wall[size, 'ray']:>7.2f}s | "
              f"{wall[size, 'ray'] - wall[size, 'local']:>9.2f}s")
    rate = {mode: (large - small) / (wall[large, mode] - wall[small, mode]) for mode in ("local", "ray")}
    print(f"after start-up ({small} -> {large} images): local {rate['local']:.1f} img/s, --ray {rate['ray']:.1f} img/s "
          f"({rate['ray'] / rate['local']:.0%} of local)")
    how = "join the cluster" if args.cluster else "start a local Ray"
    print(f"Ray's own floor ({how}, a Ray Data job of an actor per CPU doing nothing, shut down): "
          f"{wall[0, 'floor']:.2f} s")


if __name__ == "__main__":
    main()
