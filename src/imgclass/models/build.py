"""Build torch modules for registry entries (imports torch; used for export and training)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ImgclassError
from .registry import ModelSpec, require_weights


def _create(arch: str, num_classes: int) -> nn.Module:
    lib, name = arch.split(":", 1)
    if lib == "timm":
        import timm
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    import torchvision.models as tvm
    extra = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return tvm.get_model(name, weights=None, num_classes=num_classes, **extra)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable or untrusted file ends in one line
        raise ImgclassError(f"{path}: cannot load weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
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


def build_model(spec: ModelSpec, weights: str | Path | None = None, pretrained: bool = True) -> nn.Module:
    """The network with its ImageNet weights, in eval mode.

    Example:
        >>> net = build_model(get_spec("efficientnet-lite0"))  # doctest: +SKIP
    """
    model = _create(spec.arch, 1000)
    if pretrained:
        load_weights(model, _read_state_dict(require_weights(spec, weights)), spec.rename_keys)
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
