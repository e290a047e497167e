"""Image files decoded and resized on a CUDA GPU, a batch at a time: nvJPEG for JPEGs, the CPU
decode (``media.images.open_image``) uploaded for other formats, and one batched ``roi_align`` for
the resize + crop. The GPU side of ``media.decode``; imports torch.
"""
from __future__ import annotations

import importlib.util
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ImgclassError
from ..parallel import Prefetch, prefetched
from ..preprocess import Preprocess
from .images import open_image, read_file

RGB = 3  # torchvision's ImageReadMode.RGB


def _load_torchvision_ops() -> None:
    """Register torchvision's nvJPEG decode and roi_align (``torch.ops.image``, ``torch.ops.torchvision``)
    from its two extension libraries, as torchvision's own loader does, without importing the package:
    ``import torchvision`` imports torch._dynamo with it (3.9 s of a cold command on the H100 machine,
    BENCHMARKS.md); the libraries load in milliseconds. Elsewhere (no such files), the package loads them."""
    spec = importlib.util.find_spec("torchvision")
    folder = Path(spec.origin).parent if spec is not None and spec.origin else None
    try:
        for pattern in ("_C*.so", "image*.so"):
            for library in sorted(folder.glob(pattern)) if folder else ():
                torch.ops.load_library(str(library))
        torch.ops.image.decode_jpegs_cuda, torch.ops.torchvision.roi_align  # noqa: B018 (both registered?)
    except (OSError, AttributeError, RuntimeError):
        import torchvision  # noqa: F401 (the package loads both)


_load_torchvision_ops()

# nvJPEG batches decoded side by side. On the H200 end to end (benchmarks/cuda_end_to_end.py, one run):
# 1 thread 5,172-5,599 img/s, 2: 5,083-5,316, 4: 4,262-5,178, 8: 4,639-4,707 (an earlier session
# measured 4 threads best for decode alone; BENCHMARKS.md); on the H100, with reads in parts (batches of
# 256 and 512, 11,520 files): 1 thread 9.6-10.8k, 2: 10.2-10.6k, 4: 10.0k.
DECODE_THREADS = 1
# Files one reader thread reads in a row. A task per file handed the GIL between 8 readers, the decode
# thread and the network's at every read: end to end on the H100 machine (11,520 files of 224 px) 5.6-6.6k
# img/s, against 8.2-8.7k in parts of 64 (with one copy for a batch of one image size, below).
READ_PART = 64
# File bytes read ahead of the decoder. The readers go on while the network's first batch waits for
# cuDNN's plan (2-4 s on the H100 machine, see TorchEngine): 20-40k files of 10 KB at the readers'
# 10k files/s, or 80 photos of 3 MB.
READ_AHEAD_BYTES = 256 << 20

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
                ThreadPoolExecutor(1) as decode_stage, \
                Prefetch(prefetched(pool, _read_all, _groups(paths, READ_PART), ahead=max(2, 2 * batch_size // READ_PART)),
                         size=READ_AHEAD_BYTES, name="read-ahead", weight=_bytes) as parts:
            def decode(chunk: list) -> tuple[list[Path], list]:
                batch_paths = [path for path, _ in chunk]
                return batch_paths, self._decode(batch_paths, [data for _, data in chunk], decoders)

            reads = chain.from_iterable(chain.from_iterable(parts))  # lists of parts, each a list of reads
            for [decoded] in prefetched(decode_stage, decode, _groups(zip(paths, reads), batch_size), ahead=2):
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
                decoded = torch.ops.image.decode_jpegs_cuda(raw, RGB, self.device)
            except RuntimeError:  # one corrupt file fails the batch: decode one by one to find it
                decoded = [self._decode_one(path, data) for path, data in zip(paths, raw)]
        stream.synchronize()  # done before another thread uses the pixels
        return decoded

    def _decode_one(self, path: Path, data: torch.Tensor) -> torch.Tensor | ImgclassError:
        try:
            return torch.ops.image.decode_jpegs_cuda([data], RGB, self.device)[0]
        except RuntimeError as e:
            return ImgclassError(f"{path}: corrupt or truncated JPEG ({str(e).splitlines()[0]})")


def start_nvjpeg(device: str | torch.device = "cuda") -> threading.Thread:
    """Decode one tiny JPEG on ``device`` in a thread: nvJPEG's set-up (0.63 s on its first decode, H100)
    then runs beside other start-up work, such as the network's first forward, instead of before the
    job's first batch. A failure is left for the job's own decode to report."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG")
    data = torch.frombuffer(bytearray(out.getvalue()), dtype=torch.uint8)

    def decode() -> None:
        try:
            torch.ops.image.decode_jpegs_cuda([data], RGB, torch.device(device))
        except RuntimeError:
            pass

    thread = threading.Thread(target=decode, name="nvjpeg-start", daemon=True)
    thread.start()
    return thread


def _groups(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while group := list(islice(items, size)):
        yield group


def _bytes(parts: list[list]) -> int:
    return sum(r.nbytes for part in parts for r in part if isinstance(r, torch.Tensor))


def _read_all(paths: Sequence[Path]) -> list:
    return [_read(path) for path in paths]


def _read(path: Path) -> torch.Tensor | ImgclassError:
    """A JPEG's bytes (1-D uint8, for nvJPEG), another format decoded on the CPU (CHW uint8), or the error."""
    try:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            return torch.from_numpy(read_file(path))
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

    The caller keeps ``images`` until the work queued on them is done (``GpuDecoder`` decodes them on
    side streams: freed sooner, their memory could go to the next decode while this copy still reads
    them). That costs nothing where a batch's images live until its results are back, where marking each
    image for the current stream (``record_stream``) took a fifth of the main thread of a 57,600-file job.
    """
    return torch.cat([_resample(group, preprocess, dtype) for group in _canvas_groups(images)])


def _resample(images: Sequence[torch.Tensor], p: Preprocess, dtype: torch.dtype) -> torch.Tensor:
    sizes = [tuple(im.shape[1:]) for im in images]
    windows = {size: _crop_window(*size, p) for size in set(sizes)}  # a dataset's usual case: one size
    if len(windows) == 1:  # one copy, not one each
        canvas = torch.stack(images).to(dtype)
    else:
        canvas = torch.zeros(len(images), 3, *map(max, zip(*sizes)), dtype=dtype, device=images[0].device)
        for i, im in enumerate(images):
            canvas[i, :, :im.shape[1], :im.shape[2]] = im
    boxes = torch.tensor([(i, *windows[size]) for i, size in enumerate(sizes)], dtype=dtype).to(canvas.device)
    return torch.ops.torchvision.roi_align(canvas, boxes, 1.0, p.size, p.size, -1, True)  # scale, out h w, sampling, aligned


def _crop_window(h: int, w: int, p: Preprocess) -> tuple[float, float, float, float]:
    """The source pixels (x1, y1, x2, y2) of an h x w image's center crop once resized."""
    rw, rh = p.resized_size(w, h)
    sx, sy = w / rw, h / rh
    left, top = (rw - p.size) // 2, (rh - p.size) // 2
    return left * sx, top * sy, (left + p.size) * sx, (top + p.size) * sy


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
