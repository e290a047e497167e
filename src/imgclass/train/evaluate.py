"""Evaluate a model on a dataset folder: a trained checkpoint or run folder, an exported ONNX
file, or a pretrained ImageNet network whose classes are matched to the dataset's by name (or by
a mapping file). Top-1/top-5, per-class precision/recall, a confusion matrix PNG."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import SPLIT_FILE, decode_images, find_dataset
from ..errors import ImgclassError
from ..labels import imagenet_labels
from ..models.resolve import ModuleRef, OnnxRef, resolve_model
from ..preprocess import Preprocess
from . import report
from .checkpoint import load_checkpoint, model_from_checkpoint
from .head import imagenet_matches


@dataclass
class Scorer:
    """A model ready to score images: class names (of its outputs) and a batch -> probabilities function."""

    name: str
    labels: list[str]
    preprocess: Preprocess
    probabilities: Callable[[np.ndarray], np.ndarray]
    imagenet: bool = False


def open_scorer(model: str | Path, device: str = "auto") -> Scorer:
    """A run folder (its model.onnx, else its best checkpoint), an ONNX file, a checkpoint or a
    registry name, as ``models.resolve`` reads ``--model``; every engine comes from ``select_engine``.

    Example:
        >>> scorer = open_scorer("runs/ants")  # doctest: +SKIP
        >>> scorer.labels  # doctest: +SKIP
        ['ants', 'bees']
    """
    path = Path(model).expanduser()
    if not path.exists() and path.suffix not in (".onnx", ".tar", ".pth", ".pt"):  # a registry network
        from ..classifier import Classifier

        net = Classifier(str(model), device=device)
        return Scorer(net.network_name, imagenet_labels()[0], net.preprocess, net.probabilities, imagenet=True)
    found = resolve_model(model=path, checkpoints=True)
    if isinstance(found, OnnxRef):
        from ..classifier import Classifier

        net = Classifier(model=found, device=device)
        return Scorer(net.network_name, list(net.labels), net.preprocess, net.probabilities)
    path = found
    from ..runtime.cache import cache_key, file_sha256
    from ..runtime.select import select_engine

    state = load_checkpoint(path)
    net, preprocess, classes = model_from_checkpoint(state)
    engine = select_engine(ModuleRef(net, cache_key(file_sha256(path), "eval"), f"{state['arch']}-{path.stem}", preprocess),
                           device)
    return Scorer(f"{state['arch']} ({path})", classes, preprocess, engine.run)


def class_columns(scorer: Scorer, classes: list[str], mapping: str | Path | None = None) -> list[list[int]]:
    """For each dataset class, the model outputs whose probabilities add up to it.

    A trained model's outputs are matched by name. An ImageNet network's are matched by ImageNet
    label (``bees`` -> ``bee``) or by a mapping file: lines ``CLASS<TAB>IMAGENET`` (or ``CLASS: IMAGENET``),
    IMAGENET an index 0-999 or a label; several lines for one class add their outputs up.
    """
    if mapping is not None:
        return _read_mapping(Path(mapping), classes, scorer.labels)
    if scorer.imagenet:
        found = imagenet_matches(classes)
        missing = [c for c, i in zip(classes, found) if i is None]
        if missing:
            raise ImgclassError(f"class(es) {', '.join(missing)} are not ImageNet labels; pass --mapping FILE with lines "
                                "'CLASS<TAB>IMAGENET LABEL OR INDEX'")
        return [[i] for i in found]
    missing = [c for c in classes if c not in scorer.labels]
    if missing:
        raise ImgclassError(f"the model knows no class {', '.join(missing)} (it has {', '.join(scorer.labels)}); "
                            "evaluate on the dataset it was trained for, or pass --mapping")
    return [[scorer.labels.index(c)] for c in classes]


def _read_mapping(path: Path, classes: list[str], labels: list[str]) -> list[list[int]]:
    try:
        lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and not l.startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise ImgclassError(f"{path}: cannot read mapping file ({e})") from None
    by_name = {}
    for i, label in enumerate(labels):
        for synonym in [label, *label.split(",")]:
            by_name.setdefault(synonym.strip().lower(), i)
    columns: dict[str, list[int]] = {c: [] for c in classes}
    for number, line in enumerate(lines, 1):
        cls, sep, target = line.partition("\t") if "\t" in line else line.partition(":")
        cls, target = cls.strip(), target.strip()
        if not sep or cls not in columns:
            raise ImgclassError(f"{path}:{number}: expected 'CLASS<TAB>OUTPUT' with CLASS one of {', '.join(classes)}")
        index = int(target) if target.isdigit() else by_name.get(target.lower())
        if index is None or not 0 <= index < len(labels):
            raise ImgclassError(f"{path}:{number}: '{target}' is not an output of the model (a label or 0-{len(labels) - 1})")
        columns[cls].append(index)
    empty = [c for c, cols in columns.items() if not cols]
    if empty:
        raise ImgclassError(f"{path}: no line maps class(es) {', '.join(empty)}; give each class at least one line")
    return list(columns.values())


def evaluate_dataset(dataset: str | Path, model: str | Path, split: str = "val", mapping: str | Path | None = None,
                     batch_size: int = 32, workers: int = 2, device: str = "auto", val_split: float = 0.2,
                     confusion_png: str | Path | None = None) -> dict:
    """Score ``model`` on a split of ``dataset``; writes a confusion matrix PNG when ``confusion_png`` is given.

    Returns:
        {"top1", "top5" (in %), "images", "classes", "matrix", "table", "skipped", "model"}.

    Example:
        >>> r = evaluate_dataset("data/hymenoptera", "efficientnet-lite0")  # doctest: +SKIP
        >>> round(r["top1"], 1)  # doctest: +SKIP
        98.0
    """
    model_dir = Path(model).parent if Path(model).is_file() else Path(model)
    ds = find_dataset(dataset, val_split, split_file=model_dir / SPLIT_FILE)
    samples = {"train": ds.train, "val": ds.val, "test": ds.test}.get(split)
    if samples is None:
        raise ImgclassError(f"--split {split}: use train, val or test")
    if not samples:
        raise ImgclassError(f"{ds.root}: no {split} images; pick another --split")
    scorer = open_scorer(model, device)
    columns = class_columns(scorer, ds.classes, mapping)
    images, bad = decode_images(samples, scorer.preprocess, workers, f"decode {split}")
    if len(images) == 0:
        raise ImgclassError(f"{ds.root}: none of the {split} images could be read")
    from tqdm import tqdm

    probs = []
    for i in tqdm(range(0, len(images), batch_size), desc="evaluate", unit="batch", leave=False, disable=None):
        out = scorer.probabilities(scorer.preprocess.normalize(images.pixels[i:i + batch_size]))
        probs.append(np.stack([out[:, cols].sum(1) for cols in columns], 1))
    probs = np.concatenate(probs)
    matrix = report.confusion(images.labels, probs.argmax(1), len(ds.classes))
    result = {"model": scorer.name, "images": len(images), "classes": ds.classes, "matrix": matrix,
              "top1": report.topk_accuracy(probs, images.labels, 1) * 100,
              "top5": report.topk_accuracy(probs, images.labels, 5) * 100,
              "table": report.per_class_table(ds.classes, matrix), "skipped": bad}
    if confusion_png is not None:
        report.plot_confusion(confusion_png, ds.classes, matrix, f"{scorer.name} on {ds.root.name} {split}: "
                                                                  f"top-1 {result['top1']:.2f}%")
    return result
