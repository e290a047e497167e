"""Transfer learning: train a classifier on a dataset folder, checkpoints, reports, export, eval.

``TrainConfig`` and the file names import without torch; the rest loads on first use.
"""
from importlib import import_module

from ..models.resolve import BEST, CHECKPOINT
from .config import TrainConfig

_LAZY = {"train": "recipes", "load_checkpoint": "checkpoint", "model_from_checkpoint": "checkpoint",
         "resume_config": "checkpoint"}
__all__ = ["BEST", "CHECKPOINT", "TrainConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
