"""What a run shows: per-class precision/recall, confusion matrix, results.csv and loss/accuracy curves.
Every file is written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

CSV_FIELDS = ["epoch", "stage", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_table(classes: list[str], matrix: np.ndarray) -> str:
    """Precision, recall and support per class, as text.

    Example:
        >>> print(per_class_table(["ants", "bees"], np.array([[69, 1], [2, 81]])))  # doctest: +NORMALIZE_WHITESPACE
        class  precision  recall  images
        ants      97.18%  98.57%      70
        bees      98.78%  97.59%      83
    """
    width = max(5, *map(len, classes))
    tp = np.diag(matrix).astype(float)
    precision = tp / np.maximum(matrix.sum(0), 1)
    recall = tp / np.maximum(matrix.sum(1), 1)
    rows = [f"{'class':<{width}}  precision  recall  images"]
    rows += [f"{c:<{width}}  {p * 100:8.2f}% {r * 100:6.2f}%  {n:6d}"
             for c, p, r, n in zip(classes, precision, recall, matrix.sum(1))]
    return "\n".join(rows)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores."""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def write_results_csv(path: str | Path, history: list[dict]) -> Path:
    """One row per epoch (epoch 0 is the head fit)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_results(path: str | Path, history: list[dict]) -> Path:
    """Loss and accuracy per epoch, train and val, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy (%)")):
        for split in ("train", "val"):
            ax.plot(epochs, [r[f"{split}_{key}"] for r in history], marker="o", label=split)
        ax.set_xlabel("epoch (0 = head fit on cached features)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save_figure(fig, path)


def plot_confusion(path: str | Path, classes: list[str], matrix: np.ndarray, title: str = "") -> Path:
    """The confusion matrix (rows true, columns predicted) as a PNG, counts written in the cells."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    side = min(4 + 0.5 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 4 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:
        peak = matrix.max() or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > peak / 2 else "black")
    return _save_figure(fig, path)
