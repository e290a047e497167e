"""int8 against fp32 on the CPU, from photo files to classes, as `imgclass classify FOLDER --precision
int8` runs them (``Classifier.classify_files``: decode in threads ahead of the network), in turns in one
process: the median over rounds of int8's speed-up end to end, beside what bounds it (the CPU time each
image costs to decode and in each network, measured in the same rounds), and both precisions' top-1 on
the folder's ground_truth.tsv.

    python benchmarks/precision_end_to_end.py --folder ../shared/data/images --calibration ../shared/data/hymenoptera/train

On a machine shared with other jobs the wall times move with their load; the CPU times, and the ratios
of rounds measured back to back, move less.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import imgclass
from imgclass.media.decode import decode_files
from imgclass.media.inputs import list_images


def ground_truth(folder: Path) -> list[tuple[Path, set[int]]]:
    """(photo, its ImageNet classes) from ``folder/ground_truth.tsv`` (file, comma-separated classes, ...)."""
    rows = [line.split("\t") for line in (folder / "ground_truth.tsv").read_text().splitlines()[1:] if line.strip()]
    return [(folder / name, {int(c) for c in classes.split(",")}) for name, classes, *_ in rows]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, help="photos, with a ground_truth.tsv")
    ap.add_argument("--calibration", required=True, help="images that calibrate int8 (others than --folder's)")
    ap.add_argument("--rounds", type=int, default=15, help="rounds, each timing every step once, in turns")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    folder = Path(args.folder)
    paths = list_images(str(folder))
    nets = {"fp32": imgclass.Classifier(device="cpu"),
            "int8": imgclass.Classifier(device="cpu", precision="int8", calibration=args.calibration)}
    preprocess, n = nets["fp32"].preprocess, len(paths)

    def decoded() -> list:
        return [x for chunk in decode_files(paths, preprocess, args.batch) for _, x in chunk]

    x = preprocess.normalize(np.stack(decoded()))
    steps = {"decode (media.decode, threads)": decoded}
    for name, net in nets.items():
        steps[f"{name} network alone"] = lambda net=net: [net.probabilities(x[i:i + args.batch])
                                                          for i in range(0, n, args.batch)]
    for name, net in nets.items():
        steps[f"{name} end to end"] = lambda net=net: list(net.classify_files(paths, batch_size=args.batch))
    for step in steps.values():  # warm-up
        step()
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            w, c = timed(step)
            wall[name].append(w)
            cpu[name].append(c)

    ms = lambda values: statistics.median(values) / n * 1000  # noqa: E731
    print(f"{n} photos from {folder}, batch {args.batch}, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'step':<34} {'wall ms/photo':>14} {'CPU ms/photo':>13} {'img/s':>8}")
    for name in steps:
        print(f"{name:<34} {ms(wall[name]):>14.2f} {ms(cpu[name]):>13.2f} {n / statistics.median(wall[name]):>8.1f}")
    ratios = [f / i for f, i in zip(wall["fp32 end to end"], wall["int8 end to end"])]
    decode, fp32, int8 = (ms(cpu[k]) for k in ("decode (media.decode, threads)", "fp32 network alone",
                                               "int8 network alone"))
    print(f"int8 / fp32 end to end: {statistics.median(ratios):.2f}x (median of {len(ratios)} rounds, "
          f"{min(ratios):.2f}-{max(ratios):.2f}); network alone {fp32 / int8:.2f}x; ceiling with decode and network "
          f"sharing the cores, (decode + fp32) / (decode + int8) CPU: {(decode + fp32) / (decode + int8):.2f}x")
    truth = ground_truth(folder)
    for name, net in nets.items():
        top1 = [preds[0].index in classes for (_, classes), (_, preds, _) in
                zip(truth, net.classify_files([p for p, _ in truth]))]
        print(f"ground truth top-1, {name}: {sum(top1)}/{len(top1)}")


if __name__ == "__main__":
    main()
