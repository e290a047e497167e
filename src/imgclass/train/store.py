"""The activation store: the frozen trunk's outputs of every training and val image, on disk.

The cached-trunk recipe reads each image's trunk activations once per epoch. Held in memory, they
(and the decoded pixels they came from) grew with the dataset: 4.3k images peaked at 2.6 GB, and
about 50k filled a 24 GB machine. Here each split's activations are fp16 rows of a memory-mapped
file in the cache, written a chunk of images at a time as the images are decoded, so the process
holds one chunk, and the operating system's page cache, not the process, holds the rest.

Row ``i`` of a split is sample ``i`` (an unreadable image leaves its row unused), and chunk ``c``
is samples ``[c * CHUNK, (c + 1) * CHUNK)`` however many processes fill it, so a run resumes with
any number of them. A chunk counts as done when its marker file exists, written only after its
rows are flushed: a run killed at any moment starts again at the first chunk it had not finished.
The store's key covers the trunk's weights, the preprocessing, the runtime and every file's size
and mtime, so a changed image or network never reads stale rows.

Example:
    >>> split = cache_split(spec, samples, run_trunk, preprocess, world)  # doctest: +SKIP
    >>> split.batch(np.arange(4)).shape  # doctest: +SKIP
    (4, 192, 7, 7)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..data import unreadable
from ..errors import ImgclassError
from ..fileio import atomic_write
from ..media.decode import decode_files
from ..preprocess import Preprocess
from ..runtime.cache import cache_dir, cache_key
from .distributed import World, all_min, barrier

CHUNK = 256  # images decoded, run through the trunk, written and committed together
FORMAT = 1  # bump when the layout changes: old stores are then never read
TrunkRunner = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class SplitSpec:
    """What one split's activations are.

    Attributes:
        name: "train" or "val" (names the files).
        samples: its ``(path, label)`` pairs, in order.
        views: 1 (as decoded) or 2 (also mirrored left-right).
        shape: one image's activation shape, e.g. (192, 7, 7).
        key: the trunk's key (see ``trunk_key``).
    """

    name: str
    samples: list[tuple[Path, int]]
    views: int
    shape: tuple[int, ...]
    key: str

    @property
    def folder(self) -> Path:
        return cache_dir() / "features" / cache_key(self.key, self.name, self.views, self.shape, FORMAT,
                                                     fingerprint(self.samples))


@dataclass(frozen=True)
class Split:
    """A split's stored activations.

    Attributes:
        views: per view, the (len(samples), *shape) fp16 rows (memory-mapped, read-only).
        rows: the rows of the readable images, in sample order; position ``k`` is the k-th readable image.
        labels: their labels.
        paths: their files.
        bad: the unreadable files, as ``(path, reason)``.
        folder: where the store keeps them.
    """

    views: list[np.ndarray]
    rows: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    bad: list[tuple[Path, str]]
    folder: Path

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: np.ndarray, view: np.ndarray | None = None) -> np.ndarray:
        """The fp16 activations of the readable images at ``positions``, each from view ``view[k]``
        (default: as decoded). Rows are read in file order: random batches stay cheap on disk."""
        rows = self.rows[positions]
        view = np.zeros(len(rows), np.int64) if view is None else np.asarray(view)
        out = np.empty((len(rows), *self.views[0].shape[1:]), np.float16)
        for v, array in enumerate(self.views):
            where = np.flatnonzero(view == v)
            order = np.argsort(rows[where], kind="stable")
            out[where[order]] = array[rows[where][order]]
        return out


def fingerprint(samples: list[tuple[Path, int]]) -> str:
    """A digest of every sample's path, label, size and mtime (a changed file changes it)."""
    h = hashlib.sha256()
    for path, label in samples:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0{label}\0missing\n".encode())
    return h.hexdigest()


def trunk_key(trunk: torch.nn.Module, preprocess: Preprocess, runtime: str) -> str:
    """A key of what the trunk computes: its weights, the preprocessing and the runtime running it."""
    h = hashlib.sha256()
    for name, value in trunk.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return cache_key(h.hexdigest(), json.dumps(preprocess.to_json(), sort_keys=True), runtime)


def open_rows(path: Path, n: int, shape: tuple[int, ...]) -> np.memmap:
    """The (n, *shape) fp16 file at ``path``, made (sparse, zeros) by the first process that needs it."""
    size = n * int(np.prod(shape)) * 2
    if size == 0:  # an empty split: nothing to map
        return np.zeros((0, *shape), np.float16)
    if not path.is_file():
        free = shutil.disk_usage(path.parent).free
        if free < size:
            raise ImgclassError(f"{path.parent}: the trunk's activations need {size / 1e9:.1f} GB and the disk has "
                                f"{free / 1e9:.1f} GB free; free space, or set IMGCLASS_CACHE to a larger disk")
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with open(tmp, "wb") as f:
            f.truncate(size)
        try:
            os.link(tmp, path)  # atomic, and never replaces a file another process is already writing
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return np.memmap(path, np.float16, "r+", shape=(n, *shape))


def chunk_marker(folder: Path, c: int) -> Path:
    return folder / "done" / f"{c:06d}.json"


