"""What defines a training run, and the names of its files (no torch here: the CLI builds its
parser from these defaults without paying for the import)."""
from __future__ import annotations

from dataclasses import dataclass

from ..models import DEFAULT_NETWORK

FORMAT = 1  # checkpoint layout version
# The settings that define the network a checkpoint holds: a resumed run keeps them.
NETWORK_SETTINGS = ("arch", "resolution", "pretrained", "weights")


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
    finetune: str = "tail"
