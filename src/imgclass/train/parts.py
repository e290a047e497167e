"""Split a classifier into a frozen trunk (run once, its outputs cached), a trainable tail
(cached activations -> pooled features) and the linear head, so each stage on a CPU costs
seconds: the trunk is 90% of the compute and never needs to run twice."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import ImgclassError
from ..models import ModelSpec, get_spec
from ..preprocess import Preprocess
from .config import TrainConfig
from .input_size import choose_input

Prior = tuple[torch.Tensor | None, torch.Tensor | None]  # the pretrained 1000-way classifier's (weight, bias), if any


class Parts(NamedTuple):
    """``model(x) == head(tail(trunk(x)))`` (in eval mode)."""

    trunk: nn.Module
    tail: nn.Module
    head: nn.Linear


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _TimmPreLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=True)


class _WithoutFc(nn.Module):
    """A torchvision network up to its pooled features (its ``fc`` skipped)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc, self.model.fc = self.model.fc, nn.Identity()
        try:
            return self.model(x)
        finally:
            self.model.fc = fc


def split_model(model: nn.Module) -> Parts:
    """The parts of ``model``, sharing its modules (training the parts trains the model).

    timm EfficientNets (the lite family): the trunk ends before the last block stage; the tail is
    that stage, ``conv_head`` and pooling, small enough to fine-tune on cached activations.
    Other timm networks and torchvision networks with an ``fc`` head: the tail only pools.

    Example:
        >>> trunk, tail, head = split_model(model)  # doctest: +SKIP
    """
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier")):
        trunk = nn.Sequential(model.conv_stem, model.bn1, model.blocks[:-1])
        tail = nn.Sequential(model.blocks[-1], model.conv_head, model.bn2, model.global_pool, nn.Flatten(1))
        return Parts(trunk, tail, model.classifier)
    if hasattr(model, "forward_head") and isinstance(model.get_classifier(), nn.Linear):
        return Parts(_TimmFeatures(model), _TimmPreLogits(model), model.get_classifier())
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return Parts(_WithoutFc(model), nn.Identity(), model.fc)
    raise ImgclassError(f"training does not support {type(model).__name__}'s head; use a timm network "
                        "(efficientnet-lite0/1/2, timm:NAME) or a torchvision network with an fc layer (resnet-18)")


def trainable_tail_parameters(parts: Parts) -> list[nn.Parameter]:
    """The tail's own parameters (empty when the tail only pools or wraps the whole model)."""
    if isinstance(parts.tail, (_TimmPreLogits, nn.Identity)):
        return []
    return list(parts.tail.parameters())


def network_spec(cfg: TrainConfig, checkpoint: dict | None = None) -> tuple[ModelSpec, Preprocess, str]:
    """The run's network, its preprocessing at the input side ``choose_input`` decides (a resumed run's:
    its ``checkpoint``'s), and that decision in words."""
    spec = get_spec(cfg.arch)
    return spec, *choose_input(spec, cfg, checkpoint)


def build_network(spec: ModelSpec, cfg: TrainConfig, num_classes: int) -> tuple[torch.nn.Module, Prior]:
    """The network with a fresh ``num_classes`` head, and the pretrained 1000-way classifier's (weight, bias)
    for the head fit's prior."""
    from ..models.build import build_model, replace_head

    model = build_model(spec, cfg.weights, pretrained=cfg.pretrained)
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "fc", None)
    prior = (None, None)
    if cfg.pretrained and isinstance(head, torch.nn.Linear) and head.out_features == 1000:
        prior = (head.weight.detach().clone(), head.bias.detach().clone() if head.bias is not None else None)
    return replace_head(model, num_classes), prior
