"""What ``--network`` and ``--model`` name: a registry network with its weights, an ONNX file, or a
training run's folder (its model.onnx). Decided here once, by ``resolve_model``, for classify, serve,
tables, eval, export and capture alike.

Example:
    >>> resolve_model("efficientnet-lite0").name  # doctest: +SKIP
    'efficientnet-lite0'
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import ImgclassError
from ..preprocess import Preprocess
from .onnx import read_model
from .registry import DEFAULT_NETWORK, ModelSpec, Weights, get_spec, read_weights

# The files of a training run's folder (``imgclass train --model-dir``).
CHECKPOINT, BEST, RUN_MODEL = "checkpoint.pth.tar", "model_best.pth.tar", "model.onnx"


@dataclass(frozen=True)
class NetworkRef:
    """A registry network (``imgclass models``) and the weights it runs with."""

    spec: ModelSpec
    weights: Weights

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class OnnxRef:
    """An ONNX file and its bytes, read once: the cache key and the engine come from the same bytes."""

    path: Path
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.stem

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ModuleRef:
    """A torch network built in this process (training's frozen trunk): exported to ONNX once and
    cached under ``key``; its engine's ``outputs`` are the raw activations."""

    module: object = field(repr=False)  # a torch.nn.Module (torch is not imported here)
    key: str
    name: str
    preprocess: Preprocess


ModelRef = NetworkRef | OnnxRef | ModuleRef


def resolve_model(network: str | None = None, model: str | Path | ModelRef | None = None,
                  weights: str | Path | None = None, checkpoints: bool = False) -> ModelRef | Path:
    """What ``--network NAME`` / ``--model PATH`` (and ``--weights FILE``) name: ``model`` when given
    (an ONNX file, or a run folder's model.onnx; a ModelRef as it is), else the registry ``network``
    (default efficientnet-lite0) with its installed or given weights. With ``checkpoints`` (``eval``,
    which runs them in torch) a checkpoint, or a run folder's best one where it has no model.onnx, is
    returned as its path.

    Raises:
        ImgclassError: an unknown network, weights that are missing or damaged, no such model file, or
            a PyTorch checkpoint / a run not exported yet (the message gives the export command).
    """
    if isinstance(model, (NetworkRef, OnnxRef, ModuleRef)):
        return model
    if model is not None:
        path = model_file(model, checkpoints)
        return OnnxRef(path, read_model(path)) if path.suffix == ".onnx" or not checkpoints else path
    spec = get_spec(network or DEFAULT_NETWORK)
    return NetworkRef(spec, read_weights(spec, weights))


def model_file(model: str | Path, checkpoints: bool = False) -> Path:
    """The file that ``--model`` names: an ONNX file, or a training run folder's model.onnx; with
    ``checkpoints`` (for ``eval``, which runs them in torch) also a checkpoint, or a run folder's
    best checkpoint when it has no model.onnx.

    Raises:
        ImgclassError: no such file, or a PyTorch checkpoint / a run folder not exported yet (the
            message gives the ``imgclass export`` command).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / RUN_MODEL).is_file():
            return path / RUN_MODEL
        found = sorted(path.glob("*.pth.tar"), key=lambda p: p.name != BEST)
        if found and checkpoints:
            return found[0]
        if found:
            raise ImgclassError(f"{path}: a training run not exported to ONNX yet; run: "
                                f"{_export_command(found[0])}, then pass --model {shlex.quote(str(path))} again")
        raise ImgclassError(f"{path}: a folder with no {RUN_MODEL}; give --model an ONNX file or an exported run folder")
    if not path.is_file():
        raise ImgclassError(f"{path}: model file not found; check the path given to --model")
    if path.name.endswith((".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")) and not checkpoints:
        raise ImgclassError(f"{path}: a PyTorch file, not ONNX; for a training checkpoint run: {_export_command(path)}, "
                            f"then pass --model {shlex.quote(str(path.parent / RUN_MODEL))} (network weights go to "
                            "--network NAME --weights FILE)")
    return path


def _export_command(checkpoint: Path) -> str:
    command = f"imgclass export --model-dir {shlex.quote(str(checkpoint.parent))}"
    return command if checkpoint.name == BEST else f"{command} --input {shlex.quote(checkpoint.name)}"
