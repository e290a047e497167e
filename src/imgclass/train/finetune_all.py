"""The streaming full fine-tune (``--finetune all``): every layer of the network trained on images read
from disk and augmented each epoch, for data large, hard or unusual enough to pay for it. Memory stays
flat in the dataset's size: per image only its path, label and digest are held, never its pixels.

Recipe:
- The head starts at zero, so its first, warming-up steps pass little gradient to the pretrained layers
  and move the head before them, with no feature pass. When every class is named like an ImageNet
  class, it starts from the pretrained classifier's rows for them instead (``head.head_prior``), a
  calibrated classifier already; a partial prior would make its few classes win every image.
- AdamW on every layer (the head at ``HEAD_LR_SCALE`` x the learning rate, without weight decay), one
  epoch of linear warmup then cosine (``lr_at``), label smoothing. BatchNorm statistics stay frozen
  (eval mode, as in the tail recipe): a few images per process train as well as many, and N processes
  take the same steps as one.
- Train images: decoded as ``media.decode`` does, then torchvision v2 RandomResizedCrop, horizontal
  flip and TrivialAugmentWide, in DataLoader worker processes (``--workers``). Each image's augmentation
  comes from a generator seeded by (seed, epoch, index), and each epoch's order from (seed, epoch): the
  same for any number of workers or processes, and a resumed run replays the epochs it lost exactly.
- Val images: the network's own preprocessing through ``media.decode.decode_files`` (threads on the CPU,
  nvJPEG and one batched resize on CUDA), so val accuracy is what ``imgclass eval`` measures.
- CUDA: bf16 autocast, channels-last, pinned host batches, fused AdamW (no cuDNN autotuning: see ``finetune_all``).

Before training, every file is decoded once and dropped, and the readable ones indexed
(``data.index_readable``: the same test of a file as the activation store's), and the dataset checked
exactly as the tail recipe does, so no epoch meets a bad file.

The input side is the one ``parts.network_spec`` chooses for either recipe. ``--time`` plans the
cached-trunk recipe only (``plan.py`` measures its parts): here it chooses nothing, and the epochs stop
when another would pass it (``engine.epochs_to_run``), as in a resumed run.

Under torchrun each global batch of ``batch_size`` images is dealt out over the ranks
(DistributedSampler-style) and DDP averages their gradients; val is sharded and gathered.

Example:
    >>> summary = train(TrainConfig("data/flowers", finetune="all", epochs=10, device="cuda"))  # doctest: +SKIP
"""
from __future__ import annotations

import math
import sys
import time
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import InterpolationMode, v2
from tqdm import tqdm

from ..data import Dataset, ImageIndex, index_readable
from ..errors import ImgclassError
from ..media.decode import decode_files
from ..media.images import open_image
from ..preprocess import Preprocess
from .config import TrainConfig, format_duration
from .distributed import World, all_sum, data_parallel, gather_rows, shard
from .engine import (
    Run,
    RunRecord,
    check_data,
    epoch_row,
    epochs_to_run,
    finish_epoch,
    load_best,
    log,
    lr_at,
    prepare_data,
    prepare_model,
    start_record,
    start_run,
    summarize,
)
from .head import head_prior, imagenet_matches
from .parts import Prior
from .trunk import autocast

STAGE = "finetune-all"  # results.csv's stage, and the summary's
# The head starts at zero and has further to go than the pretrained layers: on flowers12 x10 reaches 95.00%
# in 3 epochs where x1 reaches 93.75% (BENCHMARKS.md).
HEAD_LR_SCALE = 10


def train_all(cfg: TrainConfig, world: World, resume: str | Path | None, start_epoch: int | None) -> dict:
    """The full fine-tune (``recipes.train``'s "all") as one of ``world``'s processes: check the data,
    fine-tune every layer on streamed images, report. Returns the same summary as the tail recipe.

    Raises:
        ImgclassError: ``epochs`` 0, a checkpoint of the tail recipe, a bad dataset, network or checkpoint.
    """
    if cfg.epochs < 1:
        raise ImgclassError(f"--epochs {cfg.epochs}: --finetune all trains from its first epoch; give 1 or more")
    run = start_run(cfg, world, resume)
    if cfg.time is not None:
        log(f"imgclass: --time {format_duration(cfg.time)}: --finetune all is not planned (the planner measures the "
            "cached-trunk recipe); its epochs stop when another would pass the budget")
    ds = prepare_data(run)
    train_images, val_images = check_splits(run, ds)
    model, parts, prior = prepare_model(run, len(ds.classes))
    if run.checkpoint is None:
        start_head(parts.head, ds.classes, prior)
    record = start_record(run, ds)
    log(f"imgclass: recipe: every layer fine-tuned on {len(train_images)} images streamed from disk with "
        f"augmentation (--finetune all), {cfg.workers} loader process(es), {world.size} x {world.device.type}")
    finetune_all(run, record, model, parts.head, train_images, val_images, start_epoch)
    load_best(run, model)
    _, _, logits = evaluate_stream(run, model, val_images, len(ds.classes))
    return summarize(run, record, ds, val_images.labels, logits.argmax(1).cpu().numpy())


