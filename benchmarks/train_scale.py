"""Training memory and speed against the dataset's size: `imgclass train` on 5k, 20k and 80k images.

The datasets are made once, in a temporary folder, from the shared photos (hymenoptera + flowers12:
14 classes): each image is a random resized crop of a photo of its class, maybe mirrored, with
colour jitter, saved as a 240 px JPEG; train images come from the train photos, val images (a fifth)
from the val photos. The smaller sets are links to the first images of the largest.

For each size, `imgclass train` runs as a user types it (a fresh process, an empty cache: the
trunk's activations are computed, not read back) with the recipe pinned (`--device cpu`: the
cached-trunk recipe), while the anonymous memory of its whole process tree (RssAnon summed over the
processes, sampled every 0.2 s; an on-disk store's pages are page cache, not counted) is watched.

    python benchmarks/train_scale.py [--data ../shared/data] [--sizes 5000 20000 80000] [--epochs 1]
"""
from __future__ import annotations

import argparse
import functools
import shutil
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

SIDE = 240  # the written images' side: above the network's 224, like everyday photos cut down
SOURCES = ("hymenoptera", "flowers12")


def photos(data: Path, split: str) -> dict[str, list[Path]]:
    """{class: photos} of every source dataset's ``split``."""
    out: dict[str, list[Path]] = {}
    for source in SOURCES:
        for folder in sorted((data / source / split).iterdir()):
            out[folder.name] = sorted(folder.glob("*.jpg"))
    return out


@functools.lru_cache(maxsize=None)
def load(source: Path) -> Image.Image:
    """A source photo, decoded once per worker at about twice the written side (JPEG draft mode)."""
    with Image.open(source) as im:
        im.draft("RGB", (2 * SIDE, 2 * SIDE))
        return ImageOps.exif_transpose(im.convert("RGB"))


def augment(job: tuple[Path, Path, int]) -> None:
    """Write one random crop, flip and colour jitter of ``source`` to ``target``, seeded by ``seed``."""
    source, target, seed = job
    rng = random.Random(seed)
    im = load(source)
    w, h = im.size
    scale, ratio = rng.uniform(0.35, 1.0), rng.uniform(3 / 4, 4 / 3)
    cw = min(w, int((w * h * scale * ratio) ** 0.5))
    ch = min(h, int((w * h * scale / ratio) ** 0.5))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = im.resize((SIDE, SIDE), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(rng.uniform(0.7, 1.3))
    im.save(target, quality=88)


def make_dataset(data: Path, root: Path, n: int) -> None:
    """``n`` augmented images in ``root``/{train,val}/<class>/ (a fifth in val), classes in turn."""
    jobs = []
    for split, count in (("train", n - n // 5), ("val", n // 5)):
        by_class = photos(data, split)
        classes = sorted(by_class)
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            c = classes[i % len(classes)]
            source = by_class[c][(i // len(classes)) % len(by_class[c])]
            jobs.append((source, root / split / c / f"{i:06d}.jpg", 2 * i + (split == "val")))
    jobs = [j for j in jobs if not j[1].exists()]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for k, _ in enumerate(pool.map(augment, jobs, chunksize=64)):
            if k % 5000 == 0:
                print(f"  made {k}/{len(jobs)} images", file=sys.stderr, flush=True)


def subset(full: Path, root: Path, n: int) -> None:
    """Links to the images of ``full`` whose index is below this size's share of each split."""
    for split, count in (("train", n - n // 5), ("val", n // 5)):
        for folder in sorted((full / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True, exist_ok=True)
            for image in folder.iterdir():
                if int(image.stem) < count:
                    (root / split / folder.name / image.name).symlink_to(image)


def tree_rss_anon(pid: int) -> int:
    """RssAnon bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            total += int(re.search(r"RssAnon:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())[1]) * 1024
        except (OSError, TypeError):
            continue
    return total


def train(dataset: Path, model_dir: Path, cache: Path, epochs: int) -> tuple[float, int, str]:
    """(wall seconds, peak RssAnon bytes of the process tree, the log) of one `imgclass train`."""
    env = {**os.environ, "IMGCLASS_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir), "--device", "cpu",
           "--epochs", str(epochs)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_anon(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"imgclass train failed on {dataset}: {err.strip()[-800:]}")
    return seconds, peak, out + err


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data",
                   help="folder holding hymenoptera/ and flowers12/ (default: ../shared/data)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 80000], help="dataset sizes (default: 5k 20k 80k)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of each run (default: 1)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the datasets, kept for the next run (default: a temporary one, removed)")
    args = p.parse_args()
    with (nullcontext(args.work) if args.work else tempfile.TemporaryDirectory()) as tmp:
        tmp = Path(tmp)
        full = tmp / f"set{max(args.sizes)}"
        t0 = time.perf_counter()
        make_dataset(args.data, full, max(args.sizes))
        print(f"made {max(args.sizes)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows = []
        for n in sorted(args.sizes):
            dataset = full if n == max(args.sizes) else tmp / f"set{n}"
            if dataset != full and not dataset.exists():
                subset(full, dataset, n)
            for old in (tmp / f"run{n}", tmp / f"cache{n}"):  # an empty cache: the features are computed
                shutil.rmtree(old, ignore_errors=True)
            seconds, peak, log = train(dataset, tmp / f"run{n}", tmp / f"cache{n}", args.epochs)
            best = re.search(r"best val accuracy ([\d.]+)%", log)
            stored = re.search(r"trunk features of (\d+) views \(([^)]*)\)", log)
            rows.append((n, f"cached trunk, {args.epochs} fine-tune epoch(s), features {stored[2] if stored else '?'}",
                         peak / 2**30, seconds, n / seconds, best[1] if best else "?"))
            print(f"  {n} images: {seconds:.0f} s, peak RssAnon {peak / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    print("| images | recipe | peak RssAnon (process tree) | wall | images/s | best val |")
    print("|---|---|---|---|---|---|")
    for n, recipe, peak, seconds, rate, best in rows:
        print(f"| {n:,} | {recipe} | {peak:.2f} GiB | {seconds:.0f} s | {rate:.1f} | {best}% |")
    if len(rows) > 1:
        print(f"\npeak at {rows[-1][0]:,} images - peak at {rows[0][0]:,}: {rows[-1][2] - rows[0][2]:+.2f} GiB")


if __name__ == "__main__":
    main()
