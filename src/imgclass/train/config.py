"""What defines a training run, and the names of its files (no torch here: the CLI builds its
parser from these defaults without paying for the import)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ImgclassError
from ..models import DEFAULT_NETWORK

FORMAT = 1  # checkpoint layout version
# The settings that define the network a checkpoint holds: a resumed run keeps them.
NETWORK_SETTINGS = ("arch", "resolution", "pretrained", "weights")
MIRROR_UP_TO = 20_000  # training images up to which a mirrored view is cached too: above it, the data
# itself is varied enough, and a second trunk pass would double the run's dominant cost
CV_ROWS = 20_000  # images the head's L2 penalty is cross-validated on (evenly spaced): enough to choose it well


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in its checkpoints).

    Attributes:
        dataset: the dataset folder (see ``imgclass.data.find_dataset``).
        model_dir: where checkpoints, labels.txt, results and plots go.
        arch: registry network (``imgclass models``).
        epochs: fine-tuning epochs after the head fit (0: head only).
        batch_size: images per step (and per forward pass when caching).
        lr: peak fine-tuning learning rate (AdamW).
        weight_decay: AdamW's decoupled weight decay on the fine-tuned blocks.
        label_smoothing: for the fine-tuning loss.
        patience: stop after this many epochs without a better val accuracy.
        workers: threads decoding images (and with ``finetune="all"`` the DataLoader processes that decode
            and augment the training images).
        resolution: network input side (default: the network's own, 224 for lite0).
        pretrained: start from ImageNet weights (without them the trunk's features are random).
        seed: seeds the shuffling of every epoch.
        val_split: fraction held out per class when the dataset has no val folder.
        device: "auto", "cpu" or "cuda" (mixed precision and channels-last on CUDA).
        weights: a weights file for ``arch`` instead of the installed one.
        time: a budget in seconds: the network and epochs are chosen to finish within it (see ``plan.py``).
        finetune: the recipe: "tail" (a head fit on the frozen trunk's cached features, then the last
            block stage fine-tuned on cached activations: seconds on a CPU, best on small data) or "all"
            (every layer trained on images streamed from disk with augmentation: large or unusual data,
            a GPU; see ``finetune_all.py``).
    """

    dataset: str
    model_dir: str = "models/run"
    arch: str = DEFAULT_NETWORK
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 2
    workers: int = 2
    resolution: int | None = None
    pretrained: bool = True
    seed: int = 0
    val_split: float = 0.2
    device: str = "auto"
    weights: str | None = None
    time: float | None = None
    finetune: str = "tail"


_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``5m``, ``1h30m``, ``1.5h``.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90")
        (5400.0, 90.0)

    Raises:
        ImgclassError: not a positive duration.
    """
    text = text.strip().lower()
    parts = re.fullmatch(r"((?:\d+(?:\.\d*)?[hms])+)|(\d+(?:\.\d*)?)", text)
    if parts is None or not (seconds := float(text) if parts[2] else sum(
            float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?)([hms])", text))) > 0:
        raise ImgclassError(f"--time {text!r}: give a duration such as 90s, 5m or 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as people say it.

    Example:
        >>> format_duration(72), format_duration(3725), format_duration(9.4), format_duration(1200)
        ('1 min 12 s', '1 h 2 min', '9 s', '20 min')
    """
    seconds = round(seconds)
    big, small = (seconds // 3600, seconds % 3600 // 60) if seconds >= 3600 else (seconds // 60, seconds % 60)
    units = ("h", "min") if seconds >= 3600 else ("min", "s")
    if not big:
        return f"{small} s"
    return f"{big} {units[0]} {small} {units[1]}" if small else f"{big} {units[0]}"
