"""Export a trained run to ONNX, then prove ONNX Runtime classifies like PyTorch did."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import SPLIT_FILE, decode_images, find_dataset
from ..errors import ImgclassError
from ..export import export_onnx
from ..media.images import list_images
from ..preprocess import Preprocess
from .checkpoint import BEST, load_checkpoint, model_from_checkpoint

MAX_PROB_DIFF = 1e-3  # fp32 ONNX Runtime vs torch differ by ~1e-6; more means a broken export


def export_run(model_dir: str | Path, checkpoint: str | Path | None = None, output: str | Path | None = None,
               softmax: bool = True, check_images: str | Path | None = None, check_count: int = 32) -> dict:
    """Write ``model_dir/model.onnx`` from ``model_best.pth.tar`` and check it against PyTorch.

    Args:
        model_dir: the run folder.
        checkpoint: which checkpoint (default ``model_dir/model_best.pth.tar``; a bare name is looked up in model_dir).
        output: the ONNX file (default ``model_dir/model.onnx``).
        softmax: include softmax (probabilities out); without it the model outputs logits.
        check_images: images for the agreement check (default: the run's val images).
        check_count: how many of them to use.

    Returns:
        {"path", "images", "max_abs_diff", "top1_agreement"}.

    Raises:
        ImgclassError: no checkpoint, no images for the check, or ONNX Runtime and PyTorch disagree.

    Example:
        >>> export_run("runs/ants")["max_abs_diff"] < 1e-4  # doctest: +SKIP
        True
    """
    model_dir = Path(model_dir)
    state, model, preprocess, classes = load_run(model_dir, checkpoint)
    output = Path(output) if output is not None else model_dir / "model.onnx"
    network = f"{state['arch']} trained on {Path(state['dataset']).name}"
    export_onnx(model, output, preprocess, classes, network=network, softmax=softmax)
    paths = check_paths(state, model_dir, check_images, check_count)
    return {"path": output, **check_agreement(model, output, paths)}


def load_run(model_dir: Path, checkpoint: str | Path | None = None) -> tuple[dict, torch.nn.Module, Preprocess, list[str]]:
    """A run's checkpoint (default ``model_best.pth.tar``; a bare name is looked up in ``model_dir``)
    and the network, preprocessing and class names rebuilt from it."""
    ckpt = Path(checkpoint) if checkpoint is not None else model_dir / BEST
    if not ckpt.is_file() and (model_dir / ckpt).is_file():
        ckpt = model_dir / ckpt  # jetson's --input is relative to --model-dir
    state = load_checkpoint(ckpt)
    return (state, *model_from_checkpoint(state))


def check_paths(state: dict, model_dir: Path, check_images, count: int) -> list[Path]:
    """Up to ``count`` images for an export check: ``check_images``, else the run's val images."""
    if check_images is not None:
        paths = list_images(check_images)
    else:
        root = Path(state["dataset"])
        if not root.is_dir():
            raise ImgclassError(f"{root}: the run's dataset is gone, so the ONNX check has no images; "
                                "pass --check-images DIR (a few real images)")
        ds = find_dataset(root, state["config"]["val_split"], split_file=model_dir / SPLIT_FILE)
        paths = [p for p, _ in ds.val or ds.train]
    step = max(1, len(paths) // count)  # spread over the classes (samples are grouped by class)
    return paths[::step][:count]


def check_agreement(model: torch.nn.Module, onnx_path: Path, paths: list[Path]) -> dict:
    """Run the exported file through ``imgclass.Classifier`` (exactly as ``classify`` does) and the
    PyTorch model on the same preprocessed images; raise if they disagree."""
    from ..api import Classifier

    net = Classifier(model=onnx_path, device="cpu")
    images, _ = decode_images([(p, 0) for p in paths], net.preprocess, desc="check")
    if len(images) == 0:
        raise ImgclassError(f"none of the {len(paths)} images for the ONNX check could be read; pass --check-images DIR")
    batch = net.preprocess.normalize(images.pixels)
    onnx_probs = net.probabilities(batch)
    with torch.no_grad():
        torch_probs = torch.softmax(model.eval()(torch.from_numpy(batch)), 1).numpy()
    diff = float(np.abs(onnx_probs - torch_probs).max())
    agree = float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())
    if diff > MAX_PROB_DIFF or agree < 1:
        raise ImgclassError(f"{onnx_path}: ONNX Runtime and PyTorch disagree on {len(images)} real images "
                            f"(max prob difference {diff:.2e}, top-1 agreement {agree:.1%}); do not use this file")
    return {"images": len(images), "max_abs_diff": diff, "top1_agreement": agree}