def start_head(head: torch.nn.Linear, classes: list[str], prior: Prior) -> None:
    """Zeros, or the pretrained classifier's rows when every class has one (``prior``: its weight, bias)."""
    whole = prior[0] is not None and None not in imagenet_matches(classes)
    weight, bias = head_prior(classes, head.in_features, *prior) if whole else (torch.zeros_like(head.weight),
                                                                                 torch.zeros_like(head.bias))
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)


def check_splits(run: Run, ds: Dataset) -> tuple[ImageIndex, ImageIndex]:
    """The checking pass: every file decoded once as the network sees it and dropped, the readable ones
    indexed (``data.index_readable``), the dataset's warnings and table logged as the tail recipe does.

    Returns:
        train and val: their readable files, labels and digests.

    Raises:
        ImgclassError: what ``engine.check_data`` raises (a class without training images, no val image).
    """
    device = str(run.world.device) if run.world.device.type == "cuda" else "cpu"
    (train, bad_train), (val, bad_val) = (index_readable(samples, run.preprocess, run.cfg.workers, f"check {name}",
                                                         device)
                                          for name, samples in (("train", ds.train), ("val", ds.val)))
    check_data(ds, train, val, bad_train + bad_val)
    return train, val


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of ``n`` training images: a function of (seed, epoch) alone, so resumable."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class EpochBatches(Sampler):
    """This rank's share of each global batch of the epoch's order, as ``(index, epoch)`` keys: rank r
    takes items r, r + size, ... of every batch of ``batch_size``, so N ranks take the steps one takes.
    Set ``epoch`` before iterating (the loader's workers need no state: the key carries it)."""

    def __init__(self, n: int, batch_size: int, seed: int, world: World):
        super().__init__()
        self.n, self.batch_size, self.seed, self.world = n, batch_size, seed, world
        self.epoch = 1

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        for i in range(0, self.n, self.batch_size):
            yield [(index, self.epoch) for index in order[i:i + self.batch_size][self.world.rank::self.world.size]]

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


