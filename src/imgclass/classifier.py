"""The public face: ``Classifier``, ``Prediction``, ``load_image``. A Classifier resolves the model
(``models.resolve``), gets its engine from ``runtime.select.select_engine``, decodes files through
``media.decode`` and reports the top-k classes."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, repeat
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image

from .errors import ImgclassError
from .labels import imagenet_labels, read_labels
from .media.decode import decode
from .media.images import load_image, save_image
from .models.onnx import META_LABELS, META_NETWORK, META_SYNSETS, meta_labels
from .models.resolve import ModelRef, OnnxRef, resolve_model
from .parallel import prefetched
from .runtime.base import EngineOptions, Job, host_decoded
from .runtime.select import model_preprocess, select_engine

__all__ = ["Classifier", "Prediction", "load_image", "save_image"]

ImageInput = np.ndarray | Image.Image | str | Path | bytes  # pixels (HxWx3 uint8 RGB), an image file, or its bytes


class Prediction(NamedTuple):
    """One class of a result: ImageNet index, label text and softmax confidence (0..1)."""

    index: int
    label: str
    confidence: float


def result_record(input: str, result: list[Prediction] | ImgclassError, **extra) -> dict:
    """One image's result as ``imgclass classify --json`` prints it (and ``imgclass serve`` answers).

    Example:
        >>> result_record("cat.jpg", [Prediction(281, "tabby, tabby cat", 0.93)])
        {'input': 'cat.jpg', 'predictions': [{'index': 281, 'label': 'tabby, tabby cat', 'confidence': 0.93}]}
        >>> result_record("x.jpg", ImgclassError("x.jpg: not an image"))
        {'input': 'x.jpg', 'error': 'x.jpg: not an image'}
    """
    if isinstance(result, ImgclassError):
        return {"input": input, **extra, "error": str(result)}
    return {"input": input, **extra, "predictions": [p._asdict() for p in result]}


class Classifier:
    """An image classifier: a registry network or your own ONNX model, on the engine that suits the
    device and precision (ONNX Runtime, OpenVINO, torch on CUDA).

    Args:
        network: registry name (``imgclass models`` lists them); default efficientnet-lite0.
        model: path to an ONNX file or a run folder instead (labels and preprocessing read from its
            metadata), or a ``models.resolve`` reference already resolved.
        labels: labels file overriding the model's (jetson format or one class per line).
        input_blob, output_blob: tensor names, for ONNX files with several inputs/outputs.
        weights: a weights file for a registry network (else the installed/cached one is used).
        resize: "crop" (default for registry networks) or "stretch" (jetson's whole-frame resize).
        threads: CPU threads for inference (default: all cores).
        device: "auto" (the GPU where there is one and ``job`` pays for its start, else the CPU; see
            ``runtime.select.resolve_device``), "cpu" or "cuda". On CUDA a registry
            network runs in torch (fp16, channels-last, CUDA graphs); an ONNX file runs on
            ONNX Runtime's CUDA/TensorRT providers when onnxruntime-gpu is installed.
        precision: on the CPU, "fp32" (ONNX Runtime; the same answers everywhere), "bf16" or "int8"
            (OpenVINO, where the CPU has them: 2-2.5x faster on AVX-512 BF16/VNNI/AMX), or "auto": the
            fastest of those within half a point of fp32's top-1, measured once and cached.
        calibration: images for int8's calibration (a folder, searched recursively, or a glob);
            default: a trained model's own train images. A registry network needs them.
        job: what is known of the work (``runtime.base.Job``): how many image files, or a stream;
            "auto" weighs it.

    Example:
        >>> net = Classifier("efficientnet-lite0")  # doctest: +SKIP
        >>> net.classify(load_image("orange.jpg"), topk=1)  # doctest: +SKIP
        [Prediction(index=950, label='orange', confidence=0.97)]
    """

    def __init__(self, network: str | None = None, *, model: str | Path | ModelRef | None = None,
                 labels: str | Path | None = None,
                 input_blob: str | None = None, output_blob: str | None = None, weights: str | Path | None = None,
                 resize: str | None = None, threads: int | None = None, device: str = "auto",
                 precision: str = "fp32", calibration: str | Path | None = None, job: Job = Job()):
        self.model = resolve_model(network, model, weights)
        self.engine = select_engine(self.model, device, precision, job,
                                    EngineOptions(threads, input_blob, output_blob, calibration, resize))
        meta = self.engine.metadata
        self.preprocess = model_preprocess(self.model, meta, self.engine.input_size, resize)
        if isinstance(self.model, OnnxRef):
            self.network_name = meta.get(META_NETWORK) or self.model.name
            self.labels = meta_labels(meta, META_LABELS, str(self.model.path))
            self.synsets = meta_labels(meta, META_SYNSETS, str(self.model.path)) or self.labels
        else:
            self.network_name = self.model.name
            self.labels, self.synsets = imagenet_labels()
        if labels is not None:
            self.labels, self.synsets = read_labels(labels)
        if self.labels is None:
            raise ImgclassError(f"{self.model.path}: the model carries no labels; pass --labels FILE (one class per line)")
        n = self.engine.num_outputs
        if n is not None and n != len(self.labels):
            raise ImgclassError(f"labels list {len(self.labels)} classes but the model outputs {n}; "
                                f"give the labels file the model was trained with")
        self.precision = self.engine.precision  # what runs: "auto" has chosen by now

    def __repr__(self) -> str:
        return f"Classifier({self.network_name!r}, {self.num_classes} classes, {self.engine.name})"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 batch -> (N, classes) softmax probabilities."""
        return self.engine.run(batch)

    def predictions(self, probs: np.ndarray, topk: int = 1, threshold: float = 0.0) -> list[Prediction]:
        """The top-k classes of one probability vector, those below ``threshold`` dropped."""
        k = max(1, min(topk, len(probs)))
        # argmax for the usual top-1: 2 us against 20 for a partition, per image of a 57,600-file job
        top = (probs.argmax(),) if k == 1 else np.argpartition(probs, -k)[-k:]
        return [Prediction(int(i), self.labels[i], float(probs[i])) for i in sorted(top, key=lambda i: -probs[i])
                if probs[i] >= threshold]

    def prepare(self, image: str | Path | bytes, name: str = "image") -> np.ndarray:
        """Decode an image file, or its encoded bytes (``name`` in messages), and preprocess it:
        one CHW float32 row of a ``probabilities`` batch."""
        return self.preprocess.normalize(decode(image, self.preprocess, name))

    def classify(self, image: ImageInput, topk: int = 1, threshold: float = 0.0) -> list[Prediction]:
        """Classify one image (pixels or a file, see ``classify_batch``); best first."""
        return self.classify_batch([image], topk, threshold)[0]

    def classify_batch(self, images: Sequence[ImageInput], topk: int = 1, threshold: float = 0.0) -> list[list[Prediction]]:
        """Classify several images in one batch: HxWx3 uint8 RGB arrays, PIL images, image files, or
        their encoded bytes (what a web app holds: ``open("cat.jpg", "rb").read()``).

        A file, or its bytes, is decoded for the network exactly as ``classify_files`` and ``imgclass classify`` decode it
        (a large JPEG at a reduced scale), so it gets their confidences to the last digit. Pixels are used
        as they are: ``load_image`` gives the full-resolution photo, whose confidences can differ a little.

        Raises:
            ImgclassError: a file that cannot be read.
        """
        files = {i: Path(image) for i, image in enumerate(images) if isinstance(image, (str, os.PathLike))}
        probs = {}
        for i, (_, p) in zip(files, self._file_probabilities(list(files.values()), batch_size=max(1, len(files)))):
            if isinstance(p, ImgclassError):
                raise p
            probs[i] = p
        encoded = [i for i, image in enumerate(images) if isinstance(image, (bytes, bytearray, memoryview))]
        if encoded:
            batch = np.stack([self.prepare(bytes(images[i]), f"image {i}") for i in encoded])
            probs.update(zip(encoded, self.probabilities(batch)))
        pixels = [i for i in range(len(images)) if i not in files and i not in probs]
        if pixels:
            probs.update(zip(pixels, self.probabilities(self.preprocess.batch([images[i] for i in pixels]))))
        return [self.predictions(probs[i], topk, threshold) for i in range(len(images))]

    def classify_files(self, paths: Iterable[str | Path], topk: int = 1, threshold: float = 0.0, batch_size: int = 8,
                       keep_images: bool = False, workers: int | None = None
                       ) -> Iterator[tuple[Path, list[Prediction] | ImgclassError, np.ndarray | None]]:
        """Classify image files, decoding in threads while the runtime works; yields in input order.

        Yields ``(path, predictions, image)``; a bad file yields its ImgclassError in place of
        the predictions and the rest go on. ``image``, with ``keep_images``, is the full-resolution
        frame (to draw on), decoded on its own: keeping frames never changes what the network sees.
        """
        paths = [p if isinstance(p, Path) else Path(p) for p in paths]  # a Path made again costs 3 us
        workers = workers or min(4, os.cpu_count() or 1)
        results = self._file_probabilities(paths, batch_size, workers)
        with ThreadPoolExecutor(workers) as pool:
            frames = (chain.from_iterable(prefetched(pool, _frame_or_error, iter(paths), ahead=batch_size * 2))
                      if keep_images else repeat(None))
            for (path, probs), frame in zip(results, frames):
                error = next((x for x in (probs, frame) if isinstance(x, ImgclassError)), None)
                if error is not None:
                    yield path, error, None
                else:
                    yield path, self.predictions(probs, topk, threshold), frame

    def _file_probabilities(self, paths: list[Path], batch_size: int = 8, workers: int | None = None
                            ) -> Iterator[tuple[Path, np.ndarray | ImgclassError]]:
        """Probabilities of image files, in order: the one way every route classifies a file. An engine
        that decodes files itself (CUDA: nvJPEG in batches, a small job in CPU threads) does it all;
        otherwise the files go through ``media.decode`` in threads, ahead of the runtime."""
        if self.engine.decodes_files:
            yield from self.engine.classify_files(paths)
        else:
            yield from host_decoded(self.probabilities, paths, self.preprocess, batch_size, workers)


def _frame_or_error(path: Path) -> np.ndarray | ImgclassError:
    """The full-resolution image to draw on, or why it cannot be read."""
    try:
        return load_image(path)
    except ImgclassError as e:
        return e
