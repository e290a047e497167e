"""What jetson-inference's entry points run when the tutorial names a network or a model file this
machine lacks: the closest installed network, or the one model a run folder holds, each with a note.

Only jetson's entry points (``jetson_inference.imageNet``, ``imagenet`` / ``imagenet.py``) use these, so
that the tutorial's scripts run as written: their own default is googlenet, whose weights no machine
here has, and ``onnx_export.py`` names its file after the trained network (efficientnet-lite0.onnx)
where the tutorial types resnet18.onnx. ``imgclass classify`` keeps its errors.

Example:
    >>> stand_in("googlenet", None).network  # doctest: +SKIP
    'efficientnet-lite0'
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..errors import ImgclassError
from .registry import find_weights, get_spec, list_specs


class StandIn(NamedTuple):
    """What to run: ``network`` or ``model`` (as given, or a stand-in), and ``note`` saying which stand-in
    was taken (None when nothing was replaced)."""

    network: str
    model: str | None
    note: str | None


def stand_in(network: str, model: str | None, weights: str | None = None) -> StandIn:
    """The network or model file that jetson's entry points run for the ones asked for.

    Args:
        network: the registry network asked for (used when ``model`` is None).
        model: the ONNX file asked for, or None.
        weights: a weights file the caller gave for ``network``: then the network is never replaced.

    Raises:
        ImgclassError: ``model`` is missing and its folder holds no single exported model to run instead,
            or ``network`` is no network imgclass knows.
    """
    if model is not None:
        found, note = model_stand_in(model)
        return StandIn(network, found, note)
    if weights is not None:
        return StandIn(network, model, None)
    found, note = network_stand_in(network)
    return StandIn(found, model, note)


def network_stand_in(name: str) -> tuple[str, str | None]:
    """(network, note): ``name`` itself when its weights are here, else the installed network whose
    published ImageNet top-1 is closest to its own. ``name`` is kept, to fail with its own message
    (where to get the weights), when it has no published top-1 or no network is installed.

    Raises:
        ImgclassError: ``name`` is no network imgclass knows.
    """
    spec = get_spec(name)
    if spec.top1 is None or find_weights(spec) is not None:
        return name, None
    installed = [s for s in list_specs() if s.top1 is not None and find_weights(s) is not None]
    if not installed:
        return name, None
    closest = min(installed, key=lambda s: abs(s.top1 - spec.top1))  # the first (smallest) on a tie
    return closest.name, (f"{spec.name} has no weights on this machine; running {closest.name} instead "
                          f"(ImageNet top-1: {spec.name} {spec.top1:.1f}%, {closest.name} {closest.top1:.1f}%)")


def model_stand_in(model: str) -> tuple[str, str | None]:
    """(model, note): ``model`` itself unless it is missing and its folder holds exactly one exported model
    (``*.onnx``), which is run instead (the tutorial's resnet18.onnx where onnx_export.py wrote
    efficientnet-lite0.onnx).

    Raises:
        ImgclassError: ``model`` is missing and its folder holds no .onnx file, or several.
    """
    path = Path(model).expanduser()
    folder = path.parent
    if path.exists() or not folder.is_dir():
        return model, None  # present, or nothing to look at: the model's own loading says what is wrong
    exported = sorted(folder.glob("*.onnx"))
    if len(exported) == 1:
        return str(exported[0]), f"{path} not found; running {exported[0]}, the one exported model in {folder}"
    if exported:
        raise ImgclassError(f"{path}: model file not found; {folder} holds {len(exported)} exported models "
                            f"({', '.join(p.name for p in exported)}): pass one of them to --model")
    checkpoints = sorted(p.name for p in folder.glob("*.pth.tar"))
    if checkpoints:
        raise ImgclassError(f"{path}: model file not found; {folder} holds no exported model (.onnx), only "
                            f"training checkpoints ({', '.join(checkpoints)}): run onnx_export.py --model-dir={folder}")
    raise ImgclassError(f"{path}: model file not found; {folder} holds no exported model (.onnx): check the path "
                        "given to --model")
