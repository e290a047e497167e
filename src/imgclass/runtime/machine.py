"""What this machine's devices cost a job: the seconds before the first image (imports, engine build,
CUDA start) and the images per second after, per device. ``runtime.select.resolve_device`` picks the
device whose estimated wall time for the job is the shorter. The figures start from measured defaults
(BENCHMARKS.md) and become this machine's own: every folder job of ``RECORD_FROM`` images or more
records what its device did, in the cache (``machine.json``), keyed by the machine.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fileio import atomic_write
from .cache import cache_dir, entries_built

RECORD_FROM = 200  # images: a smaller job's rate is mostly its start
FORMAT = 1


@dataclass(frozen=True)
class DeviceCost:
    """One device's cost model: ``start_s + images / images_per_s`` seconds for a job."""

    start_s: float
    images_per_s: float

    def seconds(self, images: int) -> float:
        return self.start_s + images / self.images_per_s


@dataclass(frozen=True)
class MachineCosts:
    """The CPU's and the GPU's cost models on one machine.

    Example:
        >>> costs = MachineCosts(DeviceCost(0.7, 640), DeviceCost(20.0, 8000))
        >>> costs.faster(500), costs.faster(57_600)
        ('cpu', 'cuda')
    """

    cpu: DeviceCost
    cuda: DeviceCost

    def faster(self, images: int) -> str:
        return "cuda" if self.cuda.seconds(images) < self.cpu.seconds(images) else "cpu"


def default_costs(cores: int | None = None) -> MachineCosts:
    """Before this machine has measured itself: the CPU path's whole-command figures scale with the
    cores (a cold `imgclass classify` of 5,760 JPEGs took 8.3 s on 16 cores; 140 img/s on 2), and a
    cold CUDA command of 5,760 JPEGs took 6.4 s and of 57,600 13.5 s on the H100 machine: about 5.7 s
    to its first image, then 7,400 img/s (BENCHMARKS.md). A device that "auto" never picks never
    measures itself here, so these are the figures of today's code, not cautious ones."""
    cores = cores or os.cpu_count() or 1
    return MachineCosts(DeviceCost(0.7, 45.0 * cores), DeviceCost(5.7, 7400.0))


def machine_key() -> str:
    """Which machine the figures belong to: its cores and, where the NVIDIA driver says, its GPUs."""
    gpus = sorted(Path(p).read_text(errors="replace").split("\n", 1)[0]
                  for p in glob.glob("/proc/driver/nvidia/gpus/*/information"))
    return json.dumps({"cores": os.cpu_count(), "gpus": gpus, "format": FORMAT})


def _path() -> Path:
    return cache_dir() / "machine.json"


def machine_costs() -> MachineCosts:
    """This machine's figures: those its jobs recorded, else the defaults (a damaged file counts as none)."""
    costs = default_costs()
    try:
        saved = json.loads(_path().read_text()).get(machine_key(), {})
        return MachineCosts(**{d: DeviceCost(**saved.get(d, asdict(getattr(costs, d)))) for d in ("cpu", "cuda")})
    except (OSError, ValueError, TypeError, AttributeError):
        return costs


def seconds_since_start() -> float:
    """How long this process has run (Linux's /proc; 0 elsewhere): a job's start as the user feels it."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def record_job(device: str, images: int, start_s: float, images_per_s: float) -> None:
    """Keep what a finished folder job measured on ``device`` (``start_s``: process start to its first
    image), so that the next "auto" on this machine weighs real figures. Never fails the job.

    A process that built a cache entry is not kept: its start paid once for what every later run reads
    (a first CPU run's ONNX export is about 15 s), and "auto" would then keep a small job off the CPU
    that never again gets to measure itself."""
    if images < RECORD_FROM or device not in ("cpu", "cuda") or not images_per_s > 0 or entries_built():
        return
    try:
        everything = json.loads(_path().read_text())
        if not isinstance(everything, dict):
            everything = {}
    except (OSError, ValueError):
        everything = {}
    mine = everything.setdefault(machine_key(), {})
    mine[device] = {"start_s": round(start_s, 3), "images_per_s": round(images_per_s, 1)}
    try:
        atomic_write(_path(), lambda tmp: Path(tmp).write_text(json.dumps(everything, indent=1)))
    except Exception:  # a cache that cannot be written costs the next choice its precision, never this job
        pass
