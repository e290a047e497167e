"""The streaming full fine-tune (`imgclass train --finetune all`) on a GPU: training images/s, peak GPU
memory, best val accuracy and wall time, on a dataset folder and on an N-image training set made from
its photos by augmentation; next to the plain-PyTorch way on the same data in the same run.

    python benchmarks/train_finetune_all.py --data ../shared/data/flowers12 --epochs 10
    python benchmarks/train_finetune_all.py --data ../shared/data/flowers12 --make 20000 --epochs 3

--make N first writes N random resized crops / flips / colour jitters of DATA's train photos as JPEGs
(quality 90, 224 px) into a temporary folder, in as many processes as there are cores; val stays DATA's
own val photos, so accuracy is measured on real images. imgclass runs in this process (train() as the
CLI calls it); images/s is train images per epoch second (the epoch's val pass included), median of
the epochs after the first (worker start-up, cuDNN autotuning). Also printed: the training loader alone
(decode + augmentation, no network), and the plain way: torchvision ImageFolder with the same v2
transforms, DataLoader(shuffle, same workers, pinned), the same network in train mode, AdamW, bf16
autocast, channels-last, the second of two epochs.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import InterpolationMode, v2

from imgclass.data import ImageIndex, find_dataset
from imgclass.models import get_spec
from imgclass.models.build import build_model, replace_head
from imgclass.preprocess import Preprocess
from imgclass.train import TrainConfig, finetune_all, train
from imgclass.train.distributed import World
from imgclass.train.finetune_all import AugmentedImages, EpochBatches, collate, normalize


def make_one(job: tuple[int, Path, Path]) -> None:
    """Write the ``i``-th augmented copy of ``src`` to ``dst`` (seeded by ``i``: the set is reproducible)."""
    from PIL import Image

    i, src, dst = job
    torch.manual_seed(i)
    jitter = v2.Compose([v2.RandomResizedCrop(224, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                         v2.ColorJitter(0.3, 0.3, 0.3, 0.05)])
    jitter(Image.open(src).convert("RGB")).save(dst, quality=90)


def make_set(data: Path, n: int, out: Path) -> Path:
    """An ``n``-image training set of augmented copies of ``data``'s train photos, with ``data``'s val."""
    ds = find_dataset(data)
    jobs, order = [], np.random.default_rng(0).permutation(len(ds.train))  # every class, however small n is
    for i in range(n):
        path, label = ds.train[order[i % len(order)]]
        folder = out / "train" / ds.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((i, path, folder / f"{path.stem}_{i}.jpg"))
    start = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(make_one, jobs, chunksize=64)
    (out / "val").symlink_to(Path(ds.val[0][0]).parent.parent.resolve())
    (out / "labels.txt").write_text("\n".join(ds.classes) + "\n")
    print(f"made {n} training images from {len(ds.train)} photos of {data} in {time.perf_counter() - start:.1f} s")
    return out


def run_imgclass(data: Path, model_dir: Path, args) -> dict:
    """imgclass's figures: best val %, median epoch images/s, peak GPU memory, wall s, the input side."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = train(TrainConfig(str(data), model_dir=str(model_dir), finetune="all", epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, workers=args.workers, patience=args.epochs,
                                resolution=args.resolution))
    wall = time.perf_counter() - start
    with open(model_dir / "results.csv") as f:
        epochs = list(csv.DictReader(f))
    n_train = len(find_dataset(data).train)
    speeds = [n_train / float(r["seconds"]) for r in epochs]
    return {"best_acc": summary["best_acc"], "best_epoch": summary["best_epoch"], "epochs": len(epochs),
            "img_s": statistics.median(speeds[1:] or speeds), "first_img_s": speeds[0], "wall": wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"), "n_train": n_train,
            "input_size": summary["input_size"]}


def loader_alone(data: Path, args, size: int) -> float:
    """Images/s of imgclass's training loader alone (decode + augmentation in workers, no network): one epoch."""
    ds = find_dataset(data)
    images = ImageIndex(np.array([label for _, label in ds.train]), [path for path, _ in ds.train], [])
    preprocess = preprocess_of(size)
    batches = EpochBatches(len(images), args.batch_size, 0, World(0, 1, torch.device("cpu")))
    loader = DataLoader(AugmentedImages(images, preprocess, 0), batch_sampler=batches, num_workers=args.workers,
                        collate_fn=partial(collate, size=preprocess.size), pin_memory=torch.cuda.is_available())
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def preprocess_of(size: int) -> Preprocess:
    """lite0's preprocessing at the input side imgclass trained at."""
    return replace(get_spec("efficientnet-lite0").preprocess, size=size)


def run_plain(data: Path, args, size: int) -> tuple[float, float]:
    """(images/s, peak GPU GiB) of the second of two epochs of the plain-PyTorch full fine-tune on the same
    data and device (the first starts the workers and autotunes cuDNN)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = get_spec("efficientnet-lite0")
    p = preprocess_of(size)
    interpolation = InterpolationMode(p.interpolation)
    tf = v2.Compose([v2.RandomResizedCrop(p.size, interpolation=interpolation), v2.RandomHorizontalFlip(),
                     v2.TrivialAugmentWide(interpolation=interpolation), v2.PILToTensor()])
    train_dir = data / "train"
    loader = DataLoader(datasets.ImageFolder(str(train_dir), tf), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=True)
    model = replace_head(build_model(spec), len(loader.dataset.classes)).to(device)
    model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=device.type == "cuda")
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for epoch in range(2):
        start, n = time.perf_counter(), 0
        for x, y in loader:
            x = normalize(x.to(device, non_blocking=True), p)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return n / (time.perf_counter() - start), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/flowers12")
    ap.add_argument("--make", type=int, default=0, metavar="N",
                    help="train on N augmented copies of DATA's train photos")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--resolution", type=int, default=None,
                    help="network input side (default: imgclass's choice: lite0's 224, or 256 for smaller images)")
    ap.add_argument("--head-lr-scale", type=float, default=finetune_all.HEAD_LR_SCALE,
                    help="the head's learning rate over the rest's (default: imgclass's)")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-PyTorch epochs")
    args = ap.parse_args()
    finetune_all.HEAD_LR_SCALE = args.head_lr_scale
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        data = make_set(args.data, args.make, Path(tmp) / "set") if args.make else args.data
        ours = run_imgclass(data, Path(tmp) / "run", args)
        print(f"{device}, {os.cpu_count()} cores: --finetune all on {data.name}: {ours['n_train']} train images, "
              f"batch {args.batch_size}, lr {args.lr:g} (head x{args.head_lr_scale:g}), {args.workers} workers, "
              f"{ours['epochs']} epochs, input {ours['input_size']} px")
        print(f"  imgclass  : best val {ours['best_acc']:.2f}% (epoch {ours['best_epoch']}), "
              f"{ours['img_s']:.0f} img/s (epoch 1: {ours['first_img_s']:.0f}), peak GPU memory "
              f"{ours['peak_gib']:.2f} GiB, wall {ours['wall']:.1f} s")
        loader_img_s = loader_alone(data, args, ours["input_size"])
        print(f"  loader alone (decode + augmentation, {args.workers} workers): {loader_img_s:.0f} img/s")
        if not args.no_plain:
            img_s, peak = run_plain(data, args, ours["input_size"])
            print(f"  plain PyTorch (ImageFolder, same transforms and network, train-mode BN, 2nd epoch): "
                  f"{img_s:.0f} img/s, peak GPU memory {peak:.2f} GiB")


if __name__ == "__main__":
    main()
