"""CUDA back end: a torch module in fp16 (or bf16), channels-last, one CUDA graph per batch shape used
more than once, softmax inside the graph, large batches of unknown work compiled by torch.compile;
image files decoded in batches on the GPU (``media.gpu_decode``).

On an H200 (see BENCHMARKS.md) this network is bound by memory traffic and kernel launches, not
arithmetic: half precision halves the bytes, channels-last feeds the tensor cores without
transposes, inductor's fusion cuts the passes over activations (24k -> 38k img/s at batch 256,
for about 11-18 s of compile time, cached on disk), and a replayed CUDA graph removes launch gaps.

A cold command pays for all of this before its first image, so a folder job pays only for what it
repays (the seconds measured on the H100 machine, BENCHMARKS.md): a registry network loads as
TorchScript traced once and cached (timm's and torchvision's imports bring torch._dynamo, 4.4 s);
every batch runs at one padded shape, eagerly the first time and from a captured graph after; a
folder job never compiles (nvJPEG bounds it below the uncompiled network); and a small job decodes on
the CPU and runs without cuDNN, whose first call of each batch shape costs 2.2 s (it builds a kernel for
each depthwise convolution, 0.2 s each; torch's own kernels start in 0.3 s but run 4x slower).
"""
from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ImgclassError
from ..media.gpu_decode import GpuDecoder, resize_and_crop, start_nvjpeg
from ..models.registry import ModelSpec, Weights
from ..preprocess import Preprocess
from .base import host_decoded
from .cache import cache_dir, cache_key, engine_path, read_entry, unsealed, writable_dir, write_entry

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
COMPILE_FROM = 64  # smaller batches are launch-bound: a CUDA graph alone serves them, with no compile wait
# Below this many images a folder job is decoded by the CPU's threads (33 large photos: 0.17 s, where
# nvJPEG's start alone takes 0.63 s) and runs on torch's own convolutions (H100: 0.3 s to the first
# batch of 64, then 1.2k img/s; cuDNN: 2.2 s, then 16k img/s); from it on, nvJPEG and cuDNN repay their
# start (the two routes' times cross near 2,900 images of 224 px).
SMALL_JOB = 2000
FOLDER_BATCH = 256  # a folder job's batch size


def uses_cudnn(images: int) -> bool:
    """Whether a folder job of ``images`` files runs on cuDNN (and nvJPEG): see SMALL_JOB."""
    return images >= SMALL_JOB


def cuda_available() -> bool:
    """True when a CUDA device is usable (checks the driver's files first so CPU machines never import CUDA)."""
    return os.path.exists("/dev/nvidiactl") and torch.cuda.is_available()


