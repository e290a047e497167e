"""Checkpoints: plain dicts of tensors, numbers, strings and lists, so ``torch.load(weights_only=True)``
reads them and a checkpoint from an untrusted source cannot run code. Written atomically."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ImgclassError
from ..media.images import atomic_write
from ..models import get_spec
from ..preprocess import Preprocess
from .config import BEST, CHECKPOINT, FORMAT



def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` (see ``train.engine``) with torch.save, atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``): tensors and plain data only.

    Raises:
        ImgclassError: missing, unreadable, or not an imgclass checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ImgclassError(f"{path}: checkpoint not found; check the path (runs write {CHECKPOINT} and {BEST})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file or one holding code: the message says which
        raise ImgclassError(f"{path}: cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "state_dict" not in state:
        raise ImgclassError(f"{path}: not an imgclass training checkpoint; give {CHECKPOINT} or {BEST} from a run")
    return state


def model_from_checkpoint(state: dict) -> tuple[nn.Module, Preprocess, list[str]]:
    """Rebuild the trained network (eval mode) with its preprocessing and class names."""
    from ..models.build import build_model, replace_head

    spec = get_spec(state["arch"])
    model = replace_head(build_model(spec, pretrained=False), len(state["classes"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise ImgclassError(f"checkpoint does not fit {spec.name}: {str(e).splitlines()[0]}") from None
    return model.eval(), Preprocess.from_json(state["preprocess"]), list(state["classes"])
