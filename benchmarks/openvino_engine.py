"""imgclass's OpenVINO engine against OpenVINO's own benchmark_app, on the same model file, in the same
run: throughput at batch 8 (benchmark_app -hint throughput) and median latency at batch 1 (-hint latency).

    python benchmarks/openvino_engine.py --calibration ../shared/data/hymenoptera/train   # int8 of lite0
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import imgclass
from imgclass.runtime.openvino import OpenVinoEngine
from imgclass.runtime.precision import int8_model
from imgclass.runtime.select import _source


def benchmark_app(model: Path, hint: str, batch: int, seconds: int) -> tuple[float, float]:
    """(throughput img/s, median latency ms) as benchmark_app reports them."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    out = subprocess.run([tool, "-m", str(model), "-d", "CPU", "-hint", hint, "-shape", f"[{batch},3,224,224]",
                          "-t", str(seconds)], capture_output=True, text=True, check=True).stdout
    fps = float(re.search(r"Throughput:\s+([\d.]+) FPS", out)[1])
    median = float(re.search(r"Median:\s+([\d.]+) ms", out)[1])
    return fps, median  # its FPS counts images, batch included


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", required=True, help="images that calibrate int8")
    ap.add_argument("--seconds", type=int, default=15, help="how long benchmark_app runs each hint")
    args = ap.parse_args()
    net = imgclass.Classifier(device="cpu")
    model = int8_model(_source(net.model), net.preprocess, args.calibration)
    path = Path(tempfile.mkdtemp(prefix="imgclass-")) / "int8.onnx"
    path.write_bytes(model)
    engine = OpenVinoEngine(model, "int8", path.name)
    x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224), np.float32)
    ours8 = 8 / timed(lambda: engine.run(x8), 60)
    ours1 = timed(lambda: engine.run(x8[:1]), 200) * 1000
    theirs8, _ = benchmark_app(path, "throughput", 8, args.seconds)
    _, theirs1 = benchmark_app(path, "latency", 1, args.seconds)
    print(f"int8, batch 8 throughput: imgclass {ours8:.0f} img/s, benchmark_app {theirs8:.0f} img/s ({ours8 / theirs8:.0%})")
    print(f"int8, batch 1 median latency: imgclass {ours1:.2f} ms, benchmark_app {theirs1:.2f} ms "
          f"({theirs1 / ours1:.0%} of benchmark_app's speed)")


if __name__ == "__main__":
    main()
