"""``select_engine``: the one place where a model, a device and a precision become an engine, and
where "auto" becomes a device (``resolve_device``). Every route (the CLI, the Python API, tables and
their Ray actors, the server, capture's preview, training's trunk) builds its engine here.

The built-in runtimes, asked in this order:
    torch-cuda    a registry network on CUDA: torch fp16, channels-last, CUDA graphs (``torch_cuda``)
    onnxruntime   fp32 on the CPU; an ONNX file also on CUDA through onnxruntime-gpu (``onnx``)
    openvino      bf16 and int8 on the CPU, and ``--precision auto``'s choice (``openvino``, ``precision``)
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Callable

from ..errors import ImgclassError
from ..labels import imagenet_labels
from ..models.onnx import META_DATASET, OnnxHeader, preprocess_from
from ..models.resolve import ModelRef, ModuleRef, NetworkRef, OnnxRef
from ..preprocess import Preprocess
from .base import RUNTIMES, Engine, EngineOptions, Job, Runtime, register_runtime
from .machine import MachineCosts, machine_costs

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "int8", "auto")
log = logging.getLogger("imgclass.select")


def resolve_device(device: str, job: Job = Job(), cuda: bool | Callable[[], bool] | None = None,
                   costs: MachineCosts | None = None) -> str:
    """"auto" -> "cuda" or "cpu" for ``job``; "cpu" and "cuda" as they are.

    A list of images goes where its estimated wall time is shorter: each device's start-up plus the
    images at its rate, from this machine's measured figures (``runtime.machine``): a few hundred
    photos never win back CUDA's start, tens of thousands do. Videos, streams and unknown work take
    the GPU where there is one.

    Args:
        cuda: whether CUDA is there: this machine's answer by default (without importing torch on a
            machine with no NVIDIA driver); a Ray cluster passes whether it has GPUs.
        costs: the machine's figures (default: this machine's, ``machine_costs()``).

    Example:
        >>> from imgclass.runtime.machine import DeviceCost
        >>> costs = MachineCosts(DeviceCost(0.7, 640), DeviceCost(20.0, 8000))
        >>> resolve_device("auto", Job(images=33), True, costs), resolve_device("auto", Job(stream=True), True, costs)
        ('cpu', 'cuda')
    """
    if device not in DEVICES:
        raise ImgclassError(f"unknown device '{device}'; use {', '.join(DEVICES)}")
    if device != "auto":
        return device

    def has_cuda() -> bool:
        return (cuda() if callable(cuda) else cuda) if cuda is not None else _cuda_here()

    if job.images is None:
        return "cuda" if has_cuda() else "cpu"
    costs = costs or machine_costs()
    pick, why = costs.faster(job.images), (f"estimated cpu {costs.cpu.seconds(job.images):.1f} s, cuda "
                                           f"{costs.cuda.seconds(job.images):.1f} s, from this machine's figures")
    if pick == "cuda" and not has_cuda():  # asked only now: on a GPU machine it imports torch
        pick, why = "cpu", "no CUDA device here"
    log.info(f"--device auto: {pick} for {job.images} images ({why})")
    return pick


def _cuda_here() -> bool:
    if not os.path.exists("/dev/nvidiactl"):
        return False
    from .torch_cuda import cuda_available
    return cuda_available()


def _onnxruntime_cuda() -> bool:
    if not os.path.exists("/dev/nvidiactl"):
        return False
    import onnxruntime as ort
    return "CUDAExecutionProvider" in ort.get_available_providers()


def check_precision(precision: str, device: str) -> str:
    """``precision``, checked against the device.

    Raises:
        ImgclassError: an unknown precision, or bf16/int8 asked of CUDA (they are CPU precisions).
    """
    if precision not in PRECISIONS:
        raise ImgclassError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    if device == "cuda" and precision in ("bf16", "int8"):
        raise ImgclassError(f"--precision {precision} is for the CPU (OpenVINO); on CUDA imgclass already runs "
                            "in half precision: use --device cpu, or leave --precision out")
    return precision


def select_engine(model: ModelRef, device: str = "auto", precision: str = "fp32", job: Job = Job(),
                  options: EngineOptions = EngineOptions()) -> Engine:
    """The engine that runs ``model`` for ``job``: "auto" device resolved here, then the first
    registered runtime that takes the model, device and precision builds it.

    Raises:
        ImgclassError: an unknown device or precision, or none that this machine can run.
    """
    precision = check_precision(precision, device)
    # "auto" takes CUDA only where a runtime can use it: a registry network through torch, an ONNX
    # file through onnxruntime-gpu (with the CPU build of onnxruntime, an ONNX file stays on the CPU).
    cuda = _onnxruntime_cuda if isinstance(model, OnnxRef) else None
    device = "cpu" if precision in ("bf16", "int8") else resolve_device(device, job, cuda)
    for runtime in RUNTIMES:
        if runtime.takes(model, device, precision):
            return runtime.build(model, device, precision, replace(options, job=job))
    raise ImgclassError(f"no runtime runs {model.name} on {device} at {precision}; try --device cpu --precision fp32")


def model_preprocess(model: ModelRef, metadata: dict[str, str], input_size: int | None,
                     resize: str | None = None) -> Preprocess:
    """How images become ``model``'s input: a registry network's settings, an ONNX model's metadata
    (``preprocess_from``), with ``--resize`` overriding either."""
    if isinstance(model, ModuleRef):
        base = model.preprocess
    elif isinstance(model, NetworkRef):
        base = model.spec.preprocess
    else:
        base = preprocess_from(metadata, input_size, str(model.path))
    return replace(base, resize=resize) if resize else base


# --- the built-in runtimes --------------------------------------------------------------------------

def _source(model: ModelRef, header: OnnxHeader | None = None):
    """The model as the fp32 ONNX bytes every CPU precision is built from (``precision.SourceModel``):
    an ONNX file's own bytes, or a registry network exported once and cached."""
    from .precision import SourceModel
    from .quantize import is_quantized

    if isinstance(model, OnnxRef):
        dataset = header.metadata.get(META_DATASET) if header is not None else None
        return SourceModel(lambda: model.data, model.sha256, model.path.stem, str(model.path), dataset,
                           quantized=is_quantized(model.data))
    from .cache import cache_key
    from .onnx import cached_export

    spec, weights = model.spec, model.weights
    key = cache_key(weights.sha256, spec.arch, spec.preprocess.to_json())

    def build_onnx(path):
        from ..models.build import build_model
        from ..models.onnx_export import export_onnx  # torch is imported only on a cache miss
        labels, synsets = imagenet_labels()
        return export_onnx(build_model(spec, weights), path, spec.preprocess, labels, synsets, spec.name)

    describe = f"exporting {spec.name} to ONNX (about 15 s)"
    return SourceModel(lambda: cached_export(build_onnx, key, spec.name, describe), key, spec.name, spec.name)