def cache_split(spec: SplitSpec, run_trunk: TrunkRunner, preprocess: Preprocess, batch_size: int, workers: int,
                world: World, desc: str) -> Split:
    """Fill ``spec``'s store with the trunk's activations of its images (the chunks not done yet), then open it.

    Each process decodes and runs its share of each round of chunks (chunk ``round + rank``); under
    several processes the chunks are gathered, and the first process of each machine writes them all,
    so every machine ends with the whole store.

    Raises:
        ImgclassError: the disk cannot hold the store.
    """
    folder, n = spec.folder, len(spec.samples)
    (folder / "done").mkdir(parents=True, exist_ok=True)
    writer = world.size == 1 or int(os.environ.get("LOCAL_RANK", "0")) == 0
    arrays = [open_rows(folder / f"{spec.name}-{v}.f16", n, spec.shape) for v in range(spec.views)] if writer else []
    n_chunks = -(-n // CHUNK)
    bar = tqdm(total=n, desc=desc, unit="img", leave=False, disable=None, file=sys.stderr)
    for first in range(0, n_chunks, world.size):
        chunks = range(first, min(first + world.size, n_chunks))
        if all_min([float(all(chunk_marker(folder, c).is_file() for c in chunks))], world)[0]:
            bar.update(sum(min(n, (c + 1) * CHUNK) - c * CHUNK for c in chunks))
            continue
        mine = first + world.rank
        done = run_chunk(spec, mine, run_trunk, preprocess, batch_size, workers, world) if mine < n_chunks \
            else (torch.zeros((spec.views, 0, *spec.shape), dtype=torch.float16, device=world.device), {})
        gathered = list(zip(chunks, gather_chunks(*done, world)))
        if writer:
            for c, (acts, _) in gathered:
                for array, rows in zip(arrays, acts):
                    array[c * CHUNK:c * CHUNK + len(rows)] = rows.cpu().numpy()
            for array in arrays:
                array.flush()  # the rows are on disk before any marker says so
            for c, (_, bad) in gathered:
                atomic_write(chunk_marker(folder, c), lambda tmp, bad=bad: Path(tmp).write_text(json.dumps(bad)))
        bar.update(sum(acts.shape[1] for _, (acts, _) in gathered))
    bar.close()
    del arrays
    barrier(world)  # every machine's writer has written every chunk
    return open_split(spec)


def run_chunk(spec: SplitSpec, c: int, run_trunk: TrunkRunner, preprocess: Preprocess, batch_size: int,
              workers: int, world: World) -> tuple[torch.Tensor, dict[str, str]]:
    """Decode chunk ``c``'s images and run the trunk on them (and on their mirror images).

    Returns:
        ((views, len(chunk), *shape) fp16 activations, an unreadable image's row at zeros;
        {sample index: why it could not be read}).
    """
    samples = spec.samples[c * CHUNK:(c + 1) * CHUNK]
    acts = torch.zeros((spec.views, len(samples), *spec.shape), dtype=torch.float16, device=world.device)
    bad: dict[str, str] = {}
    decode_on = str(world.device) if world.device.type == "cuda" else "cpu"
    at = 0
    for batch in decode_files([p for p, _ in samples], preprocess, batch_size, workers, decode_on):
        why = [unreadable(path, x) for path, x in batch]
        good = [k for k, reason in enumerate(why) if reason is None]
        bad.update({str(c * CHUNK + at + k): reason for k, reason in enumerate(why) if reason is not None})
        if good:
            pixels = np.stack([batch[k][1] for k in good])
            index = torch.tensor([at + k for k in good], device=world.device)
            for v in range(spec.views):
                x = preprocess.normalize(pixels[:, :, ::-1] if v else pixels)  # view 1: mirrored left-right
                acts[v, index] = run_trunk(x).to(world.device, torch.float16)
        at += len(batch)
    return acts, bad


def gather_chunks(acts: torch.Tensor, bad: dict[str, str],
                  world: World) -> list[tuple[torch.Tensor, dict[str, str]]]:
    """Every process's chunk of this round, in rank order (one process: its own)."""
    if world.size == 1:
        return [(acts, bad)]
    sizes = [None] * world.size
    dist.all_gather_object(sizes, (acts.shape[1], bad))
    padded = torch.zeros((acts.shape[0], CHUNK, *acts.shape[2:]), dtype=acts.dtype, device=acts.device)
    padded[:, :acts.shape[1]] = acts
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return [(part[:, :m], bad_r) for part, (m, bad_r) in zip(parts, sizes) if m]


def open_split(spec: SplitSpec) -> Split:
    """The stored split, read-only: its readable images' rows, labels and files, and the unreadable ones."""
    folder, n = spec.folder, len(spec.samples)
    bad: dict[int, str] = {}
    for c in range(-(-n // CHUNK)):
        bad.update({int(k): v for k, v in json.loads(chunk_marker(folder, c).read_text()).items()})
    rows = np.array([i for i in range(n) if i not in bad], np.int64)
    views = [np.memmap(folder / f"{spec.name}-{v}.f16", np.float16, "r", shape=(n, *spec.shape)) if n
             else np.zeros((0, *spec.shape), np.float16) for v in range(spec.views)]
    return Split(views, rows, np.array([spec.samples[i][1] for i in rows], np.int64),
                 [spec.samples[i][0] for i in rows], [(spec.samples[i][0], why) for i, why in sorted(bad.items())],
                 folder)
