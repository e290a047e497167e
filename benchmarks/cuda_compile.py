"""Which CUDA inference path wins, compile time included: imgclass's engine (eager fp16
channels-last + hand-captured CUDA graphs) against torch.compile variants, same weights, same run.

    python benchmarks/cuda_compile.py [--batch 256]
"""
from __future__ import annotations

import argparse
import time

import torch

from imgclass.benchmark import median_seconds
from imgclass.models import get_spec
from imgclass.models.build import build_model
from imgclass.runtime.torch_cuda import TorchEngine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="efficientnet-lite0")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--modes", default="default,reduce-overhead", help="torch.compile modes to try")
    args = ap.parse_args()
    spec = get_spec(args.network)
    x = torch.randn(args.batch, 3, spec.preprocess.size, spec.preprocess.size, device="cuda")
    t = time.perf_counter()
    engine = TorchEngine(build_model(spec), spec.preprocess)
    engine.run_tensor(x)
    setup = time.perf_counter() - t
    s = median_seconds(lambda: engine.run_tensor(x), repeats=20, cuda=True)
    print(f"{'engine: eager fp16 CL + CUDA graph':<44} {args.batch / s:9.0f} img/s   setup {setup:6.1f} s")
    xh = x.half().contiguous(memory_format=torch.channels_last)
    for mode in args.modes.split(","):
        model = build_model(spec).cuda().half().to(memory_format=torch.channels_last).eval()
        torch._dynamo.reset()
        compiled = torch.compile(model, mode=mode)
        t = time.perf_counter()
        with torch.inference_mode():
            compiled(xh)
            compiled(xh)
            torch.cuda.synchronize()
            setup = time.perf_counter() - t
            s = median_seconds(lambda: compiled(xh), repeats=20, cuda=True)
        print(f"{'torch.compile mode=' + mode:<44} {args.batch / s:9.0f} img/s   setup {setup:6.1f} s")


if __name__ == "__main__":
    main()
