"""CUDA back end: a torch module in fp16 (or bf16), channels-last, one CUDA graph per batch size,
softmax inside the graph, large batches compiled by torch.compile; and batched JPEG decode +
preprocessing on the GPU.

On an H200 (see BENCHMARKS.md) this network is bound by memory traffic and kernel launches, not
arithmetic: half precision halves the bytes, channels-last feeds the tensor cores without
transposes, inductor's fusion cuts the passes over activations (24k -> 38k img/s at batch 256,
for about 11-18 s of compile time, cached on disk), and a replayed CUDA graph removes launch gaps.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.ops import roi_align

from ..errors import ImgclassError
from ..media.images import open_image
from ..parallel import prefetched
from ..preprocess import Preprocess
from .cache import cache_dir, cache_key, writable_dir

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# nvJPEG batches decoded side by side. On the H200 end to end (benchmarks/cuda_end_to_end.py, one run):
# 1 thread 5,172-5,599 img/s, 2: 5,083-5,316, 4: 4,262-5,178, 8: 4,639-4,707 (an earlier session
# measured 4 threads best for decode alone; BENCHMARKS.md).
DECODE_THREADS = 1
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
        >>> probs = engine.run(batch)                                                          # (N, 1000)
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, device: str = "cuda", precision: str = "fp16",
                 cuda_graphs: bool = True, compile: bool = True, max_batch: int = 256):
        if not torch.cuda.is_available():
            raise ImgclassError("--device cuda: no CUDA device is visible to torch; use --device cpu")
        self.device, self.dtype, self.precision = torch.device(device), DTYPES[precision], precision
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


class GpuDecoder:
    """Image files -> decoded CHW uint8 tensors on the GPU, a batch at a time: bytes read in threads,
    JPEGs decoded by nvJPEG in DECODE_THREADS parts side by side (each on its own stream, so waiting
    for it never waits for other GPU work), other formats decoded on the CPU and uploaded.

    Example:
        >>> for paths, images in GpuDecoder("cuda").batches(files, 256):  # doctest: +SKIP
        ...     pixels = resize_and_crop(images, preprocess)
    """

    def __init__(self, device: str | torch.device = "cuda", workers: int = 8):
        self.device, self.workers = torch.device(device), workers

    def batches(self, paths: Sequence[Path], batch_size: int = 256) -> Iterator[tuple[list[Path], list]]:
        """Yield ``(paths, images)`` per batch, in order; a file that cannot be read or decoded gives its
        ImgclassError in place of the image. The next batch decodes while the caller uses this one."""
        with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(DECODE_THREADS) as decoders, \
                ThreadPoolExecutor(1) as decode_stage:
            def decode(chunk: list) -> tuple[list[Path], list]:
                batch_paths = [path for path, _ in chunk]
                return batch_paths, self._decode(batch_paths, [data for _, data in chunk], decoders)

            reads = prefetched(pool, lambda path: (Path(path), _read(Path(path))), iter(paths), ahead=2 * batch_size)
            for [decoded] in prefetched(decode_stage, decode, reads, ahead=2):
                yield decoded

    def _decode(self, paths: Sequence[Path], raw: list, decoders: ThreadPoolExecutor) -> list:
        jpeg = [i for i, r in enumerate(raw) if isinstance(r, torch.Tensor) and r.ndim == 1]
        out = [r.to(self.device) if isinstance(r, torch.Tensor) and r.ndim == 3 else r for r in raw]
        step = -(-len(jpeg) // DECODE_THREADS) if jpeg else 1
        parts = [jpeg[i:i + step] for i in range(0, len(jpeg), step)]
        for part, decoded in zip(parts, decoders.map(lambda part: self._decode_jpegs([paths[i] for i in part],
                                                                                    [raw[i] for i in part]), parts)):
            for i, img in zip(part, decoded):
                out[i] = img
        return out

    def _decode_jpegs(self, paths: Sequence[Path], raw: list[torch.Tensor]) -> list:
        stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            try:
                decoded = decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one corrupt file fails the batch: decode one by one to find it
                decoded = [self._decode_one(path, data) for path, data in zip(paths, raw)]
        stream.synchronize()  # done before another thread uses the pixels
        return decoded

    def _decode_one(self, path: Path, data: torch.Tensor) -> torch.Tensor | ImgclassError:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as e:
            return ImgclassError(f"{path}: corrupt or truncated JPEG ({str(e).splitlines()[0]})")


def _read(path: Path) -> torch.Tensor | ImgclassError:
    """A JPEG's bytes (1-D uint8, for nvJPEG), another format decoded on the CPU (CHW uint8), or the error."""
    try:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            return read_file(str(path))
        return torch.from_numpy(np.array(open_image(path))).permute(2, 0, 1)
    except ImgclassError as e:
        return e
    except (OSError, RuntimeError) as e:
        return ImgclassError(f"{path}: cannot read ({e})")


