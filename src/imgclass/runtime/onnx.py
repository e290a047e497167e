"""ONNX Runtime back end: a model file in, probabilities out."""
from __future__ import annotations

import hashlib
import json
import shlex
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ImgclassError, first_line
from ..train.config import BEST
from .cache import cache_key, engine_path, read_entry, warn, write_entry

ENGINE_FORMAT = 2  # bump when the way engines are built changes
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


def _session(model: bytes, name: str, threads: int | None, providers: list[str],
             optimized_to: str | None = None) -> ort.InferenceSession:
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
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise ImgclassError(f"{name}: not a valid ONNX model ({first_line(e)}); export it again") from None


def _optimize(build_onnx, name: str, threads: int | None, providers: list[str]) -> bytes:
    """The source model (from ``build_onnx``) as optimized by ONNX Runtime, saved and read back."""
    with tempfile.TemporaryDirectory(prefix="imgclass-") as scratch:
        source = build_onnx(Path(scratch) / "source.onnx")
        optimized = Path(scratch) / "optimized.onnx"
        _session(source if isinstance(source, bytes) else Path(source).read_bytes(), name, threads, providers,
                 optimized_to=str(optimized))
        return optimized.read_bytes()


def model_file(model: str | Path) -> Path:
    """The ONNX file that ``--model`` names: the file, or a training run folder's model.onnx.

    Raises:
        ImgclassError: no such file, or a PyTorch checkpoint / a run folder not exported yet (the
            message gives the ``imgclass export`` command).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model.onnx").is_file():
            return path / "model.onnx"
        checkpoints = sorted(path.glob("*.pth.tar"), key=lambda p: p.name != BEST)
        if checkpoints:
            raise ImgclassError(f"{path}: a training run not exported to ONNX yet; run: "
                                f"{_export_command(checkpoints[0])}, then pass --model {shlex.quote(str(path))} again")
        raise ImgclassError(f"{path}: a folder with no model.onnx; give --model an ONNX file or an exported run folder")
    if not path.is_file():
        raise ImgclassError(f"{path}: model file not found; check the path given to --model")
    if path.name.endswith((".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")):
        raise ImgclassError(f"{path}: a PyTorch file, not ONNX; for a training checkpoint run: {_export_command(path)}, "
                            f"then pass --model {shlex.quote(str(path.parent / 'model.onnx'))} (network weights go to "
                            "--network NAME --weights FILE)")
    return path


def _export_command(checkpoint: Path) -> str:
    command = f"imgclass export --model-dir {shlex.quote(str(checkpoint.parent))}"
    return command if checkpoint.name == BEST else f"{command} --input {shlex.quote(checkpoint.name)}"


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
    except Exception:  # not ONNX at all: onnxruntime's message says so
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


class OnnxEngine:
    """An optimized ONNX Runtime session over a cached engine.

    Args:
        build_onnx: called on a cache miss with a scratch file path; writes the source ONNX model
            there and returns the path, or returns the model's bytes.
        source_sha: sha256 of the bytes the engine is built from (the ONNX model, or the weights).
        stem: readable prefix of the cache file name.
        source_name: the source in error messages (default: ``stem``).
        describe: what a cache miss does, said once on stderr (nothing when empty).

    Example:
        >>> engine = OnnxEngine.from_file("model.onnx")  # doctest: +SKIP
        >>> probs = engine.run(batch)                     # (N, classes)
    """

    def __init__(self, build_onnx, source_sha: str, stem: str, *, threads: int | None = None, device: str = "cpu",
                 input_name: str | None = None, output_name: str | None = None, describe: str = "",
                 source_name: str | None = None):
        providers = providers_for(device)
        self.precision = "fp32"
        key = cache_key(source_sha, ENGINE_FORMAT, f"onnxruntime {ort.__version__}", providers, self.precision)
        self.path = engine_path(stem, key)
        engine = read_entry(self.path)
        if engine is None:
            if describe:
                warn(f"{describe} (first run only; cached in {self.path.parent})")
            engine = write_entry(self.path, _optimize(build_onnx, source_name or stem, threads, providers))
        self.session = _session(engine, str(self.path), threads, providers)
        self.input = self._pick(self.session.get_inputs(), input_name, "input blob", "--input-blob")
        self.output = self._pick(self.session.get_outputs(), output_name, "output blob", "--output-blob")
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    @classmethod
    def from_file(cls, model: str | Path, **kwargs) -> "OnnxEngine":
        """The engine of an ONNX file (or an exported run folder: see ``model_file``)."""
        path = model_file(model)
        data = read_model(path)
        return cls(lambda _scratch: data, hashlib.sha256(data).hexdigest(), path.stem, source_name=str(path), **kwargs)

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