def _onnxruntime(model: ModelRef, device: str, precision: str, options: EngineOptions) -> Engine:
    from .onnx import OnnxEngine

    common = dict(threads=options.threads, device=device, input_name=options.input_name,
                  output_name=options.output_name)
    if isinstance(model, OnnxRef):
        return OnnxEngine(model.data, model.sha256, model.path.stem, source_name=str(model.path),
                          describe=f"optimizing {model.path.name} for ONNX Runtime", **common)
    if isinstance(model, ModuleRef):
        from ..models.onnx_export import export_onnx

        def build_onnx(path):
            return export_onnx(model.module, path, model.preprocess, [], network=model.name, softmax=False)
        return OnnxEngine(build_onnx, model.key, model.name, describe=f"exporting {model.name} to ONNX", **common)
    source = _source(model)
    return OnnxEngine(lambda _scratch: source.read(), source.key, model.spec.name, **common)


def _openvino(model: ModelRef, device: str, precision: str, options: EngineOptions) -> Engine:
    from .precision import cpu_engine

    header = (OnnxHeader(model.data, str(model.path), options.input_name, options.output_name)
              if isinstance(model, OnnxRef) else None)
    metadata = header.metadata if header is not None else {}
    preprocess = model_preprocess(model, metadata, header.input_size if header else None, options.resize)
    engine = cpu_engine(_source(model, header), precision, preprocess,
                        lambda: _onnxruntime(model, "cpu", "fp32", options), calibration=options.calibration,
                        threads=options.threads, input_name=options.input_name, output_name=options.output_name)
    engine.metadata = metadata or engine.metadata  # an int8 model's own metadata may be gone: the file's says
    return engine


def _torch_cuda(model: ModelRef, device: str, precision: str, options: EngineOptions) -> Engine:
    from .torch_cuda import TorchEngine, scripted_network, uses_cudnn

    if isinstance(model, ModuleRef):
        return TorchEngine(model.module, model.preprocess)
    if options.job.images is not None:  # a list of files: the network that loads fastest, never compiled
        network = scripted_network(model.spec, model.weights, cudnn=uses_cudnn(options.job.images))
        return TorchEngine(network, model.spec.preprocess, folder_job=options.job.images)
    from ..models.build import build_model  # unknown work (the API, a server, streams): compiled where it pays
    return TorchEngine(build_model(model.spec, model.weights), model.spec.preprocess)


for _runtime in (Runtime("torch-cuda", lambda m, d, p: d == "cuda" and not isinstance(m, OnnxRef), _torch_cuda),
                 Runtime("onnxruntime", lambda m, d, p: p == "fp32" or d == "cuda", _onnxruntime),
                 Runtime("openvino", lambda m, d, p: d == "cpu" and p in ("bf16", "int8", "auto")
                         and not isinstance(m, ModuleRef), _openvino)):
    register_runtime(_runtime, first=False)
