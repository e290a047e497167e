"""The transfer-learning engine: stream the images once through the frozen trunk into an on-disk
activation store, fit the head, fine-tune the tail, keep the best by val accuracy.

Stages (one row each in results.csv):
- epoch 0, "head": a linear head fit on cached pooled features by L-BFGS, starting from (and
  pulled towards) the pretrained classifier's rows for classes named like ImageNet classes, its
  penalty chosen by cross-validation on train (see ``head.py``).
- epochs 1..N, "finetune": the last block stage + conv_head + head trained with AdamW, warmup +
  cosine, label smoothing, random horizontal flips (both views cached, up to ``MIRROR_UP_TO``
  training images), BatchNorm statistics frozen; early stopping when val accuracy has not improved
  for ``patience`` epochs.

Memory is flat in the number of images: pixels exist a chunk at a time, and activations and pooled
features live in memory-mapped files (``store.py``), read a batch at a time.

Every epoch writes checkpoint.pth.tar (and model_best.pth.tar when val accuracy improves)
atomically. Each epoch's shuffling comes from a generator seeded by (seed, epoch), so a run
resumed from any checkpoint replays exactly the epochs it lost.

Under torchrun the same run is spread over processes (see ``distributed.py``): each runs the
trunk on its share of the images, and each global batch is split over the ranks, so N processes take
the same steps as one (and a distributed run resumes on any number of processes).

Example:
    >>> from imgclass.train import TrainConfig, train  # recipes.train: this recipe, or the one cfg.finetune names
    >>> summary = train(TrainConfig("data/hymenoptera", model_dir="runs/ants"))  # doctest: +SKIP
    >>> summary["best_acc"]  # doctest: +SKIP
    98.04
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import SPLIT_FILE, Dataset, ImageIndex, check_dataset, count_table, find_dataset, index_images, write_split
from ..errors import ImgclassError
from ..fileio import atomic_write
from ..models import ModelSpec
from ..models.resolve import BEST, CHECKPOINT
from ..preprocess import Preprocess
from . import report
from .checkpoint import load_checkpoint, save_checkpoint, stopped_before_checkpoint, write_settings
from .config import CV_ROWS, FORMAT, MIRROR_UP_TO, NETWORK_SETTINGS, TrainConfig, format_duration
from .distributed import (World, all_sum, barrier, broadcast_module, broadcast_object, data_parallel, gather_rows, main_first,
                          shard)
from .store import Split, SplitSpec, cache_split, trunk_key
from .trunk import autocast, trunk_runner
from .head import choose_l2, fit_head, head_prior
from .parts import Parts, Prior, build_network, network_spec, split_model, trainable_tail_parameters



def log(message: str) -> None:
    """Progress lines go to stderr with the bars; stdout stays for results."""
    # One write with its newline: tqdm writes the end apart, and a Ctrl-C between the two left the line
    # open, so that "imgclass: interrupted; continue with: ..." went on the end of it.
    tqdm.write(message + "\n", file=sys.stderr, end="")


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine to zero at ``total``.

    Example:
        >>> [round(lr_at(s, 10, 2, 1.0), 2) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def batches(n: int, batch_size: int) -> range:
    """Batch starts over ``n`` items; one empty batch when ``n`` is 0 (a rank with an empty shard still
    produces its (0, ...) share of outputs)."""
    return range(0, max(n, 1), batch_size)


def activations(split: Split, positions: np.ndarray, device: torch.device, view: np.ndarray | None = None) -> torch.Tensor:
    """Float32 activations of the split's images at ``positions`` on ``device`` (fp16 rows from the store)."""
    return torch.from_numpy(split.batch(positions, view)).to(device).float()