@torch.inference_mode()
def resize_and_crop(images: Sequence[torch.Tensor], preprocess: Preprocess, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """Decoded CHW uint8 device images of any sizes -> NCHW ``dtype`` batch of their resized center
    crops (``preprocess``'s geometry), on the 0..255 scale, in a few kernels.

    Images are pasted into padded canvases and each one's crop window (the center crop of the resized
    image, mapped back to source pixels) is resampled by one batched ``roi_align``, which averages
    ceil(source/target) samples per output pixel: an antialiased resize + crop for many images at
    once instead of several kernels per image.
    """
    return torch.cat([_resample(group, preprocess, dtype) for group in _canvas_groups(images)])


def _resample(images: Sequence[torch.Tensor], p: Preprocess, dtype: torch.dtype) -> torch.Tensor:
    device = images[0].device
    h_max, w_max = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    canvas = torch.zeros(len(images), 3, h_max, w_max, dtype=dtype, device=device)
    boxes = []
    for i, im in enumerate(images):
        h, w = im.shape[1:]
        canvas[i, :, :h, :w] = im
        im.record_stream(torch.cuda.current_stream())  # decoded on a side stream: keep it until this copy ran
        rw, rh = p.resized_size(w, h)
        sx, sy = w / rw, h / rh
        left, top = (rw - p.size) // 2, (rh - p.size) // 2
        boxes.append((i, left * sx, top * sy, (left + p.size) * sx, (top + p.size) * sy))
    boxes = torch.tensor(boxes, dtype=dtype).to(device, non_blocking=True)
    return roi_align(canvas, boxes, output_size=p.size, sampling_ratio=-1, aligned=True)


def decode_to_pixels(paths: Sequence[Path], preprocess: Preprocess, device: str | torch.device = "cuda",
                     batch_size: int = 256) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
    """Image files -> their resized center crops as HxWx3 uint8 RGB host arrays (what
    ``Preprocess.resize_and_crop`` gives on the CPU), decoded and resampled on the GPU; yields
    ``(path, pixels)`` or ``(path, error)`` in order. Training's decode-once step on CUDA.
    """
    for batch_paths, images in GpuDecoder(device).batches(paths, batch_size):
        good = [i for i, im in enumerate(images) if not isinstance(im, ImgclassError)]
        crops = {}
        if good:
            x = resize_and_crop([images[i] for i in good], preprocess).round().clamp(0, 255)
            crops = dict(zip(good, x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()))
        for i, path in enumerate(batch_paths):
            yield path, crops.get(i, images[i])


def _record_event() -> torch.cuda.Event:
    event = torch.cuda.Event()
    event.record()
    return event


def _results(paths, images, good, probs, event) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
    event.synchronize()
    row = dict(zip(good, probs.numpy())) if good else {}
    for i, path in enumerate(paths):
        yield path, row[i] if i in row else images[i]


def _canvas_groups(images: Sequence[torch.Tensor], max_elements: int = 1 << 28) -> Iterator[list[torch.Tensor]]:
    """Split a batch, in order, so no padded canvas exceeds ``max_elements`` (roi_align indexes
    with 32-bit integers: a batch of large photos in one canvas overflows them)."""
    group: list[torch.Tensor] = []
    h_max = w_max = 0
    for im in images:
        h, w = max(h_max, im.shape[1]), max(w_max, im.shape[2])
        if group and (len(group) + 1) * 3 * h * w > max_elements:
            yield group
            group, h, w = [], im.shape[1], im.shape[2]
        group.append(im)
        h_max, w_max = h, w
    if group:
        yield group
