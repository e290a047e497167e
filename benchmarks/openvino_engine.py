"""imgclass's OpenVINO engine against OpenVINO's own benchmark_app, on the same model file, in the same
run: throughput at batch 8 (benchmark_app -hint throughput) and median latency at batch 1 (-hint latency),
in turns over several rounds (the machine is shared: each round's ratio, then their median).

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
from imgclass.runtime.openvino import LATENCY, OpenVinoEngine
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


def timed(fn, seconds: float) -> float:
    """Median seconds of a call of ``fn``, called for about ``seconds`` after a warm-up."""
    for _ in range(3):
        fn()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", required=True, help="images that calibrate int8")
    ap.add_argument("--seconds", type=int, default=3, help="how long each side runs each figure in a round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the four figures, in turns")
    args = ap.parse_args()
    net = imgclass.Classifier(device="cpu")
    model = int8_model(_source(net.model), net.preprocess, args.calibration)
    path = Path(tempfile.mkdtemp(prefix="imgclass-")) / "int8.onnx"
    path.write_bytes(model)
    engine = OpenVinoEngine(model, "int8", path.name)
    x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224), np.float32)
    request = engine._requests(LATENCY, 1)[1][0]  # what one image runs on, timed by OpenVINO as benchmark_app times
    throughput, latency = [], []  # per round: (imgclass, benchmark_app); latency: (wall, OpenVINO's, benchmark_app)
    for i in range(args.rounds):
        throughput.append((8 / timed(lambda: engine.run(x8), args.seconds),
                           benchmark_app(path, "throughput", 8, args.seconds)[0]))
        inferred = []
        wall = timed(lambda: (engine.run(x8[:1]), inferred.append(request.latency)), args.seconds) * 1000
        latency.append((wall, statistics.median(inferred), benchmark_app(path, "latency", 1, args.seconds)[1]))
        print(f"round {i + 1}: batch 8 {throughput[-1][0]:.0f} vs {throughput[-1][1]:.0f} img/s, batch 1 "
              f"{latency[-1][0]:.2f} ms ({latency[-1][1]:.2f} in OpenVINO) vs {latency[-1][2]:.2f} ms", file=sys.stderr,
              flush=True)
    ours8, theirs8 = (statistics.median(side) for side in zip(*throughput))
    wall1, ours1, theirs1 = (statistics.median(side) for side in zip(*latency))
    print(f"int8, batch 8 throughput: imgclass {ours8:.0f} img/s, benchmark_app {theirs8:.0f} img/s "
          f"({statistics.median(o / t for o, t in throughput):.0%}, median of {args.rounds} rounds' ratios)")
    print(f"int8, batch 1 median latency as OpenVINO times a request (benchmark_app's measure): imgclass "
          f"{ours1:.2f} ms, benchmark_app {theirs1:.2f} ms ({statistics.median(t / o for _, o, t in latency):.0%} "
          f"of benchmark_app's speed); a whole call of the engine from Python: {wall1:.2f} ms "
          f"({statistics.median(t / w for w, _, t in latency):.0%})")


if __name__ == "__main__":
    main()
