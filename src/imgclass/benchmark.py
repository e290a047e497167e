"""Speed of a network on every device and runtime here, next to plain torch eager fp32 in the same
run: model-only images/s and latency at batch 1 and at a large batch, and end to end from JPEG
files. On CUDA it also reports the fraction of the card's memory-bandwidth and arithmetic ceilings.

Example:
    >>> for row in run_benchmark("efficientnet-lite0", folder="photos/"):  # doctest: +SKIP
    ...     print(row)
"""
from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from .classifier import Classifier
from .media.inputs import list_images
from .models import get_spec
from .models.build import build_model
from .runtime.precision import calibration_images, median_seconds_each
from .runtime.torch_cuda import TorchEngine, cuda_available


def median_seconds(fn: Callable[[], object], repeats: int = 10, warmup: int = 2, cuda: bool = False) -> float:
    """Median wall time of ``fn`` (synchronizing the device when ``cuda``)."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(device: str, runtime: str, mode: str, batch: int, seconds_per_batch: float, **extra) -> dict:
    return {"device": device, "runtime": runtime, "mode": mode, "batch": batch,
            "images_per_s": batch / seconds_per_batch, "latency_ms": seconds_per_batch * 1000, **extra}


def plain_torch_transform(network: str):
    p = get_spec(network).preprocess
    return transforms.Compose([transforms.Resize(round(p.size / p.crop_pct), transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(p.size), transforms.ToTensor(), transforms.Normalize(p.mean, p.std)])


def plain_end_to_end(model: torch.nn.Module, paths: list[Path], network: str, device: str, batch: int) -> float:
    """Seconds for the tutorial way: PIL decode + torchvision transforms + eager fp32, one batch at a time."""
    tf = plain_torch_transform(network)

    def go():
        with torch.inference_mode():
            for i in range(0, len(paths), batch):
                x = torch.stack([tf(Image.open(f).convert("RGB")) for f in paths[i:i + batch]]).to(device)
                torch.softmax(model(x), 1).cpu()
    return median_seconds(go, repeats=1, warmup=0, cuda=device == "cuda")


def cpu_classifiers(network: str, precisions: Sequence[str], calibration: str | None) -> dict[str, Classifier]:
    """fp32 and each of ``precisions`` ("bf16", "int8") that this CPU runs natively, by runtime label."""
    from .runtime.openvino import cpu_precisions
    nets = {"onnxruntime fp32": Classifier(network, device="cpu")}
    for precision in (p for p in precisions if p in cpu_precisions()):
        label = f"openvino {precision}"
        if precision == "int8":
            if calibration is None:
                continue
            label += f" (calibrated on {len(calibration_images(calibration, None))} images)"
        nets[label] = Classifier(network, device="cpu", precision=precision, calibration=calibration)
    return nets


def cpu_rows(network: str, paths: list[Path], batch: int, precisions: Sequence[str] = ("bf16", "int8"),
             calibration: str | None = None) -> Iterator[dict]:
    """ONNX Runtime fp32, the reduced precisions (OpenVINO) measured in turns with it (``vs_fp32``:
    their speed over fp32's in this run), and torch eager fp32: model-only and end to end, where the
    reduced ones also give their top-1 agreement with fp32 on the files."""
    nets = cpu_classifiers(network, precisions, calibration)
    model = build_model(get_spec(network))
    size = nets["onnxruntime fp32"].preprocess.size
    for n in (1, batch):
        x = np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32)
        seconds = median_seconds_each({label: partial(net.probabilities, x) for label, net in nets.items()})
        for label, s in seconds.items():
            yield row("cpu", label, "model", n, s, vs_fp32=seconds["onnxruntime fp32"] / s)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            yield row("cpu", "torch eager fp32", "model", n, median_seconds(lambda: model(xt), repeats=5))
    if paths:
        top1 = {label: [preds[0].index if isinstance(preds, list) else None
                        for _, preds, _ in net.classify_files(paths, batch_size=batch)] for label, net in nets.items()}
        seconds = median_seconds_each({label: lambda net=net: list(net.classify_files(paths, batch_size=batch))
                                       for label, net in nets.items()}, repeats=3, warmup=1)
        fp32 = seconds["onnxruntime fp32"]
        for label, s in seconds.items():
            agreement = float(np.mean(np.equal(top1[label], top1["onnxruntime fp32"])))
            yield row("cpu", f"imgclass ({label}, threaded decode)", "end-to-end", len(paths), s, vs_fp32=fp32 / s,
                      top1_agreement=agreement)
        yield row("cpu", "plain torch (PIL + eager fp32)", "end-to-end", len(paths),
                  plain_end_to_end(model, paths, network, "cpu", batch))


def cuda_ceilings() -> tuple[float, float]:
    """Measured (bytes/s of a device copy, counting read + write; bf16 matmul FLOP/s)."""
    a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy = median_seconds(lambda: b.copy_(a), cuda=True)
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm = median_seconds(lambda: m @ m, cuda=True)
    del a, b
    return 2 * (2 << 30) / copy, 2 * 8192 ** 3 / mm


def traffic_per_image(model: torch.nn.Module, size: int, dtype: torch.dtype) -> tuple[float, float]:
    """(FLOPs, bytes) per image: FLOPs counted by torch; bytes = every leaf layer's input and output
    activations read/written once at ``dtype`` (what an unfused network must move), weights excluded."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.randn(1, 3, size, size, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    moved = [0]

    def hook(module, inputs, output):
        moved[0] += sum(t.numel() for t in inputs if torch.is_tensor(t)) * x.element_size() + output.numel() * x.element_size()
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    for h in handles:
        h.remove()
    return counter.get_total_flops(), moved[0]


def cuda_rows(network: str, paths: list[Path], batch: int = 256) -> Iterator[dict]:
    spec = get_spec(network)
    size = spec.preprocess.size
    eager = build_model(spec).cuda()
    engine = TorchEngine(build_model(spec), spec.preprocess)
    bandwidth, flops_ceiling = cuda_ceilings()
    flops, moved = traffic_per_image(engine.model, size, engine.dtype)
    for n in (1, batch):
        x = torch.randn(n, 3, size, size, device="cuda")
        with torch.inference_mode():
            yield row("cuda", "torch eager fp32", "model", n, median_seconds(lambda: eager(x), cuda=True))
        s = median_seconds(lambda: engine.run_tensor(x), cuda=True)
        yield row("cuda", f"imgclass ({engine.name})", "model", n, s,
                  bandwidth_fraction=n * moved / s / bandwidth, flops_fraction=n * flops / s / flops_ceiling)
    if paths:
        reps = max(1, 5000 // len(paths) + 1)  # enough files for the GPU to reach a steady state
        many = paths * reps
        ours = median_seconds(lambda: list(engine.classify_files(many, batch_size=batch)), repeats=3, warmup=1, cuda=True)
        yield row("cuda", "imgclass (nvJPEG batched decode + GPU resize + engine)", "end-to-end", len(many), ours)
        yield row("cuda", "plain torch (PIL + eager fp32)", "end-to-end", len(paths),
                  plain_end_to_end(eager, paths, network, "cuda", batch))
    yield {"device": "cuda", "ceilings": {"copy_bytes_per_s": bandwidth, "bf16_flops_per_s": flops_ceiling},
           "per_image": {"flops": flops, "activation_bytes": moved}, "gpu": torch.cuda.get_device_name()}


def run_benchmark(network: str = "efficientnet-lite0", folder: str | None = None, devices: tuple[str, ...] = ("cpu", "cuda"),
                  cpu_batch: int = 8, cuda_batch: int = 256, precisions: Sequence[str] = ("bf16", "int8"),
                  calibration: str | None = None) -> Iterator[dict]:
    """Yield one result row at a time (dicts; see ``row``).

    ``precisions``: the reduced CPU precisions to measure beside fp32 (those this CPU has);
    ``calibration``: int8's calibration images (default: ``folder``'s).
    """
    paths = list_images(folder) if folder else []
    if "cpu" in devices:
        yield from cpu_rows(network, paths, cpu_batch, precisions, calibration or folder)
    if "cuda" in devices and cuda_available():
        yield from cuda_rows(network, paths, cuda_batch)
