"""CUDA back end: a torch module in fp16 (or bf16), channels-last, one CUDA graph per batch size,
softmax inside the graph, large batches compiled by torch.compile; image files decoded in batches
on the GPU (``media.gpu_decode``).

On an H200 (see BENCHMARKS.md) this network is bound by memory traffic and kernel launches, not
arithmetic: half precision halves the bytes, channels-last feeds the tensor cores without
transposes, inductor's fusion cuts the passes over activations (24k -> 38k img/s at batch 256,
for about 11-18 s of compile time, cached on disk), and a replayed CUDA graph removes launch gaps.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ImgclassError
from ..media.gpu_decode import GpuDecoder, resize_and_crop
from ..preprocess import Preprocess
from .cache import cache_dir, cache_key, writable_dir

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
COMPILE_FROM = 64  # smaller batches are launch-bound: a CUDA graph alone serves them, with no compile wait


def cuda_available() -> bool:
    """True when a CUDA device is usable (checks the driver's files first so CPU machines never import CUDA)."""
    return os.path.exists("/dev/nvidiactl") and torch.cuda.is_available()


class TorchEngine:
    """Run a classifier on a CUDA device; batches of any size, probabilities out.

    Args:
        model: the network (logits out), in eval mode.
        preprocess: its input settings (used by ``preprocess_files``).
        precision: "fp16" (default), "bf16" or "fp32".
        cuda_graphs: replay one captured graph per batch-size bucket (removes launch overhead).
        compile: torch.compile batches of COMPILE_FROM and more (inductor's cache lives under
            imgclass's cache, keyed by card, torch version and precision).
        max_batch: largest batch run at once; bigger inputs are split.

    Example:
        >>> engine = TorchEngine(build_model(get_spec("efficientnet-lite0")), spec.preprocess)  # doctest: +SKIP
        >>> probs = engine.run(batch)                                                          # (N, 1000)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, device: str = "cuda", precision: str = "fp16",
                 cuda_graphs: bool = True, compile: bool = True, max_batch: int = 256):
        if not torch.cuda.is_available():
            raise ImgclassError("--device cuda: no CUDA device is visible to torch; use --device cpu")
        self.device, self.dtype, self.precision = torch.device(device), DTYPES[precision], precision
        self.metadata, self.input_size, self.decodes_files = {}, preprocess.size, True
        self.preprocess, self.max_batch, self.cuda_graphs = preprocess, max_batch, cuda_graphs
        self.model = model.eval().to(self.device, self.dtype, memory_format=torch.channels_last)
        self._compiled = None
        if compile:
            key = cache_key(torch.cuda.get_device_name(self.device), torch.__version__, precision)
            inductor = cache_dir() / "inductor" / key
            # inductor fails on a folder it cannot write: then it keeps its own temp folder
            if "TORCHINDUCTOR_CACHE_DIR" not in os.environ and writable_dir(inductor):
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
            self._compiled = torch.compile(self._forward, dynamic=False)
        with torch.inference_mode():
            self.num_outputs = self.model(torch.zeros(1, 3, preprocess.size, preprocess.size, device=self.device,
                                                      dtype=self.dtype)).shape[1]
        self.mean = torch.tensor(preprocess.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(preprocess.std, device=self.device).view(1, 3, 1, 1) * 255)
        self._graphs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.cuda.CUDAGraph]] = {}

    @property
    def name(self) -> str:
        extras = (" + torch.compile" if self._compiled else "") + (" + CUDA graphs" if self.cuda_graphs else "")
        return f"torch {self.precision} channels-last{extras} on {torch.cuda.get_device_name(self.device)}"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)

    def _bucket(self, n: int) -> int:
        """Batch sizes round up to a power of two, so a handful of graphs serve every size."""
        return min(self.max_batch, 1 << (n - 1).bit_length())

    def _forward_for(self, n: int):
        return self._compiled if self._compiled is not None and n >= COMPILE_FROM else self._forward

    def _graph(self, n: int):
        if n not in self._graphs:
            forward = self._forward_for(n)
            static_in = torch.zeros(n, 3, self.preprocess.size, self.preprocess.size, device=self.device,
                                    dtype=self.dtype).contiguous(memory_format=torch.channels_last)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm up outside the capture, as CUDA graphs require
                for _ in range(2):
                    forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = forward(static_in)
            self._graphs[n] = (static_in, static_out, graph)
        return self._graphs[n]

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized NCHW batch on the device -> (N, classes) float32 probabilities on the device."""
        outs = []
        for chunk in x.split(self.max_batch):
            n = len(chunk)
            if not self.cuda_graphs:
                outs.append(self._forward_for(n)(chunk.to(self.dtype).contiguous(memory_format=torch.channels_last)))
                continue
            static_in, static_out, graph = self._graph(self._bucket(n))
            static_in[:n].copy_(chunk)
            graph.replay()
            outs.append(static_out[:n].clone())
        return torch.cat(outs)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 host batch -> (N, classes) probabilities, like the ONNX Runtime engine."""
        x = torch.from_numpy(batch).pin_memory().to(self.device, non_blocking=True)
        return self.run_tensor(x).cpu().numpy()

    @torch.inference_mode()
    def preprocess_uint8(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded CHW uint8 device images of any sizes -> normalized NCHW batch (see ``resize_and_crop``)."""
        x = resize_and_crop(images, self.preprocess, self.dtype)
        if self.preprocess.channel_order == "bgr":
            x = x.flip(1)
        return ((x - self.mean.to(self.dtype)) * self.inv_std.to(self.dtype)).contiguous(memory_format=torch.channels_last)

    def classify_files(self, paths: Sequence[Path], batch_size: int = 256, workers: int = 8
                       ) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
        """Probabilities for image files, decoded in batches on the GPU (``GpuDecoder``); yields
        ``(path, probs)`` or ``(path, error)`` in order."""
        in_flight = None  # results of the previous batch, still being computed and copied back
        # Three stages overlap: file reads (threads), nvJPEG decode of the next batch (its own thread,
        # its own streams), and resize + network + copy-back of this one (here, on the default stream).
        for batch_paths, images in GpuDecoder(self.device, workers).batches(paths, batch_size):
            good = [i for i, im in enumerate(images) if not isinstance(im, ImgclassError)]
            probs = None
            if good:  # queue this batch on the GPU before waiting for the last one: CPU and GPU overlap
                on_device = self.run_tensor(self.preprocess_uint8([images[i] for i in good]))
                probs = torch.empty(on_device.shape, pin_memory=True)
                probs.copy_(on_device, non_blocking=True)
            done, in_flight = in_flight, (batch_paths, images, good, probs, _record_event())
            if done:
                yield from _results(*done)
        if in_flight:
            yield from _results(*in_flight)


def _record_event() -> torch.cuda.Event:
    event = torch.cuda.Event()
    event.record()
    return event


def _results(paths, images, good, probs, event) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
    event.synchronize()
    row = dict(zip(good, probs.numpy())) if good else {}
    for i, path in enumerate(paths):
        yield path, row[i] if i in row else images[i]
