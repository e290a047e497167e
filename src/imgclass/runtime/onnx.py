"""ONNX Runtime back end: a model file in, probabilities out."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ImgclassError
from ..media.images import atomic_write
from .cache import cache_key, engine_path, file_sha256

ENGINE_FORMAT = 1  # bump when the way engines are built changes
# imgclass's ONNX contract: tensor names (jetson's) and the metadata keys export writes.
INPUT_NAME, OUTPUT_NAME = "input_0", "output_0"
META_LABELS, META_SYNSETS = "imgclass.labels", "imgclass.synsets"
META_PREPROCESS, META_NETWORK = "imgclass.preprocess", "imgclass.network"


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` ("cpu", "cuda" or "auto")."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if device == "cuda" and not gpu:
        raise ImgclassError("--device cuda: this onnxruntime has no CUDA provider; pip install onnxruntime-gpu, or use --device cpu")
    return [*gpu, "CPUExecutionProvider"]


def _session(path: Path, threads: int | None, providers: list[str], optimized_to: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if optimized_to:
        # EXTENDED keeps the saved graph portable across CPUs; ENABLE_ALL's layout passes run at load.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = optimized_to
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise ImgclassError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None


class OnnxEngine:
    """An optimized ONNX Runtime session over a cached engine.

    Args:
        source: a model file (ONNX) or a callable writing one to a given path (used only on a cache miss).
        source_sha: sha256 of the bytes the engine is built from (the ONNX file, or the weights).
        stem: readable prefix of the cache file name.
        metadata_from: where to read custom metadata (the source ONNX file); the engine keeps it too.

    Example:
        >>> engine = OnnxEngine.from_file("model.onnx")  # doctest: +SKIP
        >>> probs = engine.run(batch)                     # (N, classes)
    """

    def __init__(self, build_onnx, source_sha: str, stem: str, *, threads: int | None = None, device: str = "cpu",
                 input_name: str | None = None, output_name: str | None = None, describe: str = ""):
        providers = providers_for(device)
        self.precision = "fp32"
        key = cache_key(source_sha, ENGINE_FORMAT, f"onnxruntime {ort.__version__}", providers, self.precision)
        path = engine_path(stem, key)
        if not path.exists():
            if describe:
                print(f"imgclass: {describe} (first run only; cached in {path.parent})", file=sys.stderr, flush=True)
            tmp_onnx = path.with_name(f".{path.stem}.src-{os.getpid()}-{id(self)}.onnx")  # unique across processes
            try:
                source = build_onnx(tmp_onnx)
                atomic_write(path, lambda tmp: _session(Path(source), threads, providers, optimized_to=tmp))
            finally:
                tmp_onnx.unlink(missing_ok=True)
        self.path = path
        self.session = _session(path, threads, providers)
        self.input = self._pick(self.session.get_inputs(), input_name, "input blob", "--input-blob")
        self.output = self._pick(self.session.get_outputs(), output_name, "output blob", "--output-blob")
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    @classmethod
    def from_file(cls, model: str | Path, **kwargs) -> "OnnxEngine":
        model = Path(model)
        if not model.is_file():
            raise ImgclassError(f"{model}: model file not found; check the path given to --model")
        return cls(lambda _tmp: model, file_sha256(model), model.stem, **kwargs)

    def _pick(self, nodes, wanted: str | None, what: str, flag: str):
        names = [n.name for n in nodes]
        if wanted is None:
            if len(nodes) != 1:
                raise ImgclassError(f"model has {len(nodes)} {what}s ({', '.join(names)}); name one with {flag}")
            return nodes[0]
        for n in nodes:
            if n.name == wanted:
                return n
        raise ImgclassError(f"model has no {what} '{wanted}' (it has: {', '.join(names)}); fix {flag}")

    @property
    def input_size(self) -> int | None:
        side = self.input.shape[-1]
        return side if isinstance(side, int) else None

    @property
    def num_outputs(self) -> int | None:
        n = self.output.shape[-1]
        return n if isinstance(n, int) else None

    def meta_json(self, key: str):
        return json.loads(self.metadata[key]) if key in self.metadata else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 -> (N, classes) probabilities (softmax applied if the model outputs logits)."""
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and fixed != len(batch):  # a model exported with a static batch size
            return np.concatenate([self.run(batch[i:i + fixed]) for i in range(0, len(batch), fixed)])
        out = self.session.run([self.output.name], {self.input.name: batch})[0]
        out = out.reshape(len(batch), -1).astype(np.float32, copy=False)
        if out.min() < 0 or not np.allclose(out.sum(axis=1), 1, atol=1e-3):
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out
