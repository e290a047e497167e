"""Back to a Jetson: an ONNX file that jetson-inference's
``imagenet --model=<arch>.onnx --input_blob=input_0 --output_blob=output_0 --labels=labels.txt`` loads
and that answers as imgclass does.

jetson-inference feeds an ONNX classifier its own way (c/imageNet.cpp, c/tensorConvert.cu): the whole
frame sampled nearest-neighbor to the network's input size (no crop, aspect ratio not kept), RGB scaled
to 0..1, minus the ImageNet mean, over the ImageNet std. imgclass's models were trained on a center
crop (short side to size/crop_pct, then size x size) normalized with their own mean/std. The exported
graph takes jetson's input at the pre-crop side, ``Preprocess.decode_size`` (``round(size / crop_pct)``),
and does the rest itself: a center crop (Slice) to the model's size, then one per-channel affine from
jetson's normalization to the model's, then the model and softmax. On a square frame that is exactly
imgclass's preprocessing (up to the resampling filter); other aspect ratios are stretched, as jetson
does for every model.

The file has a static batch of 1, ONNX opset 13 (JetPack 4.6's TensorRT 8.2, the last for the Jetson
Nano, parses opsets 7 to 13; later TensorRTs parse it too) and standard ONNX operators only.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ImgclassError
from ..fileio import atomic_write
from ..models.onnx import INPUT_NAME, META_LABELS, META_NETWORK, META_PREPROCESS, OUTPUT_NAME
from ..models.onnx_export import WithSoftmax, _quiet_loggers
from ..preprocess import Preprocess
from .check import check_paths, compare_with_torch
from .run import load_run

if TYPE_CHECKING:
    import onnx  # imported where used: only an export needs it

JETSON_MEAN = (0.485, 0.456, 0.406)  # imageNet.cpp's cudaTensorNormMeanRGB for ONNX models, on 0..1 RGB
JETSON_STD = (0.229, 0.224, 0.225)
JETSON_OPSET = 13


def jetson_preprocess(image: np.ndarray, side: int) -> np.ndarray:
    """jetson-inference's imageNet preprocessing of an HxWx3 uint8 RGB frame, re-implemented exactly:
    nearest-neighbor sampling ``src = int(dst * (in / out))`` in float32 to ``side`` x ``side``, then
    ``(rgb / 255 - mean) / std`` with the ImageNet mean/std; returns 3 x side x side float32.

    Example:
        >>> jetson_preprocess(np.zeros((375, 500, 3), np.uint8), 256).shape
        (3, 256, 256)
    """
    height, width = image.shape[:2]

    def sample(n_in: int) -> np.ndarray:
        scale = np.float32(n_in) / np.float32(side)
        return (np.arange(side, dtype=np.float32) * scale).astype(np.int64)

    pixels = image[sample(height)][:, sample(width), :3].astype(np.float32)
    x = (pixels * np.float32(1 / 255) - np.float32(JETSON_MEAN)) / np.float32(JETSON_STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def jetson_input_preprocess(preprocess: Preprocess) -> Preprocess:
    """How imgclass itself feeds an exported file (its metadata): jetson's whole-frame resize to the
    input side and ImageNet normalization, with a smooth filter where jetson samples nearest."""
    return Preprocess(size=preprocess.decode_size, resize="stretch", interpolation="bilinear",
                      mean=JETSON_MEAN, std=JETSON_STD)


class FromJetsonInput(nn.Module):
    """Turns jetson's input (whole frame at the pre-crop side, ImageNet-normalized RGB) into the model's:
    center crop to ``preprocess.size``, channel order, and the model's own normalization.

    The normalization is an affine per channel: ``x_model = x_jetson * std_j / std_m + (mean_j - mean_m) / std_m``.
    """

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        side, size = preprocess.decode_size, preprocess.size
        self.top = (side - size) // 2  # as Preprocess.resize_and_crop centers its crop
        self.size = size
        mean, std = np.array(JETSON_MEAN, np.float64), np.array(JETSON_STD, np.float64)
        self.flip = preprocess.channel_order == "bgr"
        if self.flip:
            mean, std = mean[::-1], std[::-1]
        model_mean, model_std = np.array(preprocess.mean, np.float64), np.array(preprocess.std, np.float64)
        self.register_buffer("scale", torch.tensor(std / model_std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor((mean - model_mean) / model_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, self.top:self.top + self.size, self.top:self.top + self.size]
        if self.flip:
            x = x.flip(1)
        return x * self.scale + self.shift


def export_jetson_onnx(model: nn.Module, path: str | Path, preprocess: Preprocess, labels: Sequence[str],
                       network: str = "", softmax: bool = True) -> Path:
    """Write ``model`` (logits out) for jetson-inference: input ``input_0`` [1, 3, S, S] taking jetson's
    preprocessing (S = ``preprocess.decode_size``, the pre-crop side), output ``output_0`` [1, classes]
    (softmax unless ``softmax=False``), opset 13, one self-contained file. Labels and how to feed it
    travel in the metadata, so ``imgclass classify --model`` runs the same file. Atomic.

    Example:
        >>> export_jetson_onnx(net, "runs/ants/efficientnet-lite0.onnx", Preprocess(size=224), ["ants", "bees"])  # doctest: +SKIP
    """
    import onnx

    graph = nn.Sequential(FromJetsonInput(preprocess), model)
    graph = (WithSoftmax(graph) if softmax else graph).eval()
    # The pre-crop side: jetson's whole-frame resize to it, then the in-graph center crop, is imgclass's
    # resize + crop on a square frame.
    side = preprocess.decode_size
    meta = {META_LABELS: json.dumps(list(labels)), META_NETWORK: network,
            META_PREPROCESS: jetson_input_preprocess(preprocess).to_json()}

    def write(tmp: str) -> None:
        with tempfile.TemporaryDirectory(prefix="imgclass-jetson-") as work:
            traced, folded = Path(work) / "traced.onnx", Path(work) / "folded.onnx"
            # The TorchScript exporter writes opset 13 directly (the dynamo one starts at 18 and cannot
            # convert down); it leaves the TF "same" padding as shape arithmetic, folded next.
            with warnings.catch_warnings(), _quiet_loggers(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, (torch.zeros(1, 3, side, side),), str(traced), dynamo=False,
                                  opset_version=JETSON_OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  do_constant_folding=True)
            proto = _fold_constants(traced, folded)
        onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto)
        onnx.save_model(proto, tmp)

    return atomic_write(path, write)


def _fold_constants(source: Path, folded: Path) -> onnx.ModelProto:
    """ONNX Runtime's basic optimizations (constant folding, Pad into Conv, BatchNorm into Conv), which
    write standard ONNX operators only; returns the model with the opset imports it really uses."""
    import onnx
    from onnxruntime import GraphOptimizationLevel

    from ..runtime.onnx import session

    # BASIC: EXTENDED (the engines' level) fuses into com.microsoft operators, which TensorRT cannot parse.
    session(source, "the traced Jetson graph", optimized_to=folded, level=GraphOptimizationLevel.ORT_ENABLE_BASIC)
    proto = onnx.load(str(folded))
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:  # TensorRT would reject the file
        raise ImgclassError(f"the Jetson export produced non-standard ONNX operators ({', '.join(foreign)}); "
                            "please report this with the network's name")
    kept = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto


def export_jetson_run(model_dir: str | Path, checkpoint: str | Path | None = None, output: str | Path | None = None,
                      softmax: bool = True, check_images: str | Path | None = None, check_count: int = 32) -> dict:
    """Write ``model_dir/<arch>.onnx`` (see :func:`export_jetson_onnx`) and ``labels.txt`` beside it from
    a run's ``model_best.pth.tar``, then check the file against PyTorch on real images.

    Args:
        model_dir: the run folder.
        checkpoint: which checkpoint (default ``model_best.pth.tar``; a bare name is looked up in model_dir).
        output: the ONNX file (default ``model_dir/<arch>.onnx``, jetson onnx_export.py's name).
        softmax: include softmax (probabilities out); without it the model outputs logits.
        check_images: images for the agreement check (default: the run's val images).
        check_count: how many of them to use.

    Returns:
        {"path", "labels", "input_size", "images", "max_abs_diff", "top1_agreement"}.

    Raises:
        ImgclassError: no checkpoint, no images for the check, a different labels.txt in the output's
            folder, or the file and PyTorch disagree.

    Example:
        >>> export_jetson_run("runs/ants")["path"].name  # doctest: +SKIP
        'efficientnet-lite0.onnx'
    """
    model_dir = Path(model_dir)
    state, model, preprocess, classes = load_run(model_dir, checkpoint)
    output = Path(output) if output is not None else model_dir / f"{state['arch']}.onnx"
    labels = write_labels(output.with_name("labels.txt"), classes)
    network = f"{state['arch']} trained on {Path(state['dataset']).name}"
    export_jetson_onnx(model, output, preprocess, classes, network=network, softmax=softmax)
    paths = check_paths(state, model_dir, check_images, check_count)
    return {"path": output, "labels": labels, "input_size": preprocess.decode_size,
            **check_jetson_agreement(model, preprocess, output, paths)}


def write_labels(path: Path, classes: Sequence[str]) -> Path:
    """jetson's labels file (one class per line, the model's output order); a labels.txt already there
    is kept when it lists the same classes and never replaced when it lists others."""
    text = "\n".join(classes) + "\n"
    if path.is_file():
        if path.read_text(encoding="utf-8", errors="replace") != text:
            raise ImgclassError(f"{path} already lists other classes than this model's ({', '.join(classes[:5])}"
                                f"{', ...' if len(classes) > 5 else ''}); export to another folder with --output")
        return path
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def check_jetson_agreement(model: nn.Module, preprocess: Preprocess, onnx_path: Path, paths: list[Path]) -> dict:
    """Feed the file jetson's input (each image resized whole to the input side, ImageNet-normalized) and
    PyTorch the same pixels center-cropped and normalized imgclass's way; raise if they disagree."""
    from dataclasses import replace

    from ..classifier import Classifier
    from ..data import decode_images

    net = Classifier(model=onnx_path, device="cpu")
    side, size = preprocess.decode_size, preprocess.size
    whole = replace(preprocess, size=side, resize="stretch")  # the model's own filter: the check is of the graph
    images, _ = decode_images([(p, 0) for p in paths], whole, desc="check")
    if len(images) == 0:
        raise ImgclassError(f"none of the {len(paths)} images for the ONNX check could be read; pass --check-images DIR")
    onnx_probs = net.probabilities(net.preprocess.normalize(images.pixels))
    top = (side - size) // 2
    crops = preprocess.normalize(images.pixels[:, top:top + size, top:top + size])
    return compare_with_torch(onnx_probs, model, crops, onnx_path, "the Jetson file")
