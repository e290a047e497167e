"""Checkpoints: plain dicts of tensors, numbers, strings and lists, so ``torch.load(weights_only=True)``
reads them and a checkpoint from an untrusted source cannot run code. Written atomically."""
from __future__ import annotations

import io
import json
import pickle
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from ..errors import ImgclassError, first_line
from ..fileio import atomic_write
from ..models import get_spec
from ..models.resolve import BEST, CHECKPOINT
from ..preprocess import Preprocess
from .config import FORMAT, TrainConfig


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` (see ``train.engine``) with torch.save, atomically: a failed write leaves the
    previous file at ``path`` as it was.

    Raises:
        ImgclassError: the file cannot be written (a full disk, ...).
    """
    path = Path(path)
    buffer = io.BytesIO()
    # Serialized in memory first: a full disk then fails in a plain write, with its errno
    # (torch's own file writer reports it as "unexpected pos 576 vs 534").
    torch.save(state, buffer)
    try:
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))
    except OSError as e:
        kept = f"the previous one is unchanged: free space, then continue with --resume {path}" if path.is_file() \
            else "free space and train again"
        raise ImgclassError(f"{path}: cannot save the checkpoint ({e.strerror or e}); {kept}") from None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``): tensors and plain data only.

    Raises:
        ImgclassError: missing, empty, unreadable, or not an imgclass checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ImgclassError(f"{path}: checkpoint not found; check the path (runs write {CHECKPOINT} and {BEST})")
    if path.stat().st_size == 0:
        raise ImgclassError(f"{path}: empty file (0 bytes), not a checkpoint; its copy or download was cut short: "
                            f"use another {CHECKPOINT} or {BEST}")
    not_ours, fix = f"{path}: not a training checkpoint imgclass wrote", f"give {CHECKPOINT} or {BEST} from a run"
    try:
        with warnings.catch_warnings():  # torch warns of a file in its legacy format: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Python objects beyond tensors and plain data, which could run code: never loaded, and torch's
        # advice to load them anyway (weights_only=False) is not passed on
        raise ImgclassError(f"{not_ours} (it holds Python objects, which imgclass never loads); {fix}") from None
    except Exception as e:  # a corrupt or cut-short file
        raise ImgclassError(f"{path}: cannot load checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "state_dict" not in state:
        raise ImgclassError(f"{not_ours}; {fix}")
    return state


SETTINGS = "settings.json"  # a new run's settings, written first: a run killed before its checkpoint resumes with them


def write_settings(model_dir: Path, cfg: TrainConfig) -> None:
    """Keep a new run's settings in its folder (``resume_config`` reads them until a checkpoint holds them)."""
    atomic_write(model_dir / SETTINGS, lambda tmp: Path(tmp).write_text(json.dumps(asdict(cfg), indent=1)))


def stopped_before_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is the checkpoint of a run that stopped before writing it: its folder holds
    the settings or labels.txt every run writes first (its settings and stored features are then all there
    is to resume)."""
    path = Path(path)
    return not path.exists() and path.name == CHECKPOINT and any((path.parent / name).is_file()
                                                                 for name in (SETTINGS, "labels.txt"))


def resume_config(path: str | Path, **given) -> TrainConfig:
    """The settings to continue the run of checkpoint ``path``: the checkpoint's own, but for those
    ``given``; the run goes on in the checkpoint's folder unless ``model_dir`` is given. A run stopped
    before its first checkpoint starts again in its folder with the settings it kept (``SETTINGS``) but
    for those given (``train`` then reads back the trunk features it stored).

    Example:
        >>> cfg = resume_config("runs/ants/checkpoint.pth.tar", dataset="data/ants", epochs=10)  # doctest: +SKIP
        >>> train(cfg, resume="runs/ants/checkpoint.pth.tar")  # doctest: +SKIP
    """
    if stopped_before_checkpoint(path):
        try:
            saved = json.loads((Path(path).parent / SETTINGS).read_text())
        except (OSError, ValueError):  # none kept (a run of an older imgclass): the settings given
            saved = {}
    else:
        saved = load_checkpoint(path)["config"]
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in names}, "model_dir": str(Path(path).parent), **given})


def model_from_checkpoint(state: dict) -> tuple[nn.Module, Preprocess, list[str]]:
    """Rebuild the trained network (eval mode) with its preprocessing and class names."""
    from ..models.build import build_model, replace_head

    spec = get_spec(state["arch"])
    model = replace_head(build_model(spec, pretrained=False), len(state["classes"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise ImgclassError(f"checkpoint does not fit {spec.name}: {first_line(e)}") from None
    return model.eval(), Preprocess.from_json(state["preprocess"]), list(state["classes"])
