"""End-to-end classification speed on a folder of real JPEGs (decode, preprocess, infer), imgclass
(ONNX Runtime, threaded decode) against the plain PyTorch way (PIL + torchvision + torch eager)
on the same weights, in the same run; plus the wall time of a warm one-image `imgclass classify`.

    python benchmarks/classify_speed.py [--folder DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

import imgclass
from imgclass.media.inputs import list_images
from imgclass.models import get_spec
from imgclass.models.build import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def plain_pytorch(paths: list[Path], network: str, batch_size: int) -> float:
    """images/s the way the PyTorch tutorials do it."""
    spec = get_spec(network)
    p = spec.preprocess
    model = build_model(spec)
    tf = transforms.Compose([transforms.Resize(round(p.size / p.crop_pct), transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(p.size), transforms.ToTensor(), transforms.Normalize(p.mean, p.std)])
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([tf(Image.open(f).convert("RGB")) for f in paths[i:i + batch_size]])
            torch.softmax(model(batch), 1)
    return len(paths) / (time.perf_counter() - start)


def imgclass_speed(net: imgclass.Classifier, paths: list[Path], batch_size: int) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in net.classify_files(paths, batch_size=batch_size))
    return n / (time.perf_counter() - start)


def cli_wall(image: Path, network: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgclass", "classify", str(image), "--network", network], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--folder", default=str(DATA / "hymenoptera" / "val" / "*" / "*.jpg"), help="image folder or glob")
    ap.add_argument("--network", default="efficientnet-lite0")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = list_images(args.folder)
    net = imgclass.Classifier(args.network)  # builds the engine once if needed
    imgclass_speed(net, paths[:16], args.batch_size)  # warm up
    ours = [imgclass_speed(net, paths, args.batch_size) for _ in range(args.repeats)]
    plain = [plain_pytorch(paths, args.network, args.batch_size) for _ in range(args.repeats)]
    walls = [cli_wall(paths[0], args.network) for _ in range(args.repeats + 2)]
    print(f"{len(paths)} JPEGs from {args.folder}, {args.network}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"imgclass (ONNX Runtime):     {statistics.median(ours):7.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"plain PyTorch (PIL + eager): {statistics.median(plain):7.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in plain)})")
    print(f"speed-up (median ratio):     {statistics.median(ours) / statistics.median(plain):7.2f}x")
    print(f"warm `imgclass classify` of one image: median {statistics.median(walls):.2f} s wall")


if __name__ == "__main__":
    main()