@torch.no_grad()
def tail_features(parts: Parts, split: Split, view: int, out: np.ndarray, world: World, batch_size: int = 256) -> None:
    """Pooled features (tail outputs) of one view of the split's images into ``out``: every rank gets
    every row, each computing its shard of each block."""
    block = batch_size * world.size
    for i in range(0, len(split), block):
        positions = np.arange(i, min(i + block, len(split)))
        mine = positions[shard(len(positions), world)]
        local = parts.tail(activations(split, mine, world.device, np.full(len(mine), view))).float()
        out[i:i + len(positions)] = gather_rows(local, len(positions), world).cpu().numpy()


@torch.no_grad()
def evaluate(parts: Parts, split: Split, labels: torch.Tensor, world: World,
             batch_size: int = 256) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy %, logits) of tail + head over the split's stored activations (each rank
    computing its shard)."""
    logits = []
    mine = np.arange(len(split))[shard(len(split), world)]
    for i in batches(len(mine), batch_size):
        with autocast(world.device):
            logits.append(parts.head(parts.tail(activations(split, mine[i:i + batch_size], world.device))).float())
    logits = gather_rows(torch.cat(logits), len(split), world)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item() * 100, logits


def train_one_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, split: Split,
                    labels: torch.Tensor, cfg: TrainConfig, epoch: int, step: int, total_steps: int, warmup: int,
                    world: World) -> tuple[float, float, int]:
    """One pass over the training images, each seen in a random one of its stored views.

    Every rank draws the same order; each global batch of ``cfg.batch_size`` is dealt out over the ranks
    (DistributedSampler-style), and ``net`` (tail + head, DDP when distributed) averages their gradients.

    Returns:
        (mean loss, accuracy %, the global step after this epoch), over all ranks.
    """
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # the epoch's order alone: resumable
    order = torch.randperm(len(labels), generator=gen)
    view = torch.randint(len(split.views), (len(labels),), generator=gen).numpy()
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(labels), desc=f"epoch {epoch}/{cfg.epochs}", unit="img", leave=False, disable=None, file=sys.stderr)
    for i in range(0, len(order), cfg.batch_size):
        batch = order[i:i + cfg.batch_size]
        idx = batch[world.rank::world.size].numpy()
        x, y = activations(split, idx, world.device, view[idx]), labels[torch.from_numpy(idx).to(labels.device)]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, warmup, cfg.lr)
        with autocast(x.device):
            logits = net(x).float()
        summed = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")
        # DDP averages gradients over ranks: scaled so, the step follows the whole batch's mean loss.
        loss = summed * (world.size / len(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += summed.item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.update(len(batch))
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen * 100:.1f}%",
                        img_s=f"{bar.n / (time.perf_counter() - start):.0f}", refresh=False)
    bar.close()
    loss_sum, correct, seen = all_sum([loss_sum, correct, seen], world)
    return loss_sum / seen, correct / seen * 100, step


def _model_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_tail(cfg: TrainConfig, world: World, resume: str | Path | None, start_epoch: int | None) -> dict:
    """The tail recipe (``recipes.train``'s default) as one of ``world``'s processes: data -> features ->
    head -> fine-tune -> report."""
    run = start_run(cfg, world, resume)
    ds = prepare_data(run)
    run = plan_budget(run, ds)
    model, parts, prior = prepare_model(run, len(ds.classes))
    features = cache_features(run, parts, ds)
    check_data(ds, *(index_images(s.paths, s.labels, run.cfg.workers) for s in (features.train, features.val)),
               features.train.bad + features.val.bad)
    record = start_record(run, ds)
    if run.checkpoint is None:  # a resumed run's checkpoint holds its head fit (epoch 0) already
        finish_epoch(run, record, model, fit_head_stage(parts, features, ds.classes, prior, world), {}, 0)
    finetune(run, record, model, parts, features, start_epoch)
    return report_best(run, record, model, parts, features, ds)


@dataclass(frozen=True)
class Run:
    """What every step of a run reads and none changes.

    Attributes:
        cfg: the run's settings.
        world: this process's place among the training processes.
        model_dir: where the run's files go.
        spec: the network.
        preprocess: the network's preprocessing, at the run's resolution.
        resume: the checkpoint resumed from (for messages), or None.
        checkpoint: its state (checked by ``check_resumable``), or None for a new run.
        started: when the run began (``time.perf_counter``): ``--time`` counts from it.
        input_said: why the input has its size, in words (logged once the dataset is found).
        plan: what ``--time`` chose, in words, or None.
    """

    cfg: TrainConfig
    world: World
    model_dir: Path
    spec: ModelSpec
    preprocess: Preprocess
    resume: str | Path | None
    checkpoint: dict | None
    started: float
    input_said: str
    plan: str | None = None


def start_run(cfg: TrainConfig, world: World, resume: str | Path | None) -> Run:
    """Load and check the checkpoint to resume, make the model folder (rank 0), and look up the network."""
    if resume is not None and stopped_before_checkpoint(resume):
        log(f"imgclass: {resume} was not written yet (the run stopped before its first checkpoint): starting "
            "the run again with its settings; trunk features it stored are read back, not computed again")
        resume = None
    checkpoint = load_checkpoint(resume) if resume is not None else None
    if checkpoint is not None:
        check_resumable(checkpoint, cfg, resume)
    model_dir = Path(cfg.model_dir)
    if world.main:
        model_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            write_settings(model_dir, cfg)
    spec, preprocess, input_said = network_spec(cfg, checkpoint)
    return Run(cfg, world, model_dir, spec, preprocess, resume, checkpoint, time.perf_counter(), input_said)


def check_resumable(state: dict, cfg: TrainConfig, resume: str | Path) -> None:
    """A checkpoint to resume holds a run's state, and ``cfg`` keeps its network.

    Raises:
        ImgclassError: a best-model checkpoint (no run state), another recipe (``--finetune``), or a
            setting in NETWORK_SETTINGS changed.
    """
    if "history" not in state:
        raise ImgclassError(f"{resume}: holds the best model only, not the run's state; resume from {CHECKPOINT} "
                            "in the same folder")
    recipe = state["config"].get("finetune", "tail")
    if cfg.finetune != recipe:
        raise ImgclassError(f"{resume}: a run of --finetune {recipe}; resume it as one (drop --finetune "
                            f"{cfg.finetune}), or start a --finetune {cfg.finetune} run in another --model-dir")
    changed = [f"{name} {getattr(cfg, name)} (checkpoint: {state['config'].get(name)})" for name in NETWORK_SETTINGS
               if getattr(cfg, name) != state["config"].get(name)]
    if changed:
        raise ImgclassError(f"{resume}: a resumed run keeps its network, but {', '.join(changed)} was given; "
                            "drop those flags, or start a new run in another --model-dir")


def prepare_data(run: Run) -> Dataset:
    """The data step: find and split the dataset, and save its labels and split (no image is decoded here)."""
    ds = find_training_set(run)
    log(f"imgclass: {run.input_said}")  # after the dataset's errors, which are then the only line
    if run.world.main:
        write_dataset_files(run.model_dir, ds, run.cfg.val_split)
    return ds


def find_training_set(run: Run) -> Dataset:
    """The dataset's layout, its val split reused from the model folder's split file when there is one.

    Raises:
        ImgclassError: a bad dataset, or classes other than the resumed checkpoint's.
    """
    ds = find_dataset(run.cfg.dataset, run.cfg.val_split, split_file=run.model_dir / SPLIT_FILE)
    if run.checkpoint is not None and run.checkpoint["classes"] != ds.classes:
        raise ImgclassError(f"{run.resume} was trained on classes {run.checkpoint['classes']}, the dataset has "
                            f"{ds.classes}; resume with the same dataset")
    return ds


def check_data(ds: Dataset, train: ImageIndex, val: ImageIndex, unreadable: list[tuple[Path, str]]) -> None:
    """Log the dataset's warnings (unreadable files, duplicates across splits...) and its images per
    class and split, from the readable images' index and the ``unreadable`` files.

    Raises:
        ImgclassError: a class without readable training images, or no readable val image at all.
    """
    for warning in check_dataset(ds.classes, train, val, ds.skipped + unreadable) + ds.warnings:
        log(f"imgclass: warning: {warning}")
    log(count_table(ds.classes, train, val))


def write_dataset_files(model_dir: Path, ds: Dataset, val_split: float) -> None:
    """Write labels.txt and, when val was split off by content and not read back unchanged, the split file."""
    atomic_write(model_dir / "labels.txt", lambda tmp: Path(tmp).write_text("\n".join(ds.classes) + "\n"))
    if ds.split == "hash" and not ds.split_saved:
        new = not (model_dir / SPLIT_FILE).is_file()
        write_split(model_dir / SPLIT_FILE, ds, val_split)
        if new:
            log(f"imgclass: no val folder: split {1 - val_split:.0%}/{val_split:.0%} by file content, "
                f"written to {model_dir / SPLIT_FILE}")


def plan_budget(run: Run, ds: Dataset) -> Run:
    """With ``--time``, a new run's network and epochs chosen to finish within it (rank 0 measures and
    plans, every rank follows); a resumed run keeps its network and stops at the budget."""
    if run.cfg.time is None or run.checkpoint is not None:
        return run
    from .plan import plan_run

    if run.world.main:
        cfg, plan = plan_run(run.cfg, len(ds.train), len(ds.val), [p for p, _ in ds.train], run.world.device)
        said = (f"--time {format_duration(run.cfg.time)}: {plan.describe()} "
                f"(from speeds measured on this machine)")
        log(f"imgclass: {said}")
    cfg, said = broadcast_object((cfg, said) if run.world.main else None, run.world)
    spec, preprocess, input_said = network_spec(cfg)
    if preprocess != run.preprocess:  # another network: prepare_data's line no longer holds
        log(f"imgclass: {input_said}")
    return replace(run, cfg=cfg, spec=spec, preprocess=preprocess, input_said=input_said, plan=said)


def prepare_model(run: Run, num_classes: int) -> tuple[torch.nn.Module, Parts, Prior]:
    """The network (the checkpoint's weights when resuming) on the run's device, and its parts.

    Returns:
        (the model, its trunk/tail/head sharing its modules, the prior for the head fit).
    """
    model, prior = build_network(run.spec, run.cfg, num_classes)
    if run.checkpoint is not None:
        model.load_state_dict(run.checkpoint["state_dict"])
    model = model.to(run.world.device).to(memory_format=torch.channels_last).eval()  # eval: BN statistics stay frozen
    return model, split_model(model), prior


@dataclass
class Features:
    """The frozen trunk's activations of every image, stored once on disk, and the labels.

    Attributes:
        train: the train images' activations as decoded and (up to ``MIRROR_UP_TO`` images) mirrored;
            each fine-tuning epoch shows each image in a random one of its views.
        val: the val images' activations.
        y_train, y_val: the readable images' (N,) int64 class indices, on the run's device.
    """

    train: Split
    val: Split
    y_train: torch.Tensor
    y_val: torch.Tensor


def cache_features(run: Run, parts: Parts, ds: Dataset) -> Features:
    """The features step: stream the images through the frozen trunk (train also mirrored) into the
    activation store; chunks a stopped run stored already are not decoded again."""
    world, batch_size = run.world, run.cfg.batch_size
    t0 = time.perf_counter()
    with main_first(world):  # the others load the trunk engine rank 0 exported and cached
        run_trunk, runtime = trunk_runner(parts, run.spec, run.cfg, run.preprocess, world.device)
    blank = np.zeros((1, run.preprocess.size, run.preprocess.size, 3), np.uint8)
    shape = tuple(run_trunk(run.preprocess.normalize(blank)).shape[1:])
    key = trunk_key(parts.trunk, run.preprocess, runtime)
    views = 2 if len(ds.train) <= MIRROR_UP_TO else 1
    splits = [cache_split(SplitSpec(name, samples, n_views, shape, key), run_trunk, run.preprocess, batch_size,
                          run.cfg.workers, world, f"features {name}")
              for name, samples, n_views in (("train", ds.train, views), ("val", ds.val, 1))]
    n_cached = views * len(ds.train) + len(ds.val)
    seconds = time.perf_counter() - t0
    log(f"imgclass: trunk features of {n_cached} views ({'as decoded and mirrored' if views == 2 else 'as decoded'}) "
        f"stored in {splits[0].folder.parent} in {seconds:.1f} s")
    return Features(*splits, *(torch.from_numpy(split.labels).to(world.device) for split in splits))


@dataclass
class RunRecord:
    """The run's epochs so far and the best of them, the same on every rank (early stopping reads it).

    Attributes:
        about: what every checkpoint says of the run: settings, classes, network, preprocessing, dataset.
        history: one results.csv row per epoch.
        best_acc, best_epoch: the best val accuracy and its epoch (-1 before the first).
    """

    about: dict
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1

    def add(self, row: dict) -> bool:
        """Append an epoch's row; True when it is a new best."""
        self.history.append(row)
        improved = row["val_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val_acc"], row["epoch"]
        return improved


def start_record(run: Run, ds: Dataset) -> RunRecord:
    """An empty record for a new run; the checkpoint's epochs and best for a resumed one."""
    about = {"config": asdict(run.cfg), "classes": ds.classes, "arch": run.spec.name,
             "preprocess": run.preprocess.to_json(), "dataset": str(ds.root.resolve()), "format": FORMAT}
    if run.checkpoint is None:
        return RunRecord(about)
    return RunRecord(about, list(run.checkpoint["history"]), run.checkpoint["best_acc1"], run.checkpoint["best_epoch"])


def epoch_row(epoch: int, stage: str, train: tuple[float, float], val: tuple[float, float], lr: float,
              seconds: float) -> dict:
    """An epoch's results.csv row from its (loss, accuracy %) on train and val."""
    return {"epoch": epoch, "stage": stage, "train_loss": train[0], "train_acc": train[1], "val_loss": val[0],
            "val_acc": val[1], "lr": lr, "seconds": seconds}


def finish_epoch(run: Run, record: RunRecord, model: torch.nn.Module, row: dict, optimizer_state: dict,
                 step: int) -> None:
    """Record an epoch (every rank, for early stopping); rank 0 writes model_best first, then the
    checkpoint (the commit point), then the CSV."""
    improved = record.add(row)
    if not run.world.main:
        return
    weights = _model_state(model)
    if improved:
        save_checkpoint(run.model_dir / BEST, {**record.about, "epoch": row["epoch"], "state_dict": weights,
                                               "best_acc1": record.best_acc})
    save_checkpoint(run.model_dir / CHECKPOINT, {
        **record.about, "epoch": row["epoch"], "stage": row["stage"], "state_dict": weights,
        "best_acc1": record.best_acc, "best_epoch": record.best_epoch, "optimizer": optimizer_state, "step": step,
        "history": record.history})
    report.write_results_csv(run.model_dir / "results.csv", record.history)
    log(f"epoch {row['epoch']} ({row['stage']}): train loss {row['train_loss']:.3f} acc {row['train_acc']:.2f}%  "
        f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.2f}%  ({row['seconds']:.1f} s)"
        + ("  *best*" if record.best_epoch == row["epoch"] else ""))


