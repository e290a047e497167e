"""ONNX export: dynamic batch, ``input_0`` -> ``output_0`` (softmax probabilities), with the labels
and preprocessing stored in the model's metadata so nothing else has to travel with it."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..fileio import atomic_write
from ..preprocess import Preprocess
from .onnx import INPUT_NAME, META_DATASET, META_LABELS, META_NETWORK, META_PREPROCESS, META_SYNSETS, OUTPUT_NAME


class WithSoftmax(nn.Module):
    """Wraps a classifier so that the exported graph returns probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_onnx(model: nn.Module, path: str | Path, preprocess: Preprocess, labels: Sequence[str],
                synsets: Sequence[str] | None = None, network: str = "", softmax: bool = True,
                dataset: str | None = None) -> Path:
    """Write ``model`` (logits out) as an ONNX file with softmax (unless ``softmax=False``: logits
    out, as jetson's ``--no-softmax``), dynamic batch and metadata. Atomic.

    ``dataset``: the folder a trained model learned from, kept in the metadata: its train images
    calibrate ``--precision int8`` and its val images check ``--precision auto``.

    Example:
        >>> export_onnx(net, "runs/cats/model.onnx", Preprocess(size=224), ["cat", "dog"])  # doctest: +SKIP
    """
    import onnx

    wrapped = (WithSoftmax(model) if softmax else model).eval()
    example = torch.zeros(2, 3, preprocess.size, preprocess.size)
    batch = torch.export.Dim("batch", min=1, max=4096)

    def write(tmp: str) -> None:
        # The dynamo exporter fuses TF "same" padding into the convs: 1.5-2x faster in ONNX Runtime
        # than the TorchScript exporter measured here. It is chatty; keep the console clean.
        with warnings.catch_warnings(), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},), dynamo=True, verbose=False, optimize=True)
        proto = program.model_proto
        meta = {META_LABELS: json.dumps(list(labels)), META_PREPROCESS: preprocess.to_json(), META_NETWORK: network}
        if synsets is not None:
            meta[META_SYNSETS] = json.dumps(list(synsets))
        if dataset is not None:
            meta[META_DATASET] = dataset
        onnx.helper.set_model_props(proto, meta)
        onnx.save_model(proto, tmp)

    return atomic_write(path, write)


class _quiet_loggers:
    def __enter__(self):
        self.saved = {n: logging.getLogger(n).level for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")}
        for n in self.saved:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for n, level in self.saved.items():
            logging.getLogger(n).setLevel(level)
