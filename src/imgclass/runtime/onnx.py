"""ONNX Runtime back end: a model file in, probabilities out."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ImgclassError, first_line
from ..models.onnx import check_parses, not_onnx, pick_name
from .cache import cache_key, engine_path, read_entry, warn, write_entry
from .quantize import is_quantized

ENGINE_FORMAT = 2  # bump when the way engines are built changes
SOURCE_FORMAT = 1  # bump when the way registry networks are exported changes
# an engine's source: the ONNX model's bytes, or what writes it to a scratch path (see OnnxEngine)
ModelSource = bytes | Callable[[Path], Path | bytes]


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` ("cpu" or "cuda"; ``runtime.select`` resolves "auto")."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()]
    if not gpu:
        raise ImgclassError("--device cuda: this onnxruntime has no CUDA provider; pip install onnxruntime-gpu, or use --device cpu")
    return [*gpu, "CPUExecutionProvider"]


def session(model: bytes | str | Path, name: str, *, threads: int | None = None,
            providers: Sequence[str] = ("CPUExecutionProvider",), optimized_to: str | Path | None = None,
            level: ort.GraphOptimizationLevel | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session with imgclass's options: every session imgclass builds comes from here.

    Args:
        model: the ONNX model's bytes, or its file.
        name: the model in error messages.
        threads: intra-op threads (default: ONNX Runtime's own choice).
        providers: execution providers, in order of preference (see :func:`providers_for`).
        optimized_to: where ONNX Runtime saves the graph it optimized (default: not saved).
        level: how far ONNX Runtime optimizes the graph. Default: ``ORT_ENABLE_EXTENDED`` when it is
            saved (the saved graph stays portable across CPUs; ``ORT_ENABLE_ALL``'s layout passes run
            at load), else ``ORT_ENABLE_ALL``.

    Returns:
        The session, ready to run.

    Raises:
        ImgclassError: ONNX Runtime refuses the model.

    Example:
        >>> engine = session(Path("model.onnx").read_bytes(), "model.onnx", threads=2)  # doctest: +SKIP
        >>> engine.get_inputs()[0].name  # doctest: +SKIP
        'input_0'
    """
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                    _options(threads, optimized_to, level), providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise not_onnx(name, first_line(e)) from None


