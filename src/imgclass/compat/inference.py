"""jetson_inference.imageNet on imgclass: my-recognition.py and imagenet.py run unchanged.

Example:
    >>> from jetson_inference import imageNet
    >>> net = imageNet("efficientnet-lite0")                  # doctest: +SKIP
    >>> class_idx, confidence = net.Classify(loadImage("cat.jpg"))  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..classifier import Classifier
from ..flags import jetson_argv
from ..models import DEFAULT_NETWORK
from ..models.jetson import stand_in
from .cuda import rgb8

__all__ = ["imageNet"]


class imageNet:
    """jetson's imageNet: ``imageNet(network, argv)`` or ``imageNet(model=, labels=, input_blob=, output_blob=)``.

    A network with no weights on this machine (jetson's default googlenet, say) runs as the installed
    network closest to it in ImageNet top-1, and a missing ``model`` file as the one exported model
    in its folder, each with a one-line note on stderr; ``imageNet()`` with no name uses imgclass's
    default.
    """

    def __init__(self, network: str | None = None, argv: list[str] | None = None, model: str | None = None,
                 labels: str | None = None, input_blob: str | None = None, output_blob: str | None = None, **_):
        if argv:
            opts, _unknown = _argv_parser().parse_known_args(jetson_argv(list(argv[1:])))
            network, model = opts.network or network, opts.model or model
            labels, input_blob, output_blob = opts.labels or labels, opts.input_blob or input_blob, opts.output_blob or output_blob
        network, model, note = stand_in(network or DEFAULT_NETWORK, model)
        if note:
            print(f"imgclass: note: {note}", file=sys.stderr)
        self._net = Classifier(network if model is None else None, model=model, labels=labels,
                               input_blob=input_blob, output_blob=output_blob)
        self._threshold, self._seconds = 0.01, 0.0

    def Classify(self, image: np.ndarray, width: int | None = None, height: int | None = None, format: str | None = None,
                 topK: int | None = None):
        """``(class_idx, confidence)``; with ``topK=k``, a list of k such tuples, best first."""
        pixels = rgb8(image)  # any jetson format (bgr8, rgba32f, ...); float images are 0..255
        start = time.perf_counter()
        preds = self._net.classify(pixels, topk=topK or 1, threshold=self._threshold)
        self._seconds = time.perf_counter() - start
        found = [(p.index, p.confidence) for p in preds]
        if topK is not None:
            return found
        return found[0] if found else (-1, 0.0)

    def GetClassDesc(self, index: int) -> str:
        return self._net.labels[index]

    GetClassLabel = GetClassDesc

    def GetClassSynset(self, index: int) -> str:
        return self._net.synsets[index]

    def GetNumClasses(self) -> int:
        return self._net.num_classes

    def GetNetworkName(self) -> str:
        return self._net.network_name

    def GetNetworkFPS(self) -> float:
        return 1.0 / self._seconds if self._seconds else 0.0

    def GetNetworkTime(self) -> float:
        """Milliseconds the last Classify took."""
        return self._seconds * 1000

    def SetThreshold(self, threshold: float) -> None:
        self._threshold = float(threshold)

    def GetThreshold(self) -> float:
        return self._threshold

    def PrintProfilerTimes(self) -> None:
        print(f"[imgclass] {self.GetNetworkName()}: {self.GetNetworkTime():.2f} ms ({self.GetNetworkFPS():.1f} FPS)")

    @staticmethod
    def Usage() -> str:
        return "imageNet arguments: --network=NAME | --model=FILE.onnx --labels=FILE --input-blob=NAME --output-blob=NAME"


def _argv_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--network", "--model", "--labels", "--input-blob", "--output-blob"):
        p.add_argument(flag, default=None)
    return p
