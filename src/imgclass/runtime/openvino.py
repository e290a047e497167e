"""OpenVINO back end: reduced precision on the CPU, bf16 (AVX-512 BF16 / AMX) and int8 (VNNI / AMX).

fp32 stays on ONNX Runtime, which is as fast there. Measured on efficientnet-lite0, batch 8, on a
2-core Xeon with AVX-512 BF16/VNNI and AMX, one run: ONNX Runtime fp32 218 img/s, ONNX Runtime int8
(the QDQ model) 335, OpenVINO fp32 206, OpenVINO bf16 449, OpenVINO int8 (the same QDQ model) 541,
all with fp32's top-1 on the ground-truth photos. BENCHMARKS.md has the current figures.
"""
from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ImgclassError, first_line
from ..models.onnx import pick_name
from .cache import cache_key, discard_entry, engine_path, read_entry, unsealed, write_entry
from .onnx import as_probabilities

# OpenVINO's names for what each precision needs of the CPU.
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"  # OpenVINO's performance hints


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
        self.model_name, self.precision, self.device, self.decodes_files = name, precision, "cpu", False
        self.stem, self.sha256 = Path(name).stem, hashlib.sha256(model).hexdigest()  # its compiled shapes' cache key
        self.name, self.metadata = f"OpenVINO {precision} on the CPU", {}
        try:
            self.network = _core().read_model(model)
            self.input = self.network.input(pick_name([i.get_any_name() for i in self.network.inputs], input_name,
                                                      "input blob", "--input-blob"))
            self.output = self.network.output(pick_name([o.get_any_name() for o in self.network.outputs], output_name,
                                                        "output blob", "--output-blob"))
        except RuntimeError as e:  # OpenVINO's own errors: a model it cannot read
            raise self._cannot_run(e) from None
        self.lock = threading.Lock()  # one call at a time: the requests' buffers are reused
        self._compiled = {}  # (hint, batch) -> (output port, requests), built on first use
        self._requests(LATENCY, 1)  # an op OpenVINO lacks fails here, not in the first batch

    def _requests(self, hint: str, batch: int):
        """(output port, requests) of the network compiled for a static ``batch`` under OpenVINO's
        ``hint``: LATENCY (one stream, one image as soon as it can) or THROUGHPUT (a stream per few
        cores, fed by several requests at once). Static, because OpenVINO's CPU kernels run a fixed
        shape faster (int8 lite0 on 2 cores: batch 1 3.7 -> 2.8 ms, batch 8 476 -> 552 img/s)."""
        if (hint, batch) not in self._compiled:
            import openvino as ov

            compiled = self._compile(hint, batch)
            requests = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._compiled[hint, batch] = compiled.output(self.output.get_any_name()), requests
        return self._compiled[hint, batch]

    def _compile(self, hint: str, batch: int):
        """The network compiled for ``batch`` images under ``hint``, through the engine cache (0.4 s to
        compile, 0.06 to load, each shape of each process): sealed there, where OpenVINO's own cache
        (CACHE_DIR) would load a damaged file as it is and answer wrong."""
        config = {**self.config, "PERFORMANCE_HINT": hint}
        key = cache_key(self.sha256, openvino_version(), cpu_name(), batch, sorted(config.items()))
        path = engine_path(self.stem, key, f".{self.precision}.{hint.lower()}{batch}.blob")
        entry = read_entry(path)
        if entry is not None:
            try:
                return _core().import_model(unsealed(entry), "CPU", config)
            except RuntimeError as e:
                discard_entry(path, first_line(e))
        network, shape = self.network.clone(), self.input.get_partial_shape()
        try:
            if shape.rank.is_static:
                shape[0] = batch
                network.reshape({network.input(self.input.get_any_name()): shape})
            compiled = _core().compile_model(network, "CPU", config)
        except RuntimeError as e:  # an op OpenVINO lacks, a graph fixed to one batch size
            raise self._cannot_run(e) from None
        write_entry(path, compiled.export_model().getvalue())
        return compiled

    def _cannot_run(self, e: RuntimeError) -> ImgclassError:
        return ImgclassError(f"{self.model_name}: OpenVINO cannot run it in {self.precision} ({first_line(e)}); "
                             "use --precision fp32")

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
        run side by side, as OpenVINO's benchmark_app keeps them busy. Each request takes a power of
        two of images, the last padded, so that a job meets few shapes (each compiled once a machine)."""
        with self.lock:
            if len(batch) == 1:  # on this thread: no hand-over to OpenVINO's and back
                port, requests = self._requests(LATENCY, 1)
                out = requests[0].infer({self.input.get_any_name(): batch}, share_inputs=True)[port]
                return as_probabilities(np.array(out, np.float32))  # a copy: the request reuses its buffer
            streams = len(self._requests(THROUGHPUT, 1)[1])  # how many OpenVINO runs side by side here
            per_request = -(-len(batch) // streams)
            return as_probabilities(self._run_split(batch, 1 << (per_request - 1).bit_length()))

    def _run_split(self, batch: np.ndarray, size: int) -> np.ndarray:
        port, requests = self._requests(THROUGHPUT, size)
        n = len(batch)
        if n % size:
            batch = np.concatenate([batch, np.zeros((size - n % size, *batch.shape[1:]), batch.dtype)])
        parts = {}
        # the request reuses its output buffer: copy before it runs again
        requests.set_callback(lambda request, i: parts.__setitem__(i, np.array(request.get_tensor(port).data,
                                                                                 np.float32)))
        for i in range(0, len(batch), size):  # read in place: the slices live until wait_all
            requests.start_async({self.input.get_any_name(): batch[i:i + size]}, i, share_inputs=True)
        requests.wait_all()
        return np.concatenate([parts[i] for i in sorted(parts)])[:n]

