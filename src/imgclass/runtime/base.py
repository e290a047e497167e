"""What every runtime provides (``Engine``), what is known of the work it is chosen for (``Job``),
and the registry of runtimes that ``runtime.select.select_engine`` chooses from.

A new runtime is one new module: a class that fits ``Engine`` and a ``register_runtime`` call saying
which models, devices and precisions it takes. Example, a runtime that answers uniform probabilities::

    >>> import numpy as np
    >>> class Uniform:
    ...     name, precision, device, metadata, input_size, num_outputs = "uniform", "fp32", "cpu", {}, 224, 1000
    ...     decodes_files = False
    ...     def run(self, batch):
    ...         return np.full((len(batch), 1000), 1 / 1000, np.float32)
    >>> runtime = register_runtime(Runtime("uniform", lambda model, device, precision: precision == "uniform",
    ...                                    lambda model, device, precision, options: Uniform()))
    >>> unregister_runtime(runtime)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..errors import ImgclassError
from ..media.decode import decode_files
from ..preprocess import Preprocess


@dataclass(frozen=True)
class Job:
    """What is known of the work an engine is chosen for: ``select_engine`` weighs a device's start-up
    against it. ``Job()`` is unknown work (the Python API, a server); ``Job(images=N)`` a list of N
    image files; ``Job(stream=True)`` a video, camera or stream, whose frames keep coming."""

    images: int | None = None
    stream: bool = False


class Engine(Protocol):
    """A model ready to run on one device at one precision.

    Attributes:
        name: the runtime, device and precision in words ("ONNX Runtime fp32 on the CPU").
        precision: what runs: "fp32", "fp16", "bf16" or "int8".
        device: "cpu" or "cuda".
        metadata: the model's metadata (an ONNX model's ``metadata_props``; empty when it has none).
        input_size: the side of its square input, when the model fixes it.
        num_outputs: how many classes it outputs, when the model fixes it.
        decodes_files: True when it classifies image files itself (``classify_files``), decoding them
            on its device; otherwise the caller decodes (``media.decode``) and calls ``run``.
    """

    name: str
    precision: str
    device: str
    metadata: Mapping[str, str]
    input_size: int | None
    num_outputs: int | None
    decodes_files: bool

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 batch -> (N, classes) float32 probabilities."""

    def classify_files(self, paths: Sequence[Path]) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
        """Only where ``decodes_files``: each file's probabilities, or why it could not be read, in order."""


@dataclass(frozen=True)
class EngineOptions:
    """How an engine is built, beyond model, device and precision.

    Attributes:
        threads: CPU threads for inference (None: all cores).
        input_name, output_name: the tensors of a model with several.
        calibration: images that calibrate int8 (a folder, glob or file).
        resize: "crop" or "stretch", overriding the model's own (calibration images are decoded so).
        job: the work the engine is for (``select_engine`` sets it): what its start may cost.
    """

    threads: int | None = None
    input_name: str | None = None
    output_name: str | None = None
    calibration: str | Path | None = None
    resize: str | None = None
    job: Job = Job()


@dataclass(frozen=True)
class Runtime:
    """A way to run models: which ``(model, device, precision)`` it takes and how it builds the engine.

    Attributes:
        name: for messages ("onnxruntime", "openvino", "torch-cuda").
        takes: ``(model, device, precision) -> bool``; ``device`` is "cpu" or "cuda" by then.
        build: ``(model, device, precision, options) -> Engine``.
    """

    name: str
    takes: Callable[[object, str, str], bool]
    build: Callable[[object, str, str, EngineOptions], Engine]


RUNTIMES: list[Runtime] = []  # asked in order: the first that takes a model, device and precision builds it


def register_runtime(runtime: Runtime, first: bool = True) -> Runtime:
    """Add a runtime, asked before (``first``) or after those already registered."""
    RUNTIMES.insert(0, runtime) if first else RUNTIMES.append(runtime)
    return runtime


def unregister_runtime(runtime: Runtime) -> None:
    RUNTIMES.remove(runtime)


def host_decoded(run: Callable[[np.ndarray], np.ndarray], paths: Sequence[Path], preprocess: Preprocess,
                 batch_size: int = 8, workers: int | None = None) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
    """Probabilities of image files decoded on the CPU (``media.decode``, in threads ahead of ``run``):
    ``run`` takes a normalized NCHW float32 batch; yields ``(path, probs)`` or ``(path, error)`` in order."""
    for chunk in decode_files(paths, preprocess, batch_size, workers):
        good = [x for _, x in chunk if not isinstance(x, ImgclassError)]
        probs = iter(run(preprocess.normalize(np.stack(good)))) if good else iter(())
        for path, x in chunk:
            yield path, x if isinstance(x, ImgclassError) else next(probs)
