"""Export a trained run to ONNX, then prove ONNX Runtime classifies like PyTorch did (or, for int8,
that the quantized model keeps fp32's top-1)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data import SPLIT_FILE, decode_images, find_dataset
from ..errors import ImgclassError
from ..fileio import atomic_write
from ..media.images import list_images
from ..models.onnx_export import export_onnx
from ..models.resolve import BEST
from ..preprocess import Preprocess
from ..train.checkpoint import load_checkpoint, model_from_checkpoint

MAX_PROB_DIFF = 1e-3  # fp32 ONNX Runtime vs torch differ by ~1e-6; more means a broken export
INT8_CHECK_COUNT = 500  # int8 moves top-1 by fractions of a point: the check needs more images than fp32's


def export_run(model_dir: str | Path, checkpoint: str | Path | None = None, output: str | Path | None = None,
               softmax: bool = True, check_images: str | Path | None = None, check_count: int = 32,
               precision: str = "fp32", calibration: str | Path | None = None) -> dict:
    """Write ``model_dir/model.onnx`` from ``model_best.pth.tar`` and check it against PyTorch; with
    ``precision="int8"``, ``model_dir/model-int8.onnx`` (see ``export_int8``).

    Args:
        model_dir: the run folder.
        checkpoint: which checkpoint (default ``model_dir/model_best.pth.tar``; a bare name is looked up in model_dir).
        output: the ONNX file (default ``model_dir/model.onnx``).
        softmax: include softmax (probabilities out); without it the model outputs logits.
        check_images: images for the agreement check (default: the run's val images).
        check_count: how many of them to use.
        precision: "fp32", or "int8" (bf16 and auto are runtime settings, not files).
        calibration: images that calibrate int8 (default: the run's train images).

    Returns:
        {"path", "images", "max_abs_diff", "top1_agreement"}; for int8 {"path", "images",
        "calibration", "top1_fp32", "top1_int8"}.

    Raises:
        ImgclassError: no checkpoint, no images for the check, or ONNX Runtime and PyTorch disagree.

    Example:
        >>> export_run("runs/ants")["max_abs_diff"] < 1e-4  # doctest: +SKIP
        True
    """
    if precision not in ("fp32", "int8"):
        raise ImgclassError(f"--precision {precision} is a runtime setting, not a file: export fp32 (leave --precision "
                            f"out) and run it with imgclass classify --model MODEL --precision {precision}")
    model_dir = Path(model_dir)
    state, model, preprocess, classes = load_run(model_dir, checkpoint)
    network = f"{state['arch']} trained on {Path(state['dataset']).name}"
    if precision == "int8":
        output = Path(output) if output is not None else model_dir / "model-int8.onnx"
        return export_int8(state, model_dir, model, preprocess, classes, network, output, softmax, calibration,
                           check_samples(state, model_dir, check_images, INT8_CHECK_COUNT))
    output = Path(output) if output is not None else model_dir / "model.onnx"
    export_onnx(model, output, preprocess, classes, network=network, softmax=softmax, dataset=state["dataset"])
    paths = check_paths(state, model_dir, check_images, check_count)
    return {"path": output, **check_agreement(model, output, paths)}


def export_int8(state: dict, model_dir: Path, model: torch.nn.Module, preprocess: Preprocess, classes: list[str],
                network: str, output: Path, softmax: bool, calibration: str | Path | None,
                samples: list[tuple[Path, int | None]]) -> dict:
    """Write the run's model quantized to int8 (QDQ ONNX, which OpenVINO, ONNX Runtime and TensorRT
    run), calibrated on ``calibration`` or the run's train images, once its top-1 on ``samples``
    is checked to be within half a point of fp32's: nothing is written when it is not."""
    from ..runtime.precision import calibrated_int8, required_calibration

    paths = required_calibration(calibration, state["dataset"])
    with tempfile.TemporaryDirectory(prefix="imgclass-") as scratch:
        fp32 = export_onnx(model, Path(scratch) / "model.onnx", preprocess, classes, network=network, softmax=softmax,
                           dataset=state["dataset"]).read_bytes()
    int8 = calibrated_int8(fp32, preprocess, paths, str(output))
    result = check_int8(fp32, int8, output, preprocess, samples)
    atomic_write(output, lambda tmp: Path(tmp).write_bytes(int8))
    return {"path": output, "calibration": len(paths), **result}


def check_int8(fp32: bytes, int8: bytes, output: Path, preprocess: Preprocess,
               samples: list[tuple[Path, int | None]]) -> dict:
    """Top-1 of the int8 model (on OpenVINO, as ``--precision int8`` runs it) and of fp32 (ONNX
    Runtime) on real images: their labels, or fp32's probabilities where they have none.

    Raises:
        ImgclassError: int8 loses more than MAX_TOP1_DROP of top-1.
    """
    import onnxruntime as ort
    from ..runtime.precision import MAX_TOP1_DROP, decoded, probabilities, top1
    from ..runtime.onnx import as_probabilities
    from ..runtime.openvino import OpenVinoEngine

    labels = [label for _, label in samples]
    images, truth = decoded([p for p, _ in samples], preprocess, "check", None if None in labels else labels)
    session = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    runs = {"fp32": lambda x: as_probabilities(session.run(None, {session.get_inputs()[0].name: x})[0]),
            "int8": OpenVinoEngine(int8, "int8", str(output)).run}
    if None in labels:
        truth = probabilities(runs["fp32"], images)
    scores = {p: top1(run, images, truth) for p, run in runs.items()}
    if scores["int8"] < scores["fp32"] - MAX_TOP1_DROP:
        raise ImgclassError(f"{output}: not written: int8 top-1 {scores['int8']:.1%} against fp32's {scores['fp32']:.1%} "
                            f"on {len(images)} real images, more than half a point lost; calibrate on more images like "
                            "the ones you classify (--calibration FOLDER), or keep the fp32 model")
    return {"images": len(images), "top1_fp32": scores["fp32"], "top1_int8": scores["int8"]}


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
    return [p for p, _ in check_samples(state, model_dir, check_images, count)]


def check_samples(state: dict, model_dir: Path, check_images, count: int) -> list[tuple[Path, int | None]]:
    """Up to ``count`` (image, label) pairs for an export check: ``check_images`` (label None), else
    the run's val images (its train images where it has none) with their labels."""
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


def check_agreement(model: torch.nn.Module, onnx_path: Path, paths: list[Path]) -> dict:
    """Run the exported file through ``imgclass.Classifier`` (exactly as ``classify`` does) and the
    PyTorch model on the same preprocessed images; raise if they disagree."""
    from ..classifier import Classifier

    net = Classifier(model=onnx_path, device="cpu")
    images, _ = decode_images([(p, 0) for p in paths], net.preprocess, desc="check")
    if len(images) == 0:
        raise ImgclassError(f"none of the {len(paths)} images for the ONNX check could be read; pass --check-images DIR")
    batch = net.preprocess.normalize(images.pixels)
    return compare_with_torch(net.probabilities(batch), model, batch, onnx_path, "ONNX Runtime")


def compare_with_torch(onnx_probs: np.ndarray, model: torch.nn.Module, torch_batch: np.ndarray, onnx_path: Path,
                       what: str) -> dict:
    """Check an exported file's probabilities against PyTorch's on ``torch_batch`` (the same images);
    raise if they differ by more than MAX_PROB_DIFF or any top-1 differs."""
    with torch.no_grad():
        torch_probs = torch.softmax(model.eval()(torch.from_numpy(torch_batch)), 1).numpy()
    diff = float(np.abs(onnx_probs - torch_probs).max())
    agree = float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())
    if diff > MAX_PROB_DIFF or agree < 1:
        raise ImgclassError(f"{onnx_path}: {what} and PyTorch disagree on {len(torch_batch)} real images "
                            f"(max prob difference {diff:.2e}, top-1 agreement {agree:.1%}); do not use this file")
    return {"images": len(torch_batch), "max_abs_diff": diff, "top1_agreement": agree}
