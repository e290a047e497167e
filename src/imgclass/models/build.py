"""Build torch modules for registry entries (imports torch; used for export and training)."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from ..errors import ImgclassError
from .registry import ModelSpec, Weights, read_weights


def _create(arch: str, num_classes: int) -> nn.Module:
    lib, name = arch.split(":", 1)
    if lib == "timm":
        import timm
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    import torchvision.models as tvm
    extra = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return tvm.get_model(name, weights=None, num_classes=num_classes, **extra)


def _read_state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    try:
        if weights.path.suffix == ".safetensors":
            from safetensors.torch import load
            return load(weights.data)
        state = torch.load(io.BytesIO(weights.data), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, damaged, or holding code (weights_only refuses it); torch's own
        # text is no help here (an empty message, or advice to turn weights_only off)
        raise ImgclassError(f"{weights.path}: cannot read these weights ({type(e).__name__}); the file is truncated, "
                            f"damaged or not a weights file: {weights.fix}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ImgclassError(f"{weights.path}: holds a {type(state).__name__}, not a dict of weights; {weights.fix}")
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], rename_keys: bool = False) -> None:
    """Load ImageNet weights; ``rename_keys`` maps a foreign naming onto the model's, in order."""
    if rename_keys:
        own = list(model.state_dict().keys())
        if len(own) != len(state):
            raise ImgclassError(f"weights hold {len(state)} tensors but the architecture has {len(own)}; wrong weights file?")
        state = dict(zip(own, state.values()))
    # torchvision's googlenet weights carry aux heads we do not build.
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ImgclassError(f"weights do not fit the architecture: {str(e).splitlines()[0]}; wrong weights file?") from None


def build_model(spec: ModelSpec, weights: Weights | str | Path | None = None, pretrained: bool = True) -> nn.Module:
    """The network with its ImageNet weights, in eval mode.

    Args:
        spec: the registry entry.
        weights: weights already read (``read_weights``), a weights file, or None for the installed ones.
        pretrained: False leaves the network randomly initialized (``weights`` unused).

    Example:
        >>> net = build_model(get_spec("efficientnet-lite0"))  # doctest: +SKIP
    """
    if not pretrained:
        return _create(spec.arch, 1000).eval()
    state = _read_state_dict(weights if isinstance(weights, Weights) else read_weights(spec, weights))
    model = _create(spec.arch, 1000)
    load_weights(model, state, spec.rename_keys)
    return model.eval()


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the 1000-way ImageNet classifier for a fresh ``num_classes``-way one."""
    if hasattr(model, "reset_classifier"):  # every timm model
        model.reset_classifier(num_classes)
        return model
    for attr in ("fc", "classifier", "heads"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return model
        if isinstance(head, nn.Sequential):
            last = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
            head[last] = nn.Linear(head[last].in_features, num_classes)
            return model
    raise ImgclassError(f"cannot find the classifier layer of {type(model).__name__}; pick another --arch")
