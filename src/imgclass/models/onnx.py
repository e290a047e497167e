"""imgclass's ONNX contract, shared by what writes models (export) and what reads them (the runtime):
tensor names (jetson's) and metadata keys; and reading an ONNX file: its bytes (with any external
data), and what it says about itself (metadata, input size, classes) without building a session.
The ``onnx`` package is imported only when a file's graph must be parsed."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ImgclassError, first_line
from ..labels import check_labels
from ..preprocess import Preprocess

INPUT_NAME, OUTPUT_NAME = "input_0", "output_0"
META_LABELS, META_SYNSETS = "imgclass.labels", "imgclass.synsets"
META_PREPROCESS, META_NETWORK = "imgclass.preprocess", "imgclass.network"
META_DATASET = "imgclass.dataset"  # a trained model's dataset folder: its images calibrate int8


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


def not_onnx(name: str, why: str) -> ImgclassError:
    return ImgclassError(f"{name}: not a valid ONNX model ({why}); export it again")


def check_parses(model: bytes, name: str):
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
        raise not_onnx(name, "it does not parse as ONNX: cut short, or another kind of file") from None
    if not proto.graph.output:  # stray bytes can parse as an empty message
        raise not_onnx(name, "it holds no graph with outputs")
    return proto


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


def meta_json(metadata: dict[str, str], key: str, name: str):
    """A JSON value of model ``name``'s metadata, or None when the model has none.

    Raises:
        ImgclassError: the value is not JSON.
    """
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested past Python's stack
        raise ImgclassError(f"{name}: its metadata '{key}' is not valid JSON ({first_line(e, 80)}); "
                            "export the model again") from None


def meta_labels(metadata: dict[str, str], key: str, name: str) -> list[str] | None:
    """The class names a model's metadata lists under ``key`` (labels, synsets), or None.

    Raises:
        ImgclassError: not JSON, or not class names (``labels.check_labels``).
    """
    value = meta_json(metadata, key, name)
    return None if value is None else check_labels(value, f"{name}: metadata '{key}'")


class OnnxHeader:
    """What an ONNX model says about itself, read from its bytes without building a session (40 ms
    for 19 MB): its metadata, input side and class count, for engines that need them before they
    are built.

    Raises:
        ImgclassError: not an ONNX model, or no such input or output (``input_name``, ``output_name``).
    """

    def __init__(self, data: bytes, name: str, input_name: str | None = None, output_name: str | None = None):
        proto = check_parses(data, name)
        weights = {w.name for w in proto.graph.initializer}  # old exports list them as inputs too
        inputs = {i.name: i for i in proto.graph.input if i.name not in weights}
        outputs = {o.name: o for o in proto.graph.output}
        self.input_size = _last_dim(inputs[pick_name(list(inputs), input_name, "input blob", "--input-blob")])
        self.num_outputs = _last_dim(outputs[pick_name(list(outputs), output_name, "output blob", "--output-blob")])
        self.metadata = {p.key: p.value for p in proto.metadata_props}


def _last_dim(value) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


def preprocess_from(metadata: dict[str, str], input_size: int | None, name: str = "model") -> Preprocess:
    """Model ``name``'s preprocessing: what imgclass's export wrote in its metadata, else jetson's
    (the whole frame stretched to the input size, ImageNet mean/std).

    Raises:
        ImgclassError: settings that are malformed or out of bounds (``Preprocess.check``).
    """
    if META_PREPROCESS in metadata:
        return Preprocess.from_json(metadata[META_PREPROCESS], f"{name}: metadata '{META_PREPROCESS}'")
    try:
        return Preprocess(size=input_size or 224, resize="stretch")
    except ImgclassError as e:  # an input side out of bounds
        raise ImgclassError(f"{name}: {e}") from None
