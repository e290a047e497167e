"""ONNX Runtime back end: a model file in, probabilities out."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ImgclassError, first_line
from .cache import cache_key, engine_path, read_entry, warn, write_entry

ENGINE_FORMAT = 2  # bump when the way engines are built changes
SOURCE_FORMAT = 1  # bump when the way registry networks are exported changes
# an engine's source: the ONNX model's bytes, or what writes it to a scratch path (see OnnxEngine)
ModelSource = bytes | Callable[[Path], Path | bytes]


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` ("cpu", "cuda" or "auto")."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if device == "cuda" and not gpu:
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
        raise _not_onnx(name, first_line(e)) from None


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


def _not_onnx(name: str, why: str) -> ImgclassError:
    return ImgclassError(f"{name}: not a valid ONNX model ({why}); export it again")


def _check_parses(model: bytes, name: str):
    """Refuse bytes that do not parse as an ONNX model (cut short, another kind of file): the cheap
    part of ONNX Runtime's own check, done before a slow build is announced so that the error is
    the only line said. Returns the parsed model (an ``onnx.ModelProto``).

    Raises:
        ImgclassError: not an ONNX model.
    """
    import onnx  # only on a cache miss: a warm run never loads it

    try:
        proto = onnx.load_model_from_string(model)
    except Exception:  # protobuf's DecodeError, untyped in its public API
        raise _not_onnx(name, "it does not parse as ONNX: cut short, or another kind of file") from None
    if not proto.graph.output:  # stray bytes can parse as an empty message
        raise _not_onnx(name, "it holds no graph with outputs")
    return proto


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


def read_model(path: Path) -> bytes:
    """An ONNX file's bytes as ONNX Runtime gets them, read once so that the cache key and the
    engine come from the same bytes. Tensors stored beside the file (``model.onnx.data``,
    torch's export of big models) are read into the model: one digest covers them, and the
    cached engine needs no files but itself.

    Raises:
        ImgclassError: unreadable, empty, or its external data missing.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read the model ({e.strerror}); check the path given to --model") from None
    if not data:
        raise ImgclassError(f"{path}: empty file (0 bytes), not an ONNX model; copy or export it again")
    # Each external tensor names its file under the key "location": without those bytes there are none.
    return _with_external_data(data, path) if b"location" in data else data


def _with_external_data(data: bytes, path: Path) -> bytes:
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # not ONNX at all: _check_parses says so on a cache miss
        return data
    try:
        load_external_data_for_model(proto, str(path.parent))
    except Exception as e:  # a missing, short or out-of-folder data file
        raise ImgclassError(f"{path}: cannot read the external data it refers to ({first_line(e)}); keep the "
                            ".data file(s) exported with it in the same folder") from None
    try:
        return proto.SerializeToString()
    except ValueError:  # protobuf's 2 GB message limit
        raise ImgclassError(f"{path}: over 2 GB with its external data, more than one ONNX file can hold, so "
                            "imgclass cannot cache it; use a smaller model") from None


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


def pick_name(names: list[str], wanted: str | None, what: str, flag: str) -> str:
    """The tensor to use: ``wanted``, or the model's only one.

    Raises:
        ImgclassError: several and none named, or ``wanted`` is not among them.
    """
    if wanted is None:
        if len(names) != 1:
            raise ImgclassError(f"model has {len(names)} {what}s ({', '.join(names)}); name one with {flag}")
        return names[0]
    if wanted not in names:
        raise ImgclassError(f"model has no {what} '{wanted}' (it has: {', '.join(names)}); fix {flag}")
    return wanted


def meta_json(metadata: dict[str, str], key: str):
    """A JSON value of a model's metadata (labels, synsets), or None when the model has none."""
    return json.loads(metadata[key]) if key in metadata else None


class OnnxHeader:
    """What an ONNX model says about itself, read from its bytes without building a session (40 ms
    for 19 MB): its metadata, input side and class count, for engines that need them before they
    are built.

    Raises:
        ImgclassError: not an ONNX model, or no such input or output (``input_name``, ``output_name``).
    """

    def __init__(self, data: bytes, name: str, input_name: str | None = None, output_name: str | None = None):
        proto = _check_parses(data, name)
        weights = {w.name for w in proto.graph.initializer}  # old exports list them as inputs too
        inputs = {i.name: i for i in proto.graph.input if i.name not in weights}
        outputs = {o.name: o for o in proto.graph.output}
        self.input_size = _last_dim(inputs[pick_name(list(inputs), input_name, "input blob", "--input-blob")])
        self.num_outputs = _last_dim(outputs[pick_name(list(outputs), output_name, "output blob", "--output-blob")])
        self.metadata = {p.key: p.value for p in proto.metadata_props}

    def meta_json(self, key: str):
        return meta_json(self.metadata, key)


def _last_dim(value) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


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
        self.precision = "fp32"
        key = cache_key(source_sha, ENGINE_FORMAT, f"onnxruntime {ort.__version__}", providers, self.precision)
        self.path = engine_path(stem, key)
        engine = read_entry(self.path)
        if engine is None:
            if isinstance(source, bytes):
                _check_parses(source, source_name or stem)
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

    def meta_json(self, key: str):
        return meta_json(self.metadata, key)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 -> (N, classes) probabilities (softmax applied if the model outputs logits)."""
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and fixed != len(batch):  # a model exported with a static batch size
            return np.concatenate([self.run(batch[i:i + fixed]) for i in range(0, len(batch), fixed)])
        return as_probabilities(self.session.run([self.output.name], {self.input.name: batch})[0])


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
