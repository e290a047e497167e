"""What ``--model`` names: an ONNX file, a training run's folder or one of its checkpoints. Decided
here once, for classify, serve, eval, export and capture alike."""
from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import ImgclassError

# The files of a training run's folder (``imgclass train --model-dir``).
CHECKPOINT, BEST, RUN_MODEL = "checkpoint.pth.tar", "model_best.pth.tar", "model.onnx"


def model_file(model: str | Path) -> Path:
    """The ONNX file that ``--model`` names: the file, or a training run folder's model.onnx.

    Raises:
        ImgclassError: no such file, or a PyTorch checkpoint / a run folder not exported yet (the
            message gives the ``imgclass export`` command).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / RUN_MODEL).is_file():
            return path / RUN_MODEL
        checkpoints = sorted(path.glob("*.pth.tar"), key=lambda p: p.name != BEST)
        if checkpoints:
            raise ImgclassError(f"{path}: a training run not exported to ONNX yet; run: "
                                f"{_export_command(checkpoints[0])}, then pass --model {shlex.quote(str(path))} again")
        raise ImgclassError(f"{path}: a folder with no model.onnx; give --model an ONNX file or an exported run folder")
    if not path.is_file():
        raise ImgclassError(f"{path}: model file not found; check the path given to --model")
    if path.name.endswith((".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")):
        raise ImgclassError(f"{path}: a PyTorch file, not ONNX; for a training checkpoint run: {_export_command(path)}, "
                            f"then pass --model {shlex.quote(str(path.parent / 'model.onnx'))} (network weights go to "
                            "--network NAME --weights FILE)")
    return path


def _export_command(checkpoint: Path) -> str:
    command = f"imgclass export --model-dir {shlex.quote(str(checkpoint.parent))}"
    return command if checkpoint.name == BEST else f"{command} --input {shlex.quote(checkpoint.name)}"