def fit_head_stage(parts: Parts, features: Features, classes: list[str], prior: Prior, world: World) -> dict:
    """The head step (epoch 0): fit the linear head on the stored features; returns its results.csv row."""
    t0 = time.perf_counter()
    l2, cv = fit_linear_head(parts, features.train, features.y_train, classes, prior, world)
    train_loss, train_acc, _ = evaluate(parts, features.train, features.y_train, world)
    val_loss, val_acc, _ = evaluate(parts, features.val, features.y_val, world)
    log(f"imgclass: head fit: L2 {l2:g} chosen by 3-fold CV on train (CV acc {cv[l2][1] * 100:.1f}%)")
    return epoch_row(0, "head", (train_loss, train_acc), (val_loss, val_acc), 0.0, time.perf_counter() - t0)


def fit_linear_head(parts: Parts, split: Split, y: torch.Tensor, classes: list[str], prior: Prior,
                    world: World) -> tuple[float, dict]:
    """Fit ``parts.head`` on pooled features of all stored views; returns (chosen L2, CV scores).

    The features go to a temporary memory-mapped file, not to the process's memory. Every rank fits
    on the same features; rank 0's head is then given to all.
    """
    n, dim = len(split), parts.head.in_features
    with tempfile.TemporaryFile(dir=split.folder) as file:
        feats = np.memmap(file, np.float32, "w+", shape=(max(1, len(split.views) * n), dim))
        for v in range(len(split.views)):
            tail_features(parts, split, v, feats[v * n:(v + 1) * n], world)
        labels = y.cpu().repeat(len(split.views))
        w0, b0 = head_prior(classes, dim, *prior)
        # Cross-validate on the unmirrored view only: half the cost, and no image on both sides of a fold.
        cv_rows = np.arange(0, n, -(-n // CV_ROWS))
        l2, cv = choose_l2(torch.from_numpy(np.asarray(feats[cv_rows])), labels[cv_rows], w0, b0)
        w, b = fit_head(feats[:len(labels)], labels, w0, b0, l2)
        del feats
    with torch.no_grad():
        parts.head.weight.copy_(w)
        parts.head.bias.copy_(b)
    broadcast_module(parts.head, world)
    return l2, cv


def finetune(run: Run, record: RunRecord, model: torch.nn.Module, parts: Parts, features: Features,
             start_epoch: int | None) -> None:
    """The fine-tune step: epochs up to ``cfg.epochs`` of tail + head, each recorded and checkpointed;
    stops early when val accuracy has not improved for ``cfg.patience`` epochs."""
    cfg, world = run.cfg, run.world
    net, optimizer, step = prepare_finetune(parts, cfg, world, run.checkpoint)
    steps_per_epoch = math.ceil(len(features.y_train) / cfg.batch_size)
    total_steps, warmup = cfg.epochs * steps_per_epoch, steps_per_epoch
    for epoch in epochs_to_run(run, record, start_epoch):
        t0 = time.perf_counter()
        train_loss, train_acc, step = train_one_epoch(net, optimizer, features.train, features.y_train, cfg,
                                                      epoch, step, total_steps, warmup, world)
        val_loss, val_acc, _ = evaluate(parts, features.val, features.y_val, world)
        row = epoch_row(epoch, "finetune", (train_loss, train_acc), (val_loss, val_acc),
                        optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
        finish_epoch(run, record, model, row, optimizer.state_dict(), step)


def epochs_to_run(run: Run, record: RunRecord, start_epoch: int | None) -> Iterator[int]:
    """The fine-tuning epochs, from ``first_epoch`` up to ``cfg.epochs``, each read after the one before
    was recorded: they end early when val accuracy has not improved for ``cfg.patience`` epochs, or
    when another would pass ``--time``'s budget (``out_of_time``)."""
    for epoch in range(first_epoch(run, start_epoch), run.cfg.epochs + 1):
        # A run without a recorded epoch (the full fine-tune's first) has nothing to stop on yet.
        if record.history and epoch - record.best_epoch > run.cfg.patience:
            log(f"imgclass: early stop: val accuracy has not improved for {run.cfg.patience} epochs "
                f"(best: epoch {record.best_epoch})")
            return
        if out_of_time(run, record):
            return
        yield epoch


def out_of_time(run: Run, record: RunRecord) -> bool:
    """With ``--time``: True (and said) when another epoch, as long as the last one, would end past it."""
    if run.cfg.time is None or not record.history:
        return False
    used = time.perf_counter() - run.started
    if used + record.history[-1]["seconds"] <= run.cfg.time:
        return False
    log(f"imgclass: --time {format_duration(run.cfg.time)}: stopping after epoch {record.history[-1]['epoch']} "
        f"({format_duration(used)} used; another epoch takes about {format_duration(record.history[-1]['seconds'])})")
    return True


def prepare_finetune(parts: Parts, cfg: TrainConfig, world: World,
                     checkpoint: dict | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """Tail + head as one network (DDP when distributed), its AdamW (no weight decay on the head), and the
    global step: the checkpoint's optimizer state and step when it has them, else a fresh start at 0."""
    tail_params, head_params = trainable_tail_parameters(parts), list(parts.head.parameters())
    net = data_parallel(torch.nn.Sequential(parts.tail, parts.head), tail_params + head_params, world)
    optimizer = torch.optim.AdamW([{"params": tail_params, "weight_decay": cfg.weight_decay},
                                   {"params": head_params, "weight_decay": 0.0}], lr=cfg.lr)
    if checkpoint is not None and checkpoint.get("optimizer"):  # empty after the head fit: no step taken yet
        optimizer.load_state_dict(checkpoint["optimizer"])
        return net, optimizer, checkpoint["step"]
    return net, optimizer, 0


def first_epoch(run: Run, start_epoch: int | None) -> int:
    """``start_epoch`` if given, else the one after the checkpoint's (1 for a new run)."""
    checkpoint = run.checkpoint
    first = start_epoch if start_epoch is not None else (checkpoint["epoch"] + 1 if checkpoint is not None else 1)
    if checkpoint is not None and first > run.cfg.epochs:
        log(f"imgclass: nothing to train: the run has done epoch {first - 1} of {run.cfg.epochs}; "
            "give --epochs N to train up to epoch N")
    return first


def report_best(run: Run, record: RunRecord, model: torch.nn.Module, parts: Parts, features: Features,
                ds: Dataset) -> dict:
    """The report step: the best model's val confusion matrix, the plots (rank 0), and the run's summary."""
    load_best(run, model)
    _, _, logits = evaluate(parts, features.val, features.y_val, run.world)
    return summarize(run, record, ds, features.y_val.cpu().numpy(), logits.argmax(1).cpu().numpy())


def load_best(run: Run, model: torch.nn.Module) -> None:
    """Load model_best into ``model``: the final report is about the best model, which export and eval use."""
    barrier(run.world)  # rank 0 has written it
    model.load_state_dict(load_checkpoint(run.model_dir / BEST)["state_dict"])


def summarize(run: Run, record: RunRecord, ds: Dataset, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The best model's val confusion matrix from its predictions, the plots (rank 0), and the run's summary:
    best val accuracy and epoch, each stage's best, seconds, input size, ``--time``'s plan, the per-class table."""
    matrix = report.confusion(y_true, y_pred, len(ds.classes))
    if run.world.main:
        report.plot_results(run.model_dir / "results.png", record.history)
        report.plot_confusion(run.model_dir / "confusion_matrix.png", ds.classes, matrix,
                              f"{ds.root.name} val, best epoch {record.best_epoch}: {record.best_acc:.2f}%")
    stages = {stage: max(r["val_acc"] for r in record.history if r["stage"] == stage)
              for stage in dict.fromkeys(r["stage"] for r in record.history)}
    return {"best_acc": record.best_acc, "best_epoch": record.best_epoch, "stages": stages, "classes": ds.classes,
            "seconds": time.perf_counter() - run.started, "model_dir": str(run.model_dir),
            "input_size": run.preprocess.size, "table": report.per_class_table(ds.classes, matrix), "plan": run.plan}