class AugmentedImages(torch.utils.data.Dataset):
    """Training images decoded when asked for and augmented; an item is asked for by ``(index, epoch)``
    and its augmentation drawn from a generator seeded by (seed, epoch, index).

    Items are ``(CHW uint8 tensor of preprocess.size squared, label)``; normalization happens on the
    device (``normalize``), so a batch crosses to the GPU as bytes.
    """

    def __init__(self, images: ImageIndex, preprocess: Preprocess, seed: int):
        self.paths, self.labels, self.preprocess, self.seed = images.paths, images.labels, preprocess, seed
        interpolation = InterpolationMode(preprocess.interpolation)
        # On PIL images: Pillow's kernels are the fastest on a CPU; the tensor comes last.
        self.augment = v2.Compose([v2.RandomResizedCrop(preprocess.size, interpolation=interpolation),
                                   v2.RandomHorizontalFlip(), v2.TrivialAugmentWide(interpolation=interpolation),
                                   v2.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key
        # Decoded at the reduced JPEG scale the network's decode allows, as media.decode does.
        image = open_image(self.paths[index], min_size=self.preprocess.decode_size)
        with torch.random.fork_rng(devices=[]):  # v2 draws from torch's global generator
            torch.manual_seed(((self.seed * 100_003 + epoch) * 1_000_003 + index) % 2**63)
            return self.augment(image), int(self.labels[index])


def collate(items: list[tuple[torch.Tensor, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``AugmentedImages`` items; an empty one (a rank's share of a batch smaller than the
    number of ranks) still gives its (0, 3, size, size) tensor, so every rank takes every step."""
    if not items:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def normalize(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """NCHW pixels on the 0..255 scale (uint8 or float, on any device) -> the network's float32 input,
    channels-last: ``Preprocess.normalize`` on the device."""
    if preprocess.channel_order == "bgr":
        x = x.flip(1)
    mean, std = _mean_std(preprocess, x.device)
    return ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)


@lru_cache(maxsize=8)
def _mean_std(preprocess: Preprocess, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``preprocess``'s mean and std on the 0..255 scale, on ``device`` once: a copy from pageable host
    memory to the GPU at every step would wait for the GPU each time."""
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1) * 255
    return mean.to(device), std.to(device)


def finetune_all(run: Run, record: RunRecord, model: torch.nn.Module, head: torch.nn.Linear,
                 train_images: ImageIndex, val_images: ImageIndex, start_epoch: int | None) -> None:
    """Epochs up to ``cfg.epochs`` of every layer on augmented streamed images, each recorded and
    checkpointed (``engine.finish_epoch``), as many as ``engine.epochs_to_run`` gives (early stopping,
    ``--time``)."""
    # cudnn.benchmark stays off: on the H100 its autotuning made the first steps of each batch shape take
    # 58 s instead of 24, and the steps after it ran no faster (benchmarks/train_finetune_all.py, BENCHMARKS.md).
    cfg, world = run.cfg, run.world
    net, optimizer, step = prepare_optimizer(model, head, cfg, world, run.checkpoint)
    batches = EpochBatches(len(train_images), cfg.batch_size, cfg.seed, world)
    loader = DataLoader(AugmentedImages(train_images, run.preprocess, cfg.seed), batch_sampler=batches,
                        num_workers=cfg.workers, collate_fn=partial(collate, size=run.preprocess.size),
                        pin_memory=world.device.type == "cuda", persistent_workers=cfg.workers > 0)
    total_steps, warmup = cfg.epochs * len(batches), len(batches)
    for epoch in epochs_to_run(run, record, start_epoch):
        t0 = time.perf_counter()
        batches.epoch = epoch
        train_loss, train_acc, step = train_epoch(run, net, optimizer, loader, epoch, step, total_steps, warmup)
        val_loss, val_acc, _ = evaluate_stream(run, model, val_images, head.out_features)
        row = epoch_row(epoch, STAGE, (train_loss, train_acc), (val_loss, val_acc),
                        optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
        finish_epoch(run, record, model, row, optimizer.state_dict(), step)


def prepare_optimizer(model: torch.nn.Module, head: torch.nn.Linear, cfg: TrainConfig, world: World,
                      checkpoint: dict | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """The model (DDP when distributed), AdamW over every layer (the head at ``HEAD_LR_SCALE`` x the
    rate, no weight decay), and the global step: the checkpoint's state and step when it has them."""
    head_ids = {id(p) for p in head.parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    net = data_parallel(model, list(model.parameters()), world)
    optimizer = torch.optim.AdamW([{"params": body, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                                   {"params": list(head.parameters()), "weight_decay": 0.0,
                                    "lr_scale": float(HEAD_LR_SCALE)}],
                                  lr=cfg.lr, fused=world.device.type == "cuda")
    if checkpoint is not None and checkpoint.get("optimizer"):
        optimizer.load_state_dict(checkpoint["optimizer"])
        return net, optimizer, checkpoint["step"]
    return net, optimizer, 0


def train_epoch(run: Run, net: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, epoch: int,
                step: int, total_steps: int, warmup: int) -> tuple[float, float, int]:
    """One pass over the training images, streamed and augmented.

    Returns:
        (mean loss, accuracy %, the global step after this epoch), over all ranks.
    """
    cfg, world, device = run.cfg, run.world, run.world.device
    n = loader.batch_sampler.n
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device)
    start = time.perf_counter()
    bar = tqdm(total=n, desc=f"epoch {epoch}/{cfg.epochs}", unit="img", leave=False, disable=None, file=sys.stderr)
    for k, (x, y) in enumerate(loader):
        global_batch = min(cfg.batch_size, n - k * cfg.batch_size)
        x = normalize(x.to(device, non_blocking=True), run.preprocess)
        y = y.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, warmup, cfg.lr) * group["lr_scale"]
        with autocast(device):
            logits = net(x).float()
        summed = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")
        # DDP averages gradients over ranks: scaled so, the step follows the whole batch's mean loss.
        loss = summed * (world.size / global_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += summed.detach()
        correct += (logits.argmax(1) == y).sum()
        bar.update(global_batch)
        bar.set_postfix(img_s=f"{bar.n / (time.perf_counter() - start):.0f}", refresh=False)
    bar.close()
    loss_total, correct_total = all_sum([loss_sum.item(), correct.item()], world)
    return loss_total / n, correct_total / n * 100, step


@torch.no_grad()
def evaluate_stream(run: Run, model: torch.nn.Module, images: ImageIndex,
                    num_classes: int) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy %, logits) of the model over ``images`` decoded as the network's preprocessing
    says, each rank decoding and running its shard.

    Raises:
        ImgclassError: a file that the checking pass read has become unreadable since.
    """
    world, device = run.world, run.world.device
    mine = images.paths[shard(len(images), world)]
    decode_on = str(device) if device.type == "cuda" else "cpu"
    logits = [torch.zeros((0, num_classes), device=device)]  # a rank's empty shard still gives its (0, C)
    for batch in decode_files(mine, run.preprocess, run.cfg.batch_size, run.cfg.workers, decode_on):
        for _, pixels in batch:
            if isinstance(pixels, ImgclassError):
                raise ImgclassError(f"{pixels} (it was readable when training started)")
        x = torch.from_numpy(np.stack([pixels for _, pixels in batch])).to(device).permute(0, 3, 1, 2)
        # The last batch padded to the others' size: on CUDA a new batch shape costs cuDNN seconds of set-up.
        short = run.cfg.batch_size - len(x) if device.type == "cuda" else 0
        padded = torch.cat([x, x.new_zeros((short, *x.shape[1:]))]) if short > 0 else x
        with autocast(device):
            logits.append(model(normalize(padded, run.preprocess)).float()[:len(x)])
    logits = gather_rows(torch.cat(logits), len(images), world)
    labels = torch.from_numpy(images.labels).to(device)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item() * 100, logits
