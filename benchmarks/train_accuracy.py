"""Train accuracy and wall time: `imgclass train` with default settings on hymenoptera and flowers12,
against the PyTorch transfer-learning tutorial's recipe on the same backbone.

The baseline is the tutorial's "finetuning the ConvNet" (torchvision ImageFolder, RandomResizedCrop
+ flip, SGD lr 0.001 momentum 0.9, StepLR, all layers trained, best val epoch kept) on
efficientnet-lite0 with its own normalization (mean = std = 0.5), for --baseline-epochs epochs (the
tutorial runs 25: on 2 CPU cores that is ~20 min for hymenoptera alone).

    python benchmarks/train_accuracy.py [--data ../shared/data] [--baseline-epochs 3]

imgclass runs in a subprocess exactly as a user types it, with an empty engine cache (so the
one-time trunk export is counted); wall time includes Python and torch start-up.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

from imgclass.models import get_spec
from imgclass.models.build import build_model, replace_head

DATASETS = {"hymenoptera": (97.0, 180), "flowers12": (95.0, 300)}  # target val %, wall-time budget s


def run_imgclass(dataset: Path, model_dir: Path, cache: Path) -> tuple[float, float, dict]:
    """(best val %, wall seconds, best val % per stage) of `imgclass train DATASET --model-dir DIR`."""
    env = {**os.environ, "IMGCLASS_CACHE": str(cache)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir)],
                         capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"imgclass train failed on {dataset}: {out.stderr.strip()[-500:]}")
    with open(model_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    stages = {}
    for r in rows:
        stages[r["stage"]] = max(stages.get(r["stage"], 0.0), float(r["val_acc"]))
    return max(float(r["val_acc"]) for r in rows), seconds, stages


def run_tutorial(dataset: Path, epochs: int, workers: int = 2) -> tuple[float, float]:
    """(best val %, wall seconds) of the PyTorch tutorial's fine-tuning recipe on efficientnet-lite0."""
    start = time.perf_counter()
    spec = get_spec("efficientnet-lite0")
    norm = transforms.Normalize(spec.preprocess.mean, spec.preprocess.std)
    tf = {"train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), norm]),
          "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])}
    sets = {s: datasets.ImageFolder(str(dataset / s), tf[s]) for s in ("train", "val")}
    loaders = {s: torch.utils.data.DataLoader(sets[s], batch_size=4 if s == "train" else 32, shuffle=s == "train",
                                              num_workers=workers) for s in sets}
    model = replace_head(build_model(spec), len(sets["train"].classes)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    best_acc, best = 0.0, copy.deepcopy(model.state_dict())
    for epoch in range(epochs):
        model.train()
        for x, y in loaders["train"]:
            optimizer.zero_grad()
            criterion(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                correct += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
        acc = correct / len(sets["val"]) * 100
        print(f"  tutorial epoch {epoch + 1}/{epochs}: val {acc:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)
        if acc > best_acc:
            best_acc, best = acc, copy.deepcopy(model.state_dict())
    return best_acc, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--baseline-epochs", type=int, default=3, help="0 skips the tutorial baseline")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for name, (target, budget) in DATASETS.items():
            dataset = Path(args.data) / name
            acc, seconds, stages = run_imgclass(dataset, Path(tmp) / name, cache)
            verdict = "ok" if acc >= target and seconds <= budget else "MISSED"
            stage_text = ", ".join(f"{k} {v:.2f}%" for k, v in stages.items())
            print(f"imgclass train {name}: best val {acc:.2f}% ({stage_text}) in {seconds:.0f} s wall "
                  f"[target >= {target}% in < {budget} s: {verdict}]", flush=True)
            rows.append((name, "imgclass train (defaults)", acc, seconds))
        for name in DATASETS if args.baseline_epochs else ():
            acc, seconds = run_tutorial(Path(args.data) / name, args.baseline_epochs)
            print(f"PyTorch tutorial fine-tune, lite0, {args.baseline_epochs} epochs, {name}: best val {acc:.2f}% "
                  f"in {seconds:.0f} s wall", flush=True)
            rows.append((name, f"tutorial fine-tune ({args.baseline_epochs} ep)", acc, seconds))
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"| dataset | recipe | best val % | wall s |\n|---|---|---|---|")
    for name, recipe, acc, seconds in rows:
        print(f"| {name} | {recipe} | {acc:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
