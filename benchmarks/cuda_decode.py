"""JPEG decode on the GPU, on one folder of photos in one run: torchvision's nvJPEG (CUDA cores;
batched, in DECODE_THREADS parts as imgclass does) against nvImageCodec with the hardware decoder
(the NVJPG engines of an A100/H100/H200) and with its default backends.

    python benchmarks/cuda_decode.py ../shared/data/hymenoptera/val --images 5000
"""
from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--images", type=int, default=5000, help="files decoded per pass (the folder repeated)")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    files = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    blobs = [p.read_bytes() for p in files]
    blobs = (blobs * (args.images // len(blobs) + 1))[:args.images]
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    batches = [tensors[i:i + args.batch] for i in range(0, len(tensors), args.batch)]
    print(f"{len(files)} files, {args.images} decodes per pass, batch {args.batch}, {torch.cuda.get_device_name()}")

    def torchvision_threads(threads: int):
        def run():
            with ThreadPoolExecutor(threads) as pool:
                def part(chunk):
                    stream = torch.cuda.Stream()
                    with torch.cuda.stream(stream):
                        out = decode_jpeg(chunk, mode=ImageReadMode.RGB, device="cuda")
                    stream.synchronize()
                    return out
                for batch in batches:
                    step = -(-len(batch) // threads)
                    list(pool.map(part, [batch[i:i + step] for i in range(0, len(batch), step)]))
        return run

    rows = {f"torchvision nvJPEG, {t} thread(s)": torchvision_threads(t) for t in (1, 4)}
    try:
        from nvidia import nvimgcodec
        # Hardware first; what it cannot take (progressive, some subsamplings) falls to the CUDA decoder.
        kinds = {"hardware, then CUDA": [nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY),
                                         nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY)],
                 "default backends": None}
        for name, backends in kinds.items():
            decoder = nvimgcodec.Decoder(backends=backends) if backends else nvimgcodec.Decoder()
            params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB)
            raw = [blobs[i:i + args.batch] for i in range(0, len(blobs), args.batch)]

            def run(decoder=decoder, raw=raw, params=params):
                for batch in raw:
                    images = decoder.decode(batch, params=params)
                    [torch.as_tensor(im, device="cuda") for im in images if im is not None]
            rows[f"nvImageCodec {nvimgcodec.__version__}, {name}"] = run
    except ImportError as e:
        print(f"nvImageCodec not installed ({e}): pip install nvidia-nvimgcodec-cu13[nvjpeg]")
    for name, fn in rows.items():
        fn()  # warm-up: decoder state, allocations
        seconds = best_of(fn)
        print(f"{name:<48} {args.images / seconds:>9.0f} img/s")


if __name__ == "__main__":
    main()
