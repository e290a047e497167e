"""Whole commands, as a user times them: `imgclass classify FOLDER` in a fresh process, start to exit,
with the engine cache warm as after one earlier run, for each job size and device (the devices in
turns, so that a noisy minute does not fall on one of them), next to the plain PyTorch way (one script:
PIL + torchvision transforms in a DataLoader, the same network in eager mode, fp16 on CUDA or fp32 on
the CPU, model load included). Prints one table of medians; the floor any torch
program pays on CUDA (`import torch; torch.zeros(1, device='cuda')`) is timed in the same run. The timed
commands are the user's, without --verbose; the warm-up run before them says which device "auto" took.

    python benchmarks/wall_clock.py --images ../shared/data/flowers12 --sizes 33 500 5760
    python benchmarks/wall_clock.py --images DIR --sizes 33 500 5760 57600 --devices cpu cuda auto   # a GPU machine

Job folders are made of links to the photos under --images, repeated to each size, in a temporary folder.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclass.media.inputs import list_images

PLAIN_TORCH = r"""
import sys, torch, torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from pathlib import Path
from imgclass.models import get_spec
from imgclass.models.build import build_model  # the same torch module; loading it is part of the time

files = sorted(p for p in Path(sys.argv[1]).iterdir())
device = sys.argv[2]
tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                T.Normalize([0.5] * 3, [0.5] * 3)])

class Files(Dataset):
    def __len__(self): return len(files)
    def __getitem__(self, i): return tf(Image.open(files[i]).convert("RGB"))

net = build_model(get_spec("efficientnet-lite0")).eval().to(device, torch.float16 if device == "cuda" else torch.float32)
loader = DataLoader(Files(), batch_size=64, num_workers=min(16, len(files), __import__("os").cpu_count()))
top = []
with torch.inference_mode():
    for x in loader:
        x = x.to(device, torch.float16 if device == "cuda" else torch.float32, non_blocking=True)
        top.append(net(x).argmax(1).cpu())
print(len(torch.cat(top)))
"""


def job_folder(root: Path, photos: list[Path], size: int) -> Path:
    """A folder of ``size`` links to ``photos`` (repeated), made once."""
    folder = root / f"{size}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i, photo in zip(range(size), itertools.cycle(photos)):
            (folder / f"{i:06d}{photo.suffix.lower()}").symlink_to(photo.resolve())
    return folder


def seconds(command: list[str]) -> tuple[float, str]:
    """Wall time of a fresh process, start to exit, and its stderr (stdout discarded; a failure stops
    the benchmark)."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stderr


def median_seconds(command: list[str], repeats: int) -> float:
    """The median wall time of ``repeats`` fresh processes."""
    return statistics.median(seconds(command)[0] for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="a folder of photos (searched recursively), repeated to each size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[33, 500, 5760], help="images per job")
    ap.add_argument("--devices", nargs="+", default=["cpu", "auto"], help="--device values to time")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each command; the median is shown")
    ap.add_argument("--plain", action="store_true", help="also time the plain PyTorch script (slow on a CPU)")
    args = ap.parse_args()
    photos = list_images(args.images)
    imgclass = [sys.executable, "-m", "imgclass", "classify"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="wall-clock-") as tmp:
        script = Path(tmp) / "plain_torch.py"
        script.write_text(PLAIN_TORCH)
        cuda = "cuda" in args.devices
        floor = median_seconds([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda')"],
                               args.repeats) if cuda else None
        for size in args.sizes:
            folder = job_folder(Path(tmp), photos, size)
            row: dict = {"images": size}
            commands = {device: [*imgclass, str(folder), "--device", device] for device in args.devices}
            for device, command in commands.items():
                _, said = seconds([*command, "--verbose"])  # the cache warm, as after one earlier run
                if device == "auto":  # which device it took: "imgclass: --device auto: cuda for 5760 images (...)"
                    row["picked"] = next((line.split()[3] for line in said.splitlines() if "--device auto:" in line), "")
            walls = {device: [] for device in commands}
            for turn in range(args.repeats):  # the devices in turns, each turn starting with the next one
                for device in args.devices[turn % len(commands):] + args.devices[:turn % len(commands)]:
                    walls[device].append(seconds(commands[device])[0])
            row.update({device: statistics.median(w) for device, w in walls.items()})
            if args.plain:
                row["plain"] = median_seconds([sys.executable, str(script), str(folder), "cuda" if cuda else "cpu"],
                                              args.repeats)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    columns = ["images", *args.devices, *(["plain"] if args.plain else [])]
    print(f"machine: {os.cpu_count()} cores" + (f", {gpu_name()}; CUDA floor (import torch + first tensor) {floor:.2f} s"
                                                  if floor else ""))
    print(" | ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c]:>12}" if c == "images" else f"{row[c]:>7.2f} s" + (f" {row['picked']:>4}" if c == "auto"
                         else "     ") for c in columns))


def gpu_name() -> str:
    """The card, as the NVIDIA driver names it (without importing torch here)."""
    names = [p.read_text(errors="replace").split("\n", 1)[0].split(":", 1)[-1].strip()
             for p in Path("/proc/driver/nvidia/gpus").glob("*/information")]
    return ", ".join(names) or "no NVIDIA GPU"

if __name__ == "__main__":
    main()
