"""Where end-to-end GPU folder classification spends its time: file reads, nvJPEG decode, GPU
resize/crop, the network; each stage timed alone (synchronized), same files, same run.

    python benchmarks/cuda_folder_stages.py --folder "hymenoptera/val/*/*.jpg" [--repeat 40]
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from imgclass.media.inputs import list_images
from imgclass.models import get_spec
from imgclass.models.build import build_model
from imgclass.runtime.torch_cuda import TorchEngine


def timed(label: str, n: int, fn) -> object:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    dt = time.perf_counter() - start
    print(f"{label:<48} {n / dt:9.0f} img/s  ({dt:.2f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    paths = [str(p) for p in list_images(args.folder)] * args.repeat
    spec = get_spec("efficientnet-lite0")
    engine = TorchEngine(build_model(spec), spec.preprocess)
    engine.run_tensor(torch.zeros(args.batch, 3, 224, 224, device="cuda"))  # compile + graph outside the timings
    batches = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
    with ThreadPoolExecutor(8) as pool:
        raw = timed("read bytes (8 threads)", len(paths), lambda: [list(pool.map(read_file, b)) for b in batches])
    decoded = timed("nvJPEG batched decode", len(paths),
                    lambda: [decode_jpeg(r, mode=ImageReadMode.RGB, device="cuda") for r in raw])
    with ThreadPoolExecutor(4) as pool:
        threaded = timed("nvJPEG batched decode, 4 threads at once", len(paths),
                         lambda: list(pool.map(lambda r: decode_jpeg(r, mode=ImageReadMode.RGB, device="cuda"), raw)))
    same = all(torch.equal(a, b) for x, y in zip(decoded, threaded) for a, b in zip(x, y))
    print(f"threaded decode gives the same pixels: {same}")
    x = timed("GPU resize + crop (roi_align) + normalize", len(paths), lambda: [engine.preprocess_uint8(d) for d in decoded])
    timed("network (compiled, CUDA graph)", len(paths), lambda: [engine.run_tensor(b) for b in x])
    timed("all of it: engine.classify_files", len(paths), lambda: list(engine.classify_files(paths, args.batch)))


if __name__ == "__main__":
    main()
