"""Transfer learning: train a classifier on a dataset folder, checkpoints, reports, export, eval."""
from .checkpoint import BEST, CHECKPOINT, load_checkpoint, model_from_checkpoint
from .engine import TrainConfig, train

__all__ = ["BEST", "CHECKPOINT", "TrainConfig", "load_checkpoint", "model_from_checkpoint", "train"]