def scripted_network(spec: ModelSpec, weights: Weights, cudnn: bool = True) -> nn.Module:
    """A registry network with its weights, as TorchScript traced once and cached: loading it takes
    a fraction of a second and imports neither timm nor torchvision, whose imports bring torch._dynamo
    (4.4 s of a cold start on the H100 machine). TorchScript is deprecated, but torch.export's
    programs load through torch._dynamo; where torch can no longer trace or load, the model is built.

    A trace fixes each convolution's use of cuDNN as it was when traced (the switch is an argument of
    the recorded op), so ``cudnn`` picks the trace: False for a small job (``uses_cudnn``).
    """
    from ..models.build import build_model

    size = spec.preprocess.size
    key = cache_key(weights.sha256, spec.arch, size, torch.__version__, "cudnn" if cudnn else "native")
    path = engine_path(spec.name, key, ".torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
        try:
            data = read_entry(path)
            if data is None:
                with _cudnn(cudnn):
                    traced = torch.jit.trace(build_model(spec, weights), torch.zeros(1, 3, size, size))
                out = io.BytesIO()
                torch.jit.save(traced, out)
                data = write_entry(path, out.getvalue())
            return torch.jit.load(io.BytesIO(unsealed(data)), map_location="cpu")
        except (AttributeError, RuntimeError):  # a torch without TorchScript
            return build_model(spec, weights)


@contextmanager
def _cudnn(enabled: bool) -> Iterator[None]:
    before = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = before


class TorchEngine:
    """Run a classifier on a CUDA device; batches of any size, probabilities out.

    Args:
        model: the network (logits out), in eval mode: a module or TorchScript (``scripted_network``).
        preprocess: its input settings (used by ``preprocess_files``).
        precision: "fp16" (default), "bf16" or "fp32".
        cuda_graphs: replay one captured graph per batch shape (removes launch overhead).
        compile: torch.compile batches of COMPILE_FROM and more in ``run`` (unknown work: the API, a
            server, ``imgclass benchmark``; inductor's cache lives under imgclass's cache, keyed by
            card, torch version and precision); never in ``classify_files``, nor TorchScript.
        max_batch: largest batch run at once; bigger inputs are split.
        folder_job: the number of files of the folder job the engine is built for (``select_engine``):
            the first forward then runs at that job's batch shape, so that cuDNN plans for one shape, not
            two (a trace with cuDNN pays 1.3-4 s for each new shape on the H100 machine). A large job
            (``uses_cudnn``) makes that plan, and sets up nvJPEG, in threads while its first files are
            read (the number of outputs then comes from a forward on the CPU, before the network moves
            to the GPU: milliseconds).

    Example:
        >>> engine = TorchEngine(build_model(get_spec("efficientnet-lite0")), spec.preprocess)  # doctest: +SKIP
        >>> probs = engine.run(batch)                                                          # (N, 1000)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, device: str = "cuda", precision: str = "fp16",
                 cuda_graphs: bool = True, compile: bool = True, max_batch: int = 256,
                 folder_job: int | None = None):
        if not torch.cuda.is_available():
            raise ImgclassError("--device cuda: no CUDA device is visible to torch; use --device cpu")
        self.device, self.dtype, self.precision = torch.device(device), DTYPES[precision], precision
        self.metadata, self.input_size, self.decodes_files = {}, preprocess.size, True
        self.preprocess, self.max_batch, self.cuda_graphs = preprocess, max_batch, cuda_graphs
        self.model = model.eval()
        # compiled on first need (importing dynamo alone takes seconds); TorchScript never (dynamo does not trace it)
        self._scripted = isinstance(model, torch.jit.ScriptModule)
        self.compile, self._compiled, self._planned = compile and not self._scripted, None, None
        large = folder_job is not None and uses_cudnn(folder_job)
        if large:  # outputs counted on the CPU: on the GPU this forward would wait for cuDNN's plan
            with torch.inference_mode():
                self.num_outputs = self._forward(torch.zeros(1, 3, preprocess.size, preprocess.size)).shape[1]
        self.model = self.model.to(self.device, self.dtype, memory_format=torch.channels_last)
        shape = self.job_shape(folder_job) if folder_job is not None else 1
        first = torch.zeros(shape, 3, preprocess.size, preprocess.size, device=self.device,
                            dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        if large:
            start_nvjpeg(self.device)
            planner = ThreadPoolExecutor(1, thread_name_prefix="cudnn-plan")
            self._planned = planner.submit(self._plan, first)
            planner.shutdown(wait=False)  # its thread ends with the plan
        else:
            with torch.inference_mode(), _cudnn(False):  # an eager module runs it on torch's kernels: no cuDNN start
                self.num_outputs = self._forward(first).shape[1]
        self.mean = torch.tensor(preprocess.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(preprocess.std, device=self.device).view(1, 3, 1, 1) * 255)
        self._graphs: dict[tuple[int, bool, bool], tuple[torch.Tensor, torch.Tensor, torch.cuda.CUDAGraph]] = {}
        self._seen: Counter[tuple[int, bool, bool]] = Counter()

    @property
    def name(self) -> str:
        extras = (" + torch.compile" if self.compile else "") + (" + CUDA graphs" if self.cuda_graphs else "")
        return f"torch {self.precision} channels-last{extras} on {torch.cuda.get_device_name(self.device)}"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._scripted:
            with torch.jit.optimized_execution(False):  # as traced: no profiling runs, no fuser compiling kernels
                return torch.softmax(self.model(x).float(), dim=1)
        return torch.softmax(self.model(x).float(), dim=1)

    @torch.inference_mode()  # (a thread's own mode: set in the thread)
    def _plan(self, first: torch.Tensor) -> None:
        self._forward(first)
        torch.cuda.current_stream(self.device).synchronize()

    def _bucket(self, n: int) -> int:
        """Batch sizes round up to a power of two, so a handful of graphs serve every size."""
        return min(self.max_batch, 1 << (n - 1).bit_length())

    def job_shape(self, images: int, batch_size: int = FOLDER_BATCH) -> int:
        """The one padded batch shape of a folder job of ``images`` files."""
        return self._bucket(min(batch_size, images or 1))

    def _forward_for(self, compiled: bool):
        if not compiled:
            return self._forward
        if self._compiled is None:
            key = cache_key(torch.cuda.get_device_name(self.device), torch.__version__, self.precision)
            inductor = cache_dir() / "inductor" / key
            # inductor fails on a folder it cannot write: then it keeps its own temp folder
            if "TORCHINDUCTOR_CACHE_DIR" not in os.environ and writable_dir(inductor):
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
            self._compiled = torch.compile(self._forward, dynamic=False)
        return self._compiled

    def _graph(self, key: tuple[int, bool, bool]):
        if key not in self._graphs:
            size, compiled, _ = key
            forward = self._forward_for(compiled)
            static_in = torch.zeros(size, 3, self.preprocess.size, self.preprocess.size, device=self.device,
                                    dtype=self.dtype).contiguous(memory_format=torch.channels_last)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm up outside the capture, as CUDA graphs require
                forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the GPU decoder's thread allocates and decodes while this one captures; in the
            # default global mode that invalidated the capture, at random (a 5,760-file job on the H100).
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = forward(static_in)
            self._graphs[key] = (static_in, static_out, graph)
        return self._graphs[key]

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor, compile: bool = True, cudnn: bool = True, size: int | None = None
                   ) -> torch.Tensor:
        """Normalized NCHW batch on the device -> (N, classes) float32 probabilities on the device.

        Every chunk runs at one padded shape, ``size`` (default: its size rounded up to a power of two):
        the first time eagerly, then from a graph captured at that shape (a capture costs forwards that a
        shape used once never repays; a new shape costs cuDNN a start). A compiled shape is captured at
        once. ``compile``: False keeps torch.compile out; ``cudnn``: False runs torch's own kernels.
        """
        if self._planned is not None:  # a large job's cuDNN plan, made in a thread while its files were read
            self._planned.result()
            self._planned = None
        outs = []
        with _cudnn(cudnn):
            for chunk in x.split(self.max_batch):
                n = len(chunk)
                shape = max(size or 0, self._bucket(n))
                key = (shape, compile and self.compile and shape >= COMPILE_FROM, cudnn)
                self._seen[key] += 1
                if not self.cuda_graphs or (not key[1] and self._seen[key] == 1):
                    padded = torch.zeros(shape, *chunk.shape[1:], device=self.device, dtype=self.dtype)
                    padded[:n] = chunk
                    outs.append(self._forward_for(key[1])(padded.contiguous(memory_format=torch.channels_last))[:n])
                    continue
                static_in, static_out, graph = self._graph(key)
                static_in[:n].copy_(chunk)
                graph.replay()
                outs.append(static_out[:n].clone())
        return torch.cat(outs)

    def run(self, batch: np.ndarray, compile: bool = True, cudnn: bool = True, size: int | None = None) -> np.ndarray:
        """NCHW float32 host batch -> (N, classes) probabilities, like the ONNX Runtime engine
        (the options as ``run_tensor``'s)."""
        x = torch.from_numpy(batch).pin_memory().to(self.device, non_blocking=True)
        return self.run_tensor(x, compile, cudnn, size).cpu().numpy()

    @torch.inference_mode()
    def preprocess_uint8(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded CHW uint8 device images of any sizes -> normalized NCHW batch (see ``resize_and_crop``)."""
        x = resize_and_crop(images, self.preprocess, self.dtype)
        if self.preprocess.channel_order == "bgr":
            x = x.flip(1)
        return ((x - self.mean.to(self.dtype)) * self.inv_std.to(self.dtype)).contiguous(memory_format=torch.channels_last)

    def classify_files(self, paths: Sequence[Path], batch_size: int = FOLDER_BATCH, workers: int = 8
                       ) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
        """Probabilities for image files, decoded in batches on the GPU (``GpuDecoder``), or by the CPU's
        threads for fewer than SMALL_JOB files; yields ``(path, probs)`` or ``(path, error)`` in order."""
        size = self.job_shape(len(paths), batch_size)
        if not uses_cudnn(len(paths)):
            yield from host_decoded(lambda batch: self.run(batch, compile=False, cudnn=False, size=size), paths,
                                    self.preprocess, size, os.cpu_count())
            return
        in_flight = None  # results of the previous batch, still being computed and copied back
        # Three stages overlap: file reads (threads), nvJPEG decode of the next batch (its own thread,
        # its own streams), and resize + network + copy-back of this one (here, on the default stream).
        for batch_paths, images in GpuDecoder(self.device, workers).batches(paths, batch_size):
            good = [i for i, im in enumerate(images) if not isinstance(im, ImgclassError)]
            probs = None
            if good:  # queue this batch on the GPU before waiting for the last one: CPU and GPU overlap
                on_device = self.run_tensor(self.preprocess_uint8([images[i] for i in good]), compile=False, size=size)
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
