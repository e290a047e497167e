"""Proof that an exported file classifies as its PyTorch model does (int8: that it keeps fp32's
top-1), on real images: the run's val images, or those the user gives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import SPLIT_FILE, decode_images, find_dataset
from ..errors import ImgclassError
from ..media.inputs import list_images
from ..preprocess import Preprocess

MAX_PROB_DIFF = 1e-3  # fp32 ONNX Runtime vs torch differ by ~1e-6; more means a broken export


def check_agreement(model: torch.nn.Module, onnx_path: Path, paths: list[Path]) -> dict:
    """Run the exported file through ``imgclass.Classifier`` (exactly as ``classify`` does) and the
    PyTorch model on the same preprocessed images.

    Args:
        model: the PyTorch model the file was exported from (logits out).
        onnx_path: the exported file.
        paths: the images.

    Returns:
        {"images", "max_abs_diff", "top1_agreement"} (see :func:`compare_with_torch`).

    Raises:
        ImgclassError: none of the images can be read, or the two disagree.

    Example:
        >>> check_agreement(model, Path("runs/ants/model.onnx"), images)["top1_agreement"]  # doctest: +SKIP
        1.0
    """
    from ..classifier import Classifier

    net = Classifier(model=onnx_path, device="cpu")
    images, _ = decode_images([(p, 0) for p in paths], net.preprocess, desc="check")
    if len(images) == 0:
        raise ImgclassError(f"none of the {len(paths)} images for the ONNX check could be read; pass --check-images DIR")
    batch = net.preprocess.normalize(images.pixels)
    return compare_with_torch(net.probabilities(batch), model, batch, onnx_path, "ONNX Runtime")


def compare_with_torch(onnx_probs: np.ndarray, model: torch.nn.Module, torch_batch: np.ndarray, onnx_path: Path,
                       what: str) -> dict:
    """Check an exported file's probabilities against PyTorch's on ``torch_batch`` (the same images).

    Args:
        onnx_probs: the file's (N, classes) probabilities.
        model: the PyTorch model (logits out).
        torch_batch: the same N images as the model takes them (NCHW float32).
        onnx_path: the file, in the error message.
        what: what ran the file, in the error message ("ONNX Runtime").

    Returns:
        {"images": N, "max_abs_diff": the largest probability difference, "top1_agreement": 0..1}.

    Raises:
        ImgclassError: the probabilities differ by more than MAX_PROB_DIFF, or any top-1 differs.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
        >>> batch = np.ones((1, 3, 2, 2), np.float32)
        >>> probs = torch.softmax(net(torch.from_numpy(batch)), 1).detach().numpy()
        >>> compare_with_torch(probs, net, batch, Path("model.onnx"), "ONNX Runtime")["top1_agreement"]
        1.0
    """
    with torch.no_grad():
        torch_probs = torch.softmax(model.eval()(torch.from_numpy(torch_batch)), 1).numpy()
    diff = float(np.abs(onnx_probs - torch_probs).max())
    agree = float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())
    if diff > MAX_PROB_DIFF or agree < 1:
        raise ImgclassError(f"{onnx_path}: {what} and PyTorch disagree on {len(torch_batch)} real images "
                            f"(max prob difference {diff:.2e}, top-1 agreement {agree:.1%}); do not use this file")
    return {"images": len(torch_batch), "max_abs_diff": diff, "top1_agreement": agree}


def check_int8(fp32: bytes, int8: bytes, output: Path, preprocess: Preprocess,
               samples: list[tuple[Path, int | None]]) -> dict:
    """Top-1 of the int8 model (on OpenVINO, as ``--precision int8`` runs it) and of fp32 (ONNX
    Runtime) on real images: their labels, or fp32's probabilities where they have none.

    Args:
        fp32: the fp32 model's bytes.
        int8: the int8 model's bytes.
        output: where int8 is to be written, in messages.
        preprocess: the model's preprocessing.
        samples: (image, label) pairs; a label None for images the user gave.

    Returns:
        {"images", "top1_fp32", "top1_int8"}.

    Raises:
        ImgclassError: int8 loses more than MAX_TOP1_DROP of top-1.
    """
    from ..runtime.onnx import as_probabilities, session
    from ..runtime.openvino import OpenVinoEngine
    from ..runtime.precision import MAX_TOP1_DROP, decoded, probabilities, top1

    labels = [label for _, label in samples]
    images, truth = decoded([p for p, _ in samples], preprocess, "check", None if None in labels else labels)
    reference = session(fp32, f"{output} (its fp32 model)")
    runs = {"fp32": lambda x: as_probabilities(reference.run(None, {reference.get_inputs()[0].name: x})[0]),
            "int8": OpenVinoEngine(int8, "int8", str(output)).run}
    if None in labels:
        truth = probabilities(runs["fp32"], images)
    scores = {p: top1(run, images, truth) for p, run in runs.items()}
    if scores["int8"] < scores["fp32"] - MAX_TOP1_DROP:
        raise ImgclassError(f"{output}: not written: int8 top-1 {scores['int8']:.1%} against fp32's {scores['fp32']:.1%} "
                            f"on {len(images)} real images, more than half a point lost; calibrate on more images like "
                            "the ones you classify (--calibration FOLDER), or keep the fp32 model")
    return {"images": len(images), "top1_fp32": scores["fp32"], "top1_int8": scores["int8"]}


def check_paths(state: dict, model_dir: Path, check_images: str | Path | None, count: int) -> list[Path]:
    """Up to ``count`` images for an export check: ``check_images``, else the run's val images."""
    return [p for p, _ in check_samples(state, model_dir, check_images, count)]


def check_samples(state: dict, model_dir: Path, check_images: str | Path | None,
                  count: int) -> list[tuple[Path, int | None]]:
    """Up to ``count`` (image, label) pairs for an export check: ``check_images`` (label None), else
    the run's val images (its train images where it has none) with their labels.

    Raises:
        ImgclassError: no ``check_images`` and the run's dataset is gone.
    """
    if check_images is not None:
        samples = [(p, None) for p in list_images(check_images)]
    else:
        root = Path(state["dataset"])
        if not root.is_dir():
            raise ImgclassError(f"{root}: the run's dataset is gone, so the ONNX check has no images; "
                                "pass --check-images DIR (a few real images)")
        ds = find_dataset(root, state["config"]["val_split"], split_file=model_dir / SPLIT_FILE)
        samples = ds.val or ds.train
    step = max(1, len(samples) // count)  # spread over the classes (samples are grouped by class)
    return samples[::step][:count]
