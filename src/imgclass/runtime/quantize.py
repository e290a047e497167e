"""Static int8 quantization of an ONNX model, calibrated on real images, in ONNX Runtime's QDQ format
(which OpenVINO, ONNX Runtime and TensorRT all run)."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

# Layers that end a classifier's head: the walk back from an output stops after the first of them.
_HEAD_END = {"Gemm", "MatMul", "Conv"}


def quantize_int8(source: bytes, calibration: np.ndarray, batch_size: int = 8) -> bytes:
    """``source`` (fp32 ONNX bytes) quantized to int8: per-channel int8 weights, uint8 activations
    whose ranges come from ``calibration`` (preprocessed NCHW images, a few hundred at most). The
    classifier's head stays in float (``head_nodes``).

    Example:
        >>> int8 = quantize_int8(Path("model.onnx").read_bytes(), batch)  # doctest: +SKIP
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="imgclass-") as work, _quiet():
        source_path, prepared, target = (Path(work) / name for name in ("source.onnx", "prepared.onnx", "int8.onnx"))
        source_path.write_bytes(source)
        # shapes inferred, graph folded: better ranges (ONNX's shape inference is enough for CNNs, 10x faster)
        quant_pre_process(str(source_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(prepared)
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"imgclass_{i}"  # the quantizer excludes nodes by name
        onnx.save_model(model, prepared)
        input_name = model.graph.input[0].name
        batches = iter([{input_name: calibration[i:i + batch_size]} for i in range(0, len(calibration), batch_size)])

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(batches, None)

        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=head_nodes(model))
        return target.read_bytes()


def is_quantized(model: bytes) -> bool:
    """True for an ONNX model quantized already (QDQ): its op names are plain bytes in the file."""
    return b"DequantizeLinear" in model


def head_nodes(model) -> list[str]:
    """Names of the nodes from each graph output back to the last Gemm/MatMul/Conv, included.

    They stay in float: quantized, the logits would move in steps of 1/255 of their range and the
    probabilities (a softmax's output) in steps of 1/255, so confidences would change and top-1
    would tie; the head is about 1% of the network's work.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None:
            names.append(node.name)
            if node.op_type in _HEAD_END or not node.input:
                break
            node = producer.get(node.input[0])
    return names


class _quiet:
    """onnxruntime.quantization logs a warning per op it leaves alone; keep the console clean."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)
