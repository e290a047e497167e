"""Training on images smaller than the network's input: flowers12 downscaled to 128 px, trained with
each way of feeding it to the network, next to full-resolution flowers12 with defaults in the same run.

    python benchmarks/train_small_images.py [--data ../shared/data] [--side 128] [--only default lanczos ...]

The small copy is made once in a temporary folder: each photo's long side brought down to --side
(Pillow ``thumbnail``, Lanczos, aspect kept; flowers12's photos are 224x224, so both sides), saved as
JPEG quality 95, as a thumbnail or a detector's crop would be. Every choice then runs
``imgclass train DATA`` in a subprocess exactly as a user types it, with an empty engine cache of its
own (so each wall time counts the one-time ONNX export of its trunk) and prints val images right out
of 240, %, and wall seconds.

Choices that no flag selects are fed as files the default pipeline leaves as they are ("pre-resized",
PNG, lossless): a 128 px image upscaled to 256 by another filter, of which the pipeline keeps the
center 224 untouched, gives that filter's upscale exactly; one upscaled to 224 whole and padded to 256
gives the whole frame at 224 (no crop), since the crop takes exactly the 224 that were not padding.
Every choice but "default" pins its input with flags or files, so its figure does not move when the
default does.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

FILTERS = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
# name: (dataset: "full", "small" or (pre-resize filter, content side, padded side), extra flags, what it is)
CHOICES: dict[str, tuple[object, list[str], str]] = {
    "full": ("full", [], "full-resolution flowers12 (224 px), defaults: the reference"),
    "default": ("small", [], "128 px, defaults (what imgclass decides: 256 since issue 18)"),
    "res224": ("small", ["--resolution", "224"], "128 px, --resolution 224: the default before issue 18"),
    "crop-bicubic": (("bicubic", 256, 256), [], "128 px upscaled to 256 bicubic, center 224: res224 emulated"),
    "crop-lanczos": (("lanczos", 256, 256), [], "128 px upscaled to 256 lanczos, center 224"),
    "whole-bicubic": (("bicubic", 224, 256), [], "128 px whole frame to 224 bicubic, no crop"),
    "whole-lanczos": (("lanczos", 224, 256), [], "128 px whole frame to 224 lanczos, no crop"),
    "res128": ("small", ["--resolution", "128"], "128 px, --resolution 128 (146, center 128)"),
    "res176": ("small", ["--resolution", "176"], "128 px, --resolution 176 (201, center 176)"),
    "res256": ("small", ["--resolution", "256"], "128 px, --resolution 256 (293, center 256)"),
    "res288": ("small", ["--resolution", "288"], "128 px, --resolution 288 (329, center 288)"),
    "lite1": ("small", ["--arch", "efficientnet-lite1", "--resolution", "240"],
              "128 px, --arch efficientnet-lite1 at its own 240 (272, center 240)"),
    "lite2": ("small", ["--arch", "efficientnet-lite2", "--resolution", "260"],
              "128 px, --arch efficientnet-lite2 at its own 260 (292, center 260)"),
    "full-whole": (("bicubic", 224, 256), [], "full-resolution flowers12, whole frame at 224 (no crop)"),
}


def images_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def downscaled(source: Path, target: Path, side: int) -> Path:
    """A copy of the dataset ``source`` with each image's long side brought down to ``side`` (JPEG q95)."""
    for path in images_of(source):
        out = (target / path.relative_to(source)).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.LANCZOS)
            im.save(out, quality=95)
    for extra in ("labels.txt",):
        if (source / extra).is_file():
            (target / extra).write_bytes((source / extra).read_bytes())
    return target


def pre_resized(source: Path, target: Path, filter_name: str, content: int, padded: int) -> Path:
    """A copy of ``source`` with each (square) image resized to ``content`` by ``filter_name`` and centered on a
    ``padded`` square of grey (PNG): what the default pipeline (short side to 256, center 224) turns into that
    filter's pixels with no resize of its own."""
    for path in images_of(source):
        out = (target / path.relative_to(source)).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im = im.convert("RGB").resize((content, content), FILTERS[filter_name])
        canvas = Image.new("RGB", (padded, padded), (128, 128, 128))
        canvas.paste(im, ((padded - content) // 2, (padded - content) // 2))
        canvas.save(out)
    if (source / "labels.txt").is_file():
        (target / "labels.txt").write_bytes((source / "labels.txt").read_bytes())
    return target


def train(dataset: Path, flags: list[str], model_dir: Path, cache: Path) -> tuple[int, int, float, str]:
    """(val right, val images, wall s, the run's line about its input) of ``imgclass train DATASET FLAGS``."""
    env = {**os.environ, "IMGCLASS_CACHE": str(cache)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir),
                          *flags], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"imgclass train {dataset} {' '.join(flags)} failed: {out.stderr.strip()[-800:]}")
    with open(model_dir / "results.csv") as f:
        best = max(float(r["val_acc"]) for r in csv.DictReader(f))
    n_val = len(images_of(dataset / "val"))
    said = [line for line in out.stderr.splitlines() if "imgclass: input:" in line]
    return round(best * n_val / 100), n_val, seconds, said[0] if said else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--side", type=int, default=128, help="long side of the small copy (default: 128)")
    parser.add_argument("--only", nargs="+", choices=list(CHOICES), default=list(CHOICES), help="choices to run")
    args = parser.parse_args()
    full = Path(args.data) / "flowers12"
    print(f"machine: {os.cpu_count()} CPU cores, load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = downscaled(full, tmp / f"flowers12-{args.side}", args.side)
        for name in args.only:
            data, flags, about = CHOICES[name]
            if data == "full":
                dataset = full
            elif data == "small":
                dataset = small
            else:
                base = full if name.startswith("full") else small
                dataset = pre_resized(base, tmp / name, *data)
            right, n, seconds, said = train(dataset, flags, tmp / "runs" / name, tmp / "cache" / name)
            rows.append((name, about, right, n, seconds))
            print(f"{name}: {right}/{n} = {right / n * 100:.2f}% in {seconds:.0f} s  {said}", flush=True)
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| choice | what | val right | val % | wall s |\n|---|---|---|---|---|")
    for name, about, right, n, seconds in rows:
        print(f"| {name} | {about} | {right}/{n} | {right / n * 100:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
