"""OpenVINO back end: reduced precision on the CPU, bf16 (AVX-512 BF16 / AMX) and int8 (VNNI / AMX).

fp32 stays on ONNX Runtime, which is as fast there. Measured on efficientnet-lite0, batch 8, on a
2-core Xeon with AVX-512 BF16/VNNI and AMX, one run: ONNX Runtime fp32 218 img/s, ONNX Runtime int8
(the QDQ model) 335, OpenVINO fp32 206, OpenVINO bf16 449, OpenVINO int8 (the same QDQ model) 541,
all with fp32's top-1 on the ground-truth photos. BENCHMARKS.md has the current figures.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from ..errors import ImgclassError, first_line
from ..models.onnx import pick_name
from .onnx import as_probabilities

# OpenVINO's names for what each precision needs of the CPU.
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}


@lru_cache(maxsize=1)
def _core():
    import openvino as ov  # 0.3 s to import: only for the precisions that use it
    return ov.Core()


def cpu_precisions() -> list[str]:
    """The precisions this CPU runs natively (OpenVINO's own check), e.g. ``["fp32", "bf16", "int8"]``."""
    capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return [p for p, cap in _CAPABILITY.items() if cap in capabilities]


def cpu_name() -> str:
    """The CPU as OpenVINO names it (part of the key of a measured choice)."""
    return _core().get_property("CPU", "FULL_DEVICE_NAME")


def openvino_version() -> str:
    import openvino as ov
    return ov.__version__


class OpenVinoEngine:
    """An ONNX model compiled by OpenVINO for the CPU at a reduced precision.

    Args:
        model: ONNX bytes: an fp32 model (bf16), or one quantized to int8 with QDQ nodes (int8).
        precision: "bf16" or "int8".
        name: the model in error messages.
        threads: CPU threads (default: all cores).
        input_name, output_name: the tensors to use, for models with several.

    Example:
        >>> engine = OpenVinoEngine(Path("model.onnx").read_bytes(), "bf16", "model.onnx")  # doctest: +SKIP
        >>> probs = engine.run(batch)  # (N, classes), like OnnxEngine.run  # doctest: +SKIP
    """

    def __init__(self, model: bytes, precision: str, name: str, *, threads: int | None = None,
                 input_name: str | None = None, output_name: str | None = None):
        native = cpu_precisions()
        if precision not in native:
            raise ImgclassError(f"--precision {precision}: this CPU has no native {precision} (it has: "
                                f"{', '.join(native)}); use --precision auto or fp32")
        # An int8 model's layers carry their own precision; what stays in float runs in bf16 where it can.
        hint = "bf16" if "bf16" in native else "f32"
        self.config = {"INFERENCE_PRECISION_HINT": hint}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        try:
            network = _core().read_model(model)
            self.input = network.input(pick_name([i.get_any_name() for i in network.inputs], input_name,
                                                 "input blob", "--input-blob"))
            self.output = network.output(pick_name([o.get_any_name() for o in network.outputs], output_name,
                                                   "output blob", "--output-blob"))
            shape = self.input.get_partial_shape()
            if shape.rank.is_static and shape[0].is_static:  # a static batch (jetson's exports): take any batch
                shape[0] = -1
                network.reshape({self.input: shape})
            self.network = network
            self.compiled = self._compile("LATENCY")
        except RuntimeError as e:  # OpenVINO's own errors: an op it lacks, a model it cannot read
            raise ImgclassError(f"{name}: OpenVINO cannot run it in {precision} ({first_line(e)}); "
                                "use --precision fp32") from None
        self.precision, self.device, self.decodes_files = precision, "cpu", False
        self.name, self.metadata = f"OpenVINO {precision} on the CPU", {}
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()  # one call at a time: the requests' buffers are reused
        self.output_port = self.compiled.output(self.output.get_any_name())
        self._throughput = None  # (compiled model, its requests): built for the first batch of several

    def _compile(self, hint: str):
        """The network compiled for OpenVINO's LATENCY hint (one stream: a single image as soon as it
        can) or its THROUGHPUT hint (a stream per few cores, fed by several requests at once)."""
        return _core().compile_model(self.network, "CPU", {**self.config, "PERFORMANCE_HINT": hint})

    @property
    def input_size(self) -> int | None:
        side = self.input.get_partial_shape()[-1]
        return side.get_length() if side.is_static else None

    @property
    def num_outputs(self) -> int | None:
        n = self.output.get_partial_shape()[-1]
        return n.get_length() if n.is_static else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 -> (N, classes) probabilities (softmax applied if the model outputs logits).

        One image runs on the latency model; a batch is split over the throughput model's requests,
        run side by side, as OpenVINO's benchmark_app keeps them busy (2 cores, int8, batch 8: 91% of
        benchmark_app's throughput, against 59% for one request; BENCHMARKS.md)."""
        with self.lock:
            if len(batch) == 1:
                out = self.request.infer({self.input.get_any_name(): batch})[self.output_port]
                # the request reuses its output buffer: copy before the next call can write it
                return as_probabilities(np.array(out, np.float32, copy=True))
            return as_probabilities(self._run_split(batch))

    def _run_split(self, batch: np.ndarray) -> np.ndarray:
        import openvino as ov

        if self._throughput is None:
            compiled = self._compile("THROUGHPUT")
            requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self._throughput = compiled, ov.AsyncInferQueue(compiled, requests)
        compiled, queue = self._throughput
        port, parts = compiled.output(self.output.get_any_name()), {}
        queue.set_callback(lambda request, i: parts.__setitem__(i, np.array(request.get_tensor(port).data, np.float32)))
        chunks = np.array_split(batch, min(len(queue), len(batch)))
        for i, chunk in enumerate(chunks):
            queue.start_async({self.input.get_any_name(): chunk}, i)
        queue.wait_all()
        return np.concatenate([parts[i] for i in range(len(chunks))])
