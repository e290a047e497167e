"""The public face: ``Classifier``, ``Prediction``, ``load_image``."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import ImgclassError
from .labels import imagenet_labels, read_labels
from .media.images import load_image, open_image, save_image
from .models import DEFAULT_NETWORK, get_spec, require_weights
from .parallel import prefetched
from .preprocess import Preprocess
from .runtime.cache import cache_key, file_sha256
from .runtime.onnx import META_LABELS, META_NETWORK, META_PREPROCESS, META_SYNSETS, OnnxEngine

__all__ = ["Classifier", "Prediction", "load_image", "save_image"]


class Prediction(NamedTuple):
    """One class of a result: ImageNet index, label text and softmax confidence (0..1)."""

    index: int
    label: str
    confidence: float


class Classifier:
    """An image classifier: a registry network or your own ONNX model, on ONNX Runtime.

    Args:
        network: registry name (``imgclass models`` lists them); default efficientnet-lite0.
        model: path to an ONNX file instead (labels and preprocessing read from its metadata).
        labels: labels file overriding the model's (jetson format or one class per line).
        input_blob, output_blob: tensor names, for ONNX files with several inputs/outputs.
        weights: a weights file for a registry network (else the installed/cached one is used).
        resize: "crop" (default for registry networks) or "stretch" (jetson's whole-frame resize).
        threads: CPU threads for inference (default: all cores).
        device: "auto" (CUDA when there is one, else CPU), "cpu" or "cuda". On CUDA a registry
            network runs in torch (fp16, channels-last, CUDA graphs); an ONNX file runs on
            ONNX Runtime's CUDA/TensorRT providers when onnxruntime-gpu is installed.

    Example:
        >>> net = Classifier("efficientnet-lite0")
        >>> net.classify(load_image("orange.jpg"), topk=1)  # doctest: +SKIP
        [Prediction(index=950, label='orange', confidence=0.97)]
    """

    def __init__(self, network: str | None = None, *, model: str | Path | None = None, labels: str | Path | None = None,
                 input_blob: str | None = None, output_blob: str | None = None, weights: str | Path | None = None,
                 resize: str | None = None, threads: int | None = None, device: str = "auto"):
        # ONNX Runtime picks its own providers for "auto"; a registry network needs torch to run on CUDA.
        opts = dict(threads=threads, device=device, input_name=input_blob, output_name=output_blob)
        if model is not None:
            self.engine = OnnxEngine.from_file(model, describe=f"optimizing {Path(model).name} for ONNX Runtime", **opts)
            meta = self.engine.metadata
            self.network_name = meta.get(META_NETWORK) or Path(model).stem
            preprocess = (Preprocess.from_json(meta[META_PREPROCESS]) if META_PREPROCESS in meta
                          # jetson's ONNX models: whole frame stretched, ImageNet mean/std
                          else Preprocess(size=self.engine.input_size or 224, resize="stretch"))
            self.labels = self.engine.meta_json(META_LABELS)
            self.synsets = self.engine.meta_json(META_SYNSETS) or self.labels
        else:
            spec = get_spec(network or DEFAULT_NETWORK)
            weights_path = require_weights(spec, weights)
            self.network_name, preprocess = spec.name, spec.preprocess
            self.labels, self.synsets = imagenet_labels()
            if resolve_device(device) == "cuda":
                from .models.build import build_model
                from .runtime.torch_cuda import TorchEngine
                self.engine = TorchEngine(build_model(spec, weights_path), spec.preprocess)
            else:
                self.engine = self._onnx_engine(spec, weights_path, opts)
        if labels is not None:
            self.labels, self.synsets = read_labels(labels)
        if self.labels is None:
            raise ImgclassError(f"{model}: the model carries no labels; pass --labels FILE (one class per line)")
        n = self.engine.num_outputs
        if n is not None and n != len(self.labels):
            raise ImgclassError(f"labels list {len(self.labels)} classes but the model outputs {n}; "
                                f"give the labels file the model was trained with")
        self.preprocess = replace(preprocess, resize=resize) if resize else preprocess

    def _onnx_engine(self, spec, weights_path: Path, opts: dict) -> OnnxEngine:
        """The registry network exported to ONNX once (cached by the weights' sha256)."""
        sha = cache_key(file_sha256(weights_path), spec.arch, spec.preprocess.to_json())

        def build_onnx(path: Path) -> Path:
            from .export import export_onnx  # torch is imported only on a cache miss
            from .models.build import build_model
            return export_onnx(build_model(spec, weights_path), path, spec.preprocess, self.labels, self.synsets, spec.name)

        return OnnxEngine(build_onnx, sha, spec.name, describe=f"exporting {spec.name} to ONNX (about 15 s)", **opts)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 batch -> (N, classes) softmax probabilities."""
        return self.engine.run(batch)

    def predictions(self, probs: np.ndarray, topk: int = 1, threshold: float = 0.0) -> list[Prediction]:
        """The top-k classes of one probability vector, those below ``threshold`` dropped."""
        k = max(1, min(topk, len(probs)))
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top])]
        return [Prediction(int(i), self.labels[i], float(probs[i])) for i in top if probs[i] >= threshold]

    def classify(self, image: np.ndarray, topk: int = 1, threshold: float = 0.0) -> list[Prediction]:
        """Classify one HxWx3 uint8 RGB image; best first."""
        return self.classify_batch([image], topk, threshold)[0]

    def classify_batch(self, images: Sequence[np.ndarray], topk: int = 1, threshold: float = 0.0) -> list[list[Prediction]]:
        """Classify several images in one batch."""
        probs = self.probabilities(self.preprocess.batch(images))
        return [self.predictions(p, topk, threshold) for p in probs]

    def classify_files(self, paths: Iterable[str | Path], topk: int = 1, threshold: float = 0.0, batch_size: int = 8,
                       keep_images: bool = False, workers: int | None = None
                       ) -> Iterator[tuple[Path, list[Prediction] | ImgclassError, np.ndarray | None]]:
        """Classify image files, decoding in threads while the runtime works; yields in input order.

        Yields ``(path, predictions, image)``; a bad file yields its ImgclassError in place of
        the predictions and the rest go on. ``image`` is the full decoded frame when ``keep_images``.
        On CUDA (and no frames kept) JPEGs are decoded in batches on the GPU instead.
        """
        if hasattr(self.engine, "classify_files") and not keep_images:
            for path, probs in self.engine.classify_files(list(map(Path, paths))):
                yield path, probs if isinstance(probs, ImgclassError) else self.predictions(probs, topk, threshold), None
            return

        def decode(path: Path):
            try:
                image = open_image(path, min_size=None if keep_images else self._decode_min_size())
                return path, self.preprocess(image), np.asarray(image) if keep_images else None
            except ImgclassError as e:
                return path, e, None

        workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            for chunk in prefetched(pool, decode, map(Path, paths), ahead=batch_size * 2):
                good = [c for c in chunk if not isinstance(c[1], ImgclassError)]
                probs = iter(self.probabilities(np.stack([c[1] for c in good]))) if good else iter(())
                for path, x, image in chunk:
                    yield path, x if isinstance(x, ImgclassError) else self.predictions(next(probs), topk, threshold), image

    def _decode_min_size(self) -> int:
        p = self.preprocess
        return p.size if p.resize == "stretch" else round(p.size / p.crop_pct)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" where a CUDA device is usable, else "cpu" (without importing torch on CPU-only machines)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ImgclassError(f"unknown device '{device}'; use auto, cpu or cuda")
    if device == "auto":
        if not os.path.exists("/dev/nvidiactl"):
            return "cpu"
        from .runtime.torch_cuda import cuda_available
        return "cuda" if cuda_available() else "cpu"
    return device