def _options(threads: int | None, optimized_to: str | Path | None,
             level: ort.GraphOptimizationLevel | None) -> ort.SessionOptions:
    """The options of :func:`session` (see its arguments)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle inference threads sleep instead of spinning: decode threads need those cores between
    # batches (end to end +48% on 2 cores, model-only unchanged; BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if optimized_to:
        options.optimized_model_filepath = str(optimized_to)
    if level is None:
        levels = ort.GraphOptimizationLevel
        level = levels.ORT_ENABLE_EXTENDED if optimized_to else levels.ORT_ENABLE_ALL
    options.graph_optimization_level = level
    return options


def _optimize(source: ModelSource, name: str, threads: int | None, providers: list[str]) -> bytes:
    """The source model (bytes, or from a ``build_onnx`` callable) as optimized by ONNX Runtime,
    saved and read back."""
    with tempfile.TemporaryDirectory(prefix="imgclass-") as scratch:
        if callable(source):
            source = source(Path(scratch) / "source.onnx")
        optimized = Path(scratch) / "optimized.onnx"
        session(source if isinstance(source, bytes) else Path(source).read_bytes(), name, threads=threads,
                providers=providers, optimized_to=optimized)
        return optimized.read_bytes()


def cached_export(build_onnx, key: str, stem: str, describe: str = "") -> bytes:
    """The fp32 ONNX model that ``build_onnx`` writes (a registry network's export), built once and
    cached under ``key``: every engine and precision of the network is built from these bytes.

    Args:
        build_onnx: called on a cache miss with a scratch file path; writes the model there and
            returns the path, or returns the model's bytes.
        describe: what a cache miss does, said once on stderr (nothing when empty).
    """
    path = engine_path(stem, cache_key(key, SOURCE_FORMAT), folder="sources")
    data = read_entry(path)
    if data is None:
        if describe:
            warn(f"{describe} (first run only; cached in {path.parent})")
        with tempfile.TemporaryDirectory(prefix="imgclass-") as scratch:
            source = build_onnx(Path(scratch) / "source.onnx")
            data = write_entry(path, source if isinstance(source, bytes) else Path(source).read_bytes())
    return data


class OnnxEngine:
    """An optimized ONNX Runtime session over a cached engine.

    Args:
        source: the source ONNX model's bytes (checked before ``describe`` is said), or a callable
            run on a cache miss with a scratch file path that writes the model there and returns
            the path, or returns the model's bytes.
        source_sha: sha256 of the bytes the engine is built from (the ONNX model, or the weights).
        stem: readable prefix of the cache file name.
        source_name: the source in error messages (default: ``stem``).
        describe: what a cache miss does, said once on stderr (nothing when empty).

    Example:
        >>> data = read_model(Path("model.onnx"))  # doctest: +SKIP
        >>> engine = OnnxEngine(data, hashlib.sha256(data).hexdigest(), "model")  # doctest: +SKIP
        >>> probs = engine.run(batch)  # (N, classes)  # doctest: +SKIP
    """

    def __init__(self, source: ModelSource, source_sha: str, stem: str, *, threads: int | None = None, device: str = "cpu",
                 input_name: str | None = None, output_name: str | None = None, describe: str = "",
                 source_name: str | None = None):
        providers = providers_for(device)
        # a QDQ model (export's model-int8.onnx) runs its int8 ops whatever --precision said: report what runs
        self.precision = "int8" if isinstance(source, bytes) and is_quantized(source) else "fp32"
        self.device, self.decodes_files = device, False
        self.name = f"ONNX Runtime {self.precision} on {providers[0].removesuffix('ExecutionProvider')}"
        key = cache_key(source_sha, ENGINE_FORMAT, f"onnxruntime {ort.__version__}", providers, self.precision)
        self.path = engine_path(stem, key)
        engine = read_entry(self.path)
        if engine is None:
            if isinstance(source, bytes):
                check_parses(source, source_name or stem)
            if describe:
                warn(f"{describe} (first run only; cached in {self.path.parent})")
            engine = write_entry(self.path, _optimize(source, source_name or stem, threads, providers))
        self.session = session(engine, str(self.path), threads=threads, providers=providers)
        self.input = self._pick(self.session.get_inputs(), input_name, "input blob", "--input-blob")
        self.output = self._pick(self.session.get_outputs(), output_name, "output blob", "--output-blob")
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def _pick(self, nodes, wanted: str | None, what: str, flag: str):
        name = pick_name([n.name for n in nodes], wanted, what, flag)
        return next(n for n in nodes if n.name == name)

    @property
    def input_size(self) -> int | None:
        side = self.input.shape[-1]
        return side if isinstance(side, int) else None

    @property
    def num_outputs(self) -> int | None:
        n = self.output.shape[-1]
        return n if isinstance(n, int) else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 -> (N, classes) probabilities (softmax applied if the model outputs logits)."""
        return as_probabilities(self.outputs(batch))

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 -> the output tensor as the model gives it (logits, activations)."""
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and fixed != len(batch):  # a model exported with a static batch size
            return np.concatenate([self.outputs(batch[i:i + fixed]) for i in range(0, len(batch), fixed)])
        return self.session.run([self.output.name], {self.input.name: batch})[0]


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """A model's output for N images as (N, classes) float32 probabilities: softmax applied unless
    they already are (a model exported with its softmax). Every engine's ``run`` ends here.

    Example:
        >>> as_probabilities(np.array([[2.0, 0.0]])).round(3)
        array([[0.881, 0.119]], dtype=float32)
    """
    out = scores.reshape(len(scores), -1).astype(np.float32, copy=False)
    if out.min() < 0 or not np.allclose(out.sum(axis=1), 1, atol=1e-3):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out
