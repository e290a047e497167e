"""Where a cold CUDA process spends its seconds before its first images, step by step, in one fresh
process: first what the engine's small-job route pays (torchvision's ops loaded without the package,
the cached TorchScript network, torch's own convolutions, a CPU decode), then what a plain torch
program pays on top (torchvision's and timm's imports, the model built, cuDNN's start for each batch
shape, nvJPEG's start). Run it twice: the first run traces the network into the cache.

    python benchmarks/cuda_cold_start.py ../shared/data/images
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from imgclass.runtime.machine import seconds_since_start

last = time.perf_counter()


def step(name: str) -> None:
    """Print the seconds since the previous step (the GPU synchronized first where it was used)."""
    global last
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        sys.modules["torch"].cuda.synchronize()
    now = time.perf_counter()
    print(f"{name:<60} {now - last:7.3f} s", flush=True)
    last = now


def main() -> None:
    print(f"{'python start to main':<60} {seconds_since_start():7.3f} s")
    folder = Path(sys.argv[1])
    import torch
    step("import torch")
    torch.zeros(1, device="cuda")
    step("CUDA context (the floor: import torch + this)")
    from imgclass.media.decode import decode_files
    from imgclass.media.gpu_decode import _read, resize_and_crop
    from imgclass.models import get_spec
    from imgclass.models.registry import read_weights
    from imgclass.runtime.torch_cuda import scripted_network
    step("imgclass's CUDA modules (torchvision's ops, not the package)")
    spec = get_spec("efficientnet-lite0")
    net = scripted_network(spec, read_weights(spec)).to("cuda", torch.float16, memory_format=torch.channels_last)
    step("the cached TorchScript network, to the GPU in fp16")
    files = sorted(folder.glob("*.jpg"))
    n = sum(len(chunk) for chunk in decode_files(files, spec.preprocess, 64, 16))
    step(f"CPU decode of {n} JPEGs (media.decode, 16 threads)")
    x = torch.zeros(64, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        torch.backends.cudnn.enabled = False
        net(x)
        step("first forward, batch 64, torch's own kernels (no cuDNN)")
        torch.backends.cudnn.enabled = True
        net(x)
        step("first forward, batch 64, cuDNN (its start + plans for this shape)")
        net(x[:32])
        step("first forward, batch 32, cuDNN (a new shape)")
        net(x[:32])
        step("second forward, batch 32, cuDNN")
    raw = [_read(f) for f in files]
    torch.ops.image.decode_jpegs_cuda(raw[:1], 3, "cuda")
    step("nvJPEG's first decode (one file)")
    images = torch.ops.image.decode_jpegs_cuda(raw, 3, "cuda")
    step(f"nvJPEG, {len(raw)} JPEGs")
    resize_and_crop(images, spec.preprocess, torch.float16)
    step("resize + crop on the GPU (roi_align)")
    import torchvision  # noqa: F401
    step("import torchvision (brings torch._dynamo)")
    import timm  # noqa: F401
    step("import timm (after torchvision)")
    from imgclass.models.build import build_model
    build_model(spec)
    step("build the model with timm, weights read")
    print(f"{'total since process start':<60} {seconds_since_start():7.3f} s")


if __name__ == "__main__":
    main()
