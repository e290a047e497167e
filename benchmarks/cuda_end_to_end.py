"""End-to-end GPU folder classification (``TorchEngine.classify_files``: reads, nvJPEG decode, GPU
resize/crop, network) in steady state, for each number of nvJPEG decode threads and batch size: the
measurement behind ``DECODE_THREADS``.

    python benchmarks/cuda_end_to_end.py "hymenoptera/val/*/*.jpg" --repeat 33
"""
from __future__ import annotations

import argparse
import time

import torch

import imgclass.media.gpu_decode as gpu_decode
import imgclass.runtime.torch_cuda as torch_cuda
from imgclass.media.inputs import list_images
from imgclass.models import get_spec
from imgclass.models.registry import read_weights
from imgclass.runtime.torch_cuda import SMALL_JOB, scripted_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--repeat", type=int, default=33, help="the folder's files repeated, for a steady state")
    args = ap.parse_args()
    files = list_images(args.folder) * args.repeat
    spec = get_spec("efficientnet-lite0")
    engine = torch_cuda.TorchEngine(scripted_network(spec, read_weights(spec)), spec.preprocess)  # a folder job's network
    list(engine.classify_files(files[:SMALL_JOB], 256))  # graphs, cuDNN and nvJPEG warm, outside the timings
    for threads in (1, 2, 4):
        for batch in (256, 512):
            gpu_decode.DECODE_THREADS = threads
            best = 0.0
            for _ in range(2):
                torch.cuda.synchronize()
                start = time.perf_counter()
                n = sum(1 for _ in engine.classify_files(files, batch))
                torch.cuda.synchronize()
                best = max(best, n / (time.perf_counter() - start))
            print(f"DECODE_THREADS={threads} batch={batch}: {best:.0f} img/s end to end ({len(files)} files, best of 2)",
                  flush=True)


if __name__ == "__main__":
    main()
