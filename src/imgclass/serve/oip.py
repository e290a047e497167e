"""The Open Inference Protocol v2 (KServe v2, Triton HTTP/REST) for an image classifier: request
parsing and response encoding, free of any web framework.

The model's tensors::

    input   images       BYTES  [N]      encoded image files (JPEG, PNG, ...), one per element
    output  labels       BYTES  [N, K]   the top-K class labels of each image, best first
            confidences  FP32   [N, K]   their softmax confidences (0..1)
            indices      INT64  [N, K]   their class indices

K is the request parameter ``topk`` (default: the server's ``--topk``); ``--threshold`` does not
apply here, as a tensor needs K classes for every image. Tensor data travels in
the JSON (``data``: for ``images``, the base64 of each file; outputs as plain lists) or, with
Triton's binary tensor data extension, after the JSON header: the ``Inference-Header-Content-Length``
header gives the JSON's size, and each binary tensor has ``parameters.binary_data_size`` (a BYTES
element is a 4-byte little-endian length, then its bytes). ``tritonclient.http`` sends inputs that way
by default and asks for binary outputs (``binary_data`` per output, or ``binary_data_output``).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import reprlib  # a client's values in errors, cut short: a shape can be megabytes long or nested 900 deep
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..classifier import Prediction
from ..errors import ImgclassError

INPUT = "images"
OUTPUTS = {"labels": "BYTES", "confidences": "FP32", "indices": "INT64"}
VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
MAX_DIMS = 8  # of an input's shape (int64 sizes): its data nests at most this deep, far from Python's recursion limit


@dataclass
class InferRequest:
    """What an infer request asks: the encoded images, K, and which outputs (name, binary?)."""

    images: list[bytes]
    topk: int | None
    outputs: list[tuple[str, bool]]
    id: str | None = None


def model_metadata(name: str) -> dict:
    """``GET /v2/models/{name}``: the model's tensors (-1: any size)."""
    return {"name": name, "versions": [VERSION], "platform": "imgclass",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": n, "datatype": t, "shape": [-1, -1]} for n, t in OUTPUTS.items()]}


def pack_bytes(items: Iterable[bytes]) -> bytes:
    """A BYTES tensor in the binary extension's layout: each element's 4-byte little-endian length, then it.

    Example:
        >>> pack_bytes([b"ab", b""])
        b'\\x02\\x00\\x00\\x00ab\\x00\\x00\\x00\\x00'
    """
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def unpack_bytes(data: bytes | memoryview) -> list[bytes]:
    """The elements of a binary BYTES tensor (the inverse of ``pack_bytes``)."""
    items, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise ImgclassError(f"{INPUT}: binary data ends inside an element's 4-byte length; "
                                "each element is a little-endian uint32 length then the bytes")
        (n,) = struct.unpack_from("<I", data, i)
        if i + 4 + n > len(data):
            raise ImgclassError(f"{INPUT}: element {len(items)} says {n} bytes but only {len(data) - i - 4} follow")
        items.append(bytes(data[i + 4:i + 4 + n]))
        i += 4 + n
    return items


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse ``POST /v2/models/{name}/infer``: a JSON request, or a JSON header then binary tensors.

    Raises:
        ImgclassError: the request breaks the protocol or does not fit this model (the message says how).
    """
    split = len(body)
    if header_length is not None:
        # isdigit() alone takes '²' and 5,000 digits, which int() refuses
        count = header_length.isascii() and header_length.isdigit() and len(header_length) <= 20
        if not count or not 0 < int(header_length) <= len(body):
            raise ImgclassError(f"Inference-Header-Content-Length is {reprlib.repr(header_length)}; "
                                f"it must be the JSON header's size in bytes (the body has {len(body)})")
        split = int(header_length)
    try:
        header = json.loads(body[:split])
    except ValueError as e:
        raise ImgclassError(f"the inference request is not valid JSON ({e})") from None
    except RecursionError:
        raise ImgclassError("the inference request's JSON nests too deeply") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ImgclassError("the inference request needs an 'inputs' list (Open Inference Protocol v2)")
    images = _images(header["inputs"], memoryview(body)[split:])
    params = _dict(header.get("parameters"), "parameters")
    topk = params.get("topk")
    if topk is not None and (not isinstance(topk, int) or isinstance(topk, bool) or topk < 1):
        raise ImgclassError(f"parameters.topk is {reprlib.repr(topk)}; give a whole number >= 1")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ImgclassError(f"the request's id is {reprlib.repr(request_id)}; it must be a string")
    return InferRequest(images, topk, _outputs(header.get("outputs"), bool(params.get("binary_data_output", False))),
                        request_id)


def _dict(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImgclassError(f"{where} must be a JSON object")
    return value


def _images(inputs: list, binary: memoryview) -> list[bytes]:
    """The encoded images of the one input, from its binary data or its base64 JSON data."""
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        names = [t.get("name") for t in inputs if isinstance(t, dict)]
        raise ImgclassError(f"this model takes one input, '{INPUT}' (BYTES, shape [N]: encoded image files); "
                            f"got {reprlib.repr(names)}")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise ImgclassError(f"{INPUT}: datatype is {reprlib.repr(tensor.get('datatype'))}; it must be BYTES (encoded image files)")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 63 for d in shape)):
        raise ImgclassError(f"{INPUT}: shape is {reprlib.repr(shape)}; give a list of at most {MAX_DIMS} sizes, like [N]")
    params = _dict(tensor.get("parameters"), f"{INPUT}.parameters")
    if "shared_memory_region" in params:
        raise ImgclassError(f"{INPUT}: shared memory is not supported; send the images in the request")
    if "binary_data_size" in params:
        if params["binary_data_size"] != len(binary):
            raise ImgclassError(f"{INPUT}: binary_data_size is {reprlib.repr(params['binary_data_size'])} but "
                                f"{len(binary)} bytes follow the JSON header")
        images = unpack_bytes(binary)
    else:
        if len(binary):
            raise ImgclassError(f"{len(binary)} bytes follow the JSON header but {INPUT} has no binary_data_size")
        images = [_base64(s, i) for i, s in enumerate(_flat(tensor.get("data"), len(shape)))]
    if len(images) != math.prod(shape):
        raise ImgclassError(f"{INPUT}: shape {reprlib.repr(shape)} holds {math.prod(shape)} elements but the data has {len(images)}")
    if not images:
        raise ImgclassError(f"{INPUT}: no image in the request")
    return images


def _flat(data, dims: int) -> list:
    """Tensor data as a flat list: the protocol allows it flat or nested by rows, as deep as the shape's ``dims``."""
    if data is None:
        raise ImgclassError(f"{INPUT}: no data; give 'data' (base64 strings) or binary data")
    if not isinstance(data, list):
        return [data]
    if dims == 0:
        raise ImgclassError(f"{INPUT}: data nests deeper than its shape's dimensions")
    return [x for item in data for x in _flat(item, dims - 1)]


def _base64(text, index: int) -> bytes:
    if not isinstance(text, str):
        raise ImgclassError(f"{INPUT}[{index}]: JSON data must be base64 strings of image files")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImgclassError(f"{INPUT}[{index}]: not valid base64; in JSON, each image is the base64 of its file") from None


def _outputs(requested, binary_default: bool) -> list[tuple[str, bool]]:
    """The (name, binary?) of each output to send: those requested, else all of them."""
    if requested is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise ImgclassError("'outputs' must be a list of objects like {\"name\": \"labels\"}")
    chosen = []
    for out in requested:
        name, params = out.get("name"), _dict(out.get("parameters"), "output parameters")
        if not isinstance(name, str) or name not in OUTPUTS:  # a list or an object cannot be looked up
            raise ImgclassError(f"no output {reprlib.repr(name)}; this model has {', '.join(OUTPUTS)}")
        if any(name == seen for seen, _ in chosen):  # each answer tensor once: no amplification by repetition
            raise ImgclassError(f"output {name!r} is asked for twice; name each output once")
        if "classification" in params or "shared_memory_region" in params:
            raise ImgclassError(f"{name}: the classification and shared memory extensions are not supported; "
                                "ask for labels, confidences and indices, with parameters.topk for K")
        chosen.append((name, bool(params.get("binary_data", binary_default))))
    return chosen


def encode_infer_response(model: str, request: InferRequest, results: Sequence[Sequence[Prediction]]) -> tuple[bytes, dict]:
    """The response body and headers for the top-K ``results`` of each image (K the same for all)."""
    n, k = len(results), len(results[0])
    preds = [p for row in results for p in row]
    tensors = {"labels": [p.label.encode() for p in preds],
               "confidences": np.array([p.confidence for p in preds], "<f4"),
               "indices": np.array([p.index for p in preds], "<i8")}
    outputs, chunks = [], []
    for name, binary in request.outputs:
        tensor, value = {"name": name, "datatype": OUTPUTS[name], "shape": [n, k]}, tensors[name]
        if binary:
            raw = pack_bytes(value) if OUTPUTS[name] == "BYTES" else value.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = [b.decode() for b in value] if OUTPUTS[name] == "BYTES" else value.tolist()
        outputs.append(tensor)
    response = {"model_name": model, "model_version": VERSION, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    head = json.dumps(response).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
