"""The training entry point: the recipe ``cfg.finetune`` names, in each of torchrun's processes.

- "tail" (``engine``): a head fit on the frozen trunk's cached features, then the last block stage
  fine-tuned on cached activations; seconds on a CPU, best on small data.
- "all" (``finetune_all``): every layer fine-tuned on images streamed from disk with augmentation; large,
  hard or unusual data, a GPU.

Both write the same files (checkpoints, results.csv, plots, labels.txt) and return the same summary.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ImgclassError
from ..runtime.select import resolve_device
from .config import TrainConfig
from .distributed import quiet_unless_main, setup, teardown
from .engine import train_tail
from .finetune_all import train_all

RECIPES = {"tail": train_tail, "all": train_all}  # TrainConfig.finetune -> the recipe


def train(cfg: TrainConfig, resume: str | Path | None = None, start_epoch: int | None = None) -> dict:
    """Train a classifier on ``cfg.dataset`` with the recipe ``cfg.finetune`` names; writes the run's
    files to ``cfg.model_dir``.

    Args:
        cfg: the run's settings; to continue a run with the checkpoint's own, build them with
            ``resume_config`` (only the network, ``NETWORK_SETTINGS``, must stay the checkpoint's).
        resume: a checkpoint.pth.tar to continue from.
        start_epoch: the first epoch to run (default: the one after the checkpoint's).

    Returns:
        A summary: best val accuracy and epoch, each stage's accuracy, seconds, file paths.

    Under torchrun (WORLD_SIZE > 1) every process calls this and gets the summary; rank 0 alone writes
    files and prints.

    Raises:
        ImgclassError: bad dataset, network, recipe or checkpoint (one line, what to do).

    Example:
        >>> summary = train(TrainConfig("data/hymenoptera", model_dir="runs/ants"))  # doctest: +SKIP
    """
    if cfg.finetune not in RECIPES:
        raise ImgclassError(f"--finetune {cfg.finetune}: give {' or '.join(RECIPES)}")
    world = setup(resolve_device(cfg.device))
    try:
        with quiet_unless_main(world):
            return RECIPES[cfg.finetune](cfg, world, resume, start_epoch)
    finally:
        teardown(world)
