"""Export a trained run to ONNX (fp32, or int8), checked on real images before it is called done
(see :mod:`imgclass.export.check`)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..errors import ImgclassError
from ..fileio import atomic_write
from ..models.onnx_export import export_onnx
from ..models.resolve import BEST
from ..preprocess import Preprocess
from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from .check import check_agreement, check_int8, check_paths, check_samples

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


def load_run(model_dir: Path, checkpoint: str | Path | None = None) -> tuple[dict, torch.nn.Module, Preprocess, list[str]]:
    """A run's checkpoint (default ``model_best.pth.tar``; a bare name is looked up in ``model_dir``)
    and the network, preprocessing and class names rebuilt from it."""
    ckpt = Path(checkpoint) if checkpoint is not None else model_dir / BEST
    if not ckpt.is_file() and (model_dir / ckpt).is_file():
        ckpt = model_dir / ckpt  # jetson's --input is relative to --model-dir
    state = load_checkpoint(ckpt)
    return (state, *model_from_checkpoint(state))
