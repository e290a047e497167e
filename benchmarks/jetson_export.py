"""Accuracy of `imgclass export --jetson` files under jetson-inference's own preprocessing, against
imgclass's accuracy with the same trained model, on real val sets (hymenoptera, flowers12).

jetson's imageNet feeds an ONNX model the whole frame resized to the input (c/tensorConvert.cu samples
nearest-neighbor), RGB 0..1, ImageNet mean/std. That is re-implemented here (imgclass.export.jetson.
jetson_preprocess) and also run with a bilinear resize (cv2.INTER_LINEAR), then fed to the exported
file in ONNX Runtime one image at a time. "before" is what a plain export gave on a Jetson: the model's
own input size, stretched, ImageNet-normalized although the model was trained otherwise.

    python benchmarks/jetson_export.py [--runs /tmp/jet] [--data ../shared/data]

Trains a run per dataset first where RUNS/<dataset>/model_best.pth.tar is missing (about a minute each).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from imgclass.data import SPLIT_FILE, find_dataset
from imgclass.export.jetson import JETSON_MEAN, JETSON_STD, export_jetson_run, jetson_preprocess
from imgclass.media.images import load_image
from imgclass.train.checkpoint import BEST
from imgclass.train.evaluate import evaluate_dataset
from imgclass.export.run import load_run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bilinear_preprocess(image: np.ndarray, side: int) -> np.ndarray:
    """jetson's preprocessing with a bilinear resize in place of its nearest-neighbor sampling."""
    pixels = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    return np.ascontiguousarray(((pixels - JETSON_MEAN) / JETSON_STD).astype(np.float32).transpose(2, 0, 1))


def accuracy(predict, samples, columns: list[int]) -> float:
    """Top-1 % of ``predict(image) -> class index`` over (path, label) samples."""
    hits = sum(predict(load_image(path)) == columns[label] for path, label in samples)
    return 100 * hits / len(samples)


def measure(dataset: Path, run: Path) -> dict:
    if not (run / BEST).is_file():
        subprocess.run([sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(run)], check=True)
    state, model, preprocess, classes = load_run(run)
    exported = export_jetson_run(run)
    ds = find_dataset(dataset, state["config"]["val_split"], split_file=run / SPLIT_FILE)
    columns = [classes.index(c) for c in ds.classes]
    session = ort.InferenceSession(str(exported["path"]), providers=["CPUExecutionProvider"])
    side = exported["input_size"]

    def jetson_file(prepare):
        return lambda image: int(session.run(None, {"input_0": prepare(image, side)[None]})[0].argmax())

    def before(image):  # jetson's preprocessing straight into the model, at its own size
        with torch.no_grad():
            return int(model(torch.from_numpy(jetson_preprocess(image, preprocess.size)[None])).argmax())

    return {"images": len(ds.val),
            "imgclass": evaluate_dataset(dataset, run / BEST, device="cpu")["top1"],
            "jetson nearest": accuracy(jetson_file(jetson_preprocess), ds.val, columns),
            "jetson bilinear": accuracy(jetson_file(bilinear_preprocess), ds.val, columns),
            "before": accuracy(before, ds.val, columns), "side": side}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="/tmp/jet", help="folder of the runs, one per dataset (trained if missing)")
    parser.add_argument("--data", default=str(DATA), help="the shared data folder")
    parser.add_argument("--datasets", nargs="+", default=["hymenoptera", "flowers12"])
    args = parser.parse_args()
    for name in args.datasets:
        r = measure(Path(args.data) / name, Path(args.runs) / name)
        print(f"{name} val ({r['images']} images): imgclass {r['imgclass']:.2f}% | Jetson file (input {r['side']}) "
              f"with jetson's preprocessing: nearest (as tensorConvert.cu) {r['jetson nearest']:.2f}%, bilinear "
              f"{r['jetson bilinear']:.2f}% | before (plain model, jetson's input) {r['before']:.2f}%", flush=True)


if __name__ == "__main__":
    main()
