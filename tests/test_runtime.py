"""The ONNX Runtime engine and its cache: keyed by content, atomic, torch-free when warm."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import imgclass
from imgclass.errors import ImgclassError

from conftest import EXAMPLES, run_cli, run_python


def tiny_onnx(path, weights, input_name="input_0", output_name="output_0", batch="N", softmax=True):
    """A 3-channel 8x8 -> len(weights[0]) classes model: global average pool + linear (+ softmax)."""
    weights = np.asarray(weights, np.float32)
    nodes = [helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W"], ["logits" if softmax else output_name])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=1))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, weights.shape[1]])],
        [helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.flatten())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


RED, BLUE = np.full((16, 16, 3), (255, 0, 0), np.uint8), np.full((16, 16, 3), (0, 0, 255), np.uint8)


def engines(cache):
    return sorted((cache / "engines").glob("*.onnx"))


def test_a_changed_model_file_never_runs_a_stale_engine(tmp_path, monkeypatch):
    private_cache = tmp_path / "cache"  # its own: other tests build engines of the same tiny models
    monkeypatch.setenv("IMGCLASS_CACHE", str(private_cache))
    model, labels = tmp_path / "model.onnx", tmp_path / "labels.txt"
    labels.write_text("red\nblue\n")
    tiny_onnx(model, [[5, -5], [0, 0], [-5, 5]])
    before = set(engines(private_cache))
    net = imgclass.Classifier(model=model, labels=labels)
    assert net.classify(RED)[0].label == "red" and net.classify(BLUE)[0].label == "blue"
    first = set(engines(private_cache)) - before
    assert len(first) == 1
    imgclass.Classifier(model=model, labels=labels)  # warm: same engine, nothing new
    assert set(engines(private_cache)) - before == first
    tiny_onnx(model, [[-5, 5], [0, 0], [5, -5]])  # "retrained": same path, new bytes
    net = imgclass.Classifier(model=model, labels=labels)
    assert net.classify(RED)[0].label == "blue"
    assert len(set(engines(private_cache)) - before) == 2


def test_two_processes_building_the_same_engine_both_work(tmp_path):
    model, labels = tmp_path / "model.onnx", tmp_path / "labels.txt"
    labels.write_text("red\nblue\n")
    tiny_onnx(model, [[1, -1], [0, 0], [-1, 1]])
    code = f"import imgclass; print(imgclass.Classifier(model={str(model)!r}, labels={str(labels)!r}).num_classes)"
    env_cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "IMGCLASS_CACHE": str(env_cache)}) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all(o[0].strip() == "2" for o in outs)
    assert len(list((env_cache / "engines").glob("*.onnx"))) == 1
    assert not list((env_cache / "engines").glob(".*"))  # no temp files left behind


def test_blob_names_labels_and_logits(tmp_path):
    model, labels = tmp_path / "net.onnx", tmp_path / "labels.txt"
    labels.write_text("red\nblue\n")
    tiny_onnx(model, [[5, -5], [0, 0], [-5, 5]], input_name="data", output_name="prob", batch=1, softmax=False)
    net = imgclass.Classifier(model=model, labels=labels, input_blob="data", output_blob="prob")
    # a static batch of 1 and raw logits: still batched and softmaxed correctly
    (red,), (blue,) = net.classify_batch([RED, BLUE])
    assert red.label == "red" and blue.label == "blue" and red.confidence > 0.9
    assert np.allclose(net.probabilities(net.preprocess.batch([RED, BLUE, RED])).sum(axis=1), 1)
    with pytest.raises(ImgclassError, match=r"no input blob 'input_0' \(it has: data\)"):
        imgclass.Classifier(model=model, labels=labels, input_blob="input_0")
    with pytest.raises(ImgclassError, match="carries no labels"):
        imgclass.Classifier(model=model)
    imgclass.save_image(tmp_path / "red.png", RED)
    out = run_cli("classify", str(tmp_path / "red.png"), "--model", str(model), "--labels", str(labels), "--output_blob", "output_0")
    assert out.returncode == 1 and "no output blob 'output_0' (it has: prob); fix --output-blob" in out.stderr
    out = run_cli("classify", str(tmp_path / "red.png"), "--model", str(model), "--labels", str(labels))
    assert out.returncode == 0 and "(red)" in out.stdout


def test_a_warm_run_does_not_import_torch(classifier):
    code = "import sys, imgclass; imgclass.Classifier(); print('torch' in sys.modules)"
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    # the whole command line too: its parser knows every verb without importing their libraries
    code = ("import sys; from imgclass.cli import main; main(['classify', sys.argv[1]]); "
            "print('torch' in sys.modules)")
    out = run_python("-c", code, EXAMPLES / "orange.jpg")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("% class #950 (orange)") and lines[1:] == ["False"]


def test_auto_device_keeps_small_jobs_on_the_cpu(monkeypatch, tmp_path):
    # Even where a GPU is usable, starting torch + CUDA costs more than a small job takes on the CPU;
    # the rule learns this machine's figures from the folder jobs it ran.
    from imgclass.runtime import cache, machine, select
    from imgclass.runtime.base import Job
    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "_built", 0)
    monkeypatch.setattr(select, "_cuda_here", lambda: True)
    monkeypatch.setattr(machine, "default_costs", lambda: machine.MachineCosts(machine.DeviceCost(0.7, 700),
                                                                                machine.DeviceCost(20.0, 8000)))
    assert select.resolve_device("auto", Job(images=33)) == "cpu"
    assert select.resolve_device("auto", Job(images=57_600)) == "cuda"
    assert select.resolve_device("auto", Job(stream=True)) == "cuda"  # videos and streams: length unknown
    assert select.resolve_device("auto") == "cuda"  # unknown work (the API, a server)
    assert select.resolve_device("cuda", Job(images=1)) == "cuda"  # asked for: obeyed
    machine.record_job("cuda", 5760, start_s=2.0, images_per_s=8000)  # this machine's GPU starts fast
    assert select.resolve_device("auto", Job(images=5760)) == "cuda"
    machine.record_job("cuda", 10, start_s=0.1, images_per_s=1e6)  # too few images to say anything: not kept
    assert machine.machine_costs().cuda == machine.DeviceCost(2.0, 8000)
    cache.write_entry(tmp_path / "engines" / "x.onnx", b"built")  # a first run's export: its start is not kept
    machine.record_job("cpu", 5760, start_s=15.7, images_per_s=700)
    assert machine.machine_costs().cpu == machine.DeviceCost(0.7, 700)

def test_a_small_folder_job_gets_a_network_traced_without_cudnn():
    """TorchScript fixes each convolution's cuDNN switch when it traces; a small job's trace has it off (cuDNN's
    first call costs it seconds on a GPU), a large job's on, and each trace is cached apart."""
    torch = pytest.importorskip("torch")
    from imgclass.models import get_spec
    from imgclass.models.registry import read_weights
    from imgclass.runtime.torch_cuda import scripted_network, uses_cudnn

    def cudnn_flags(net) -> set[bool]:  # aten::_convolution's 12th argument is cudnn_enabled
        return {node.inputsAt(11).toIValue() for node in net.inlined_graph.nodes() if node.kind() == "aten::_convolution"}

    spec = get_spec("efficientnet-lite0")
    assert not uses_cudnn(33) and uses_cudnn(57_600)
    small, large = (scripted_network(spec, read_weights(spec), cudnn=flag) for flag in (False, True))
    assert cudnn_flags(small) == {False} and cudnn_flags(large) == {True}
    assert torch.backends.cudnn.enabled  # tracing left the process's switch as it was
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(small(x), large(x), atol=1e-5)  # on the CPU the switch changes nothing else


def test_the_gpu_decoder_reads_files_in_parts_and_keeps_their_order(tmp_path, monkeypatch):
    """Reader threads take READ_PART files a task (a task per file spent the GIL on handing over), and the
    batches still hold the files in order, an unreadable one as its error (decoding stubbed: no GPU here)."""
    pytest.importorskip("torch")
    from imgclass.media import gpu_decode

    monkeypatch.setattr(gpu_decode, "READ_PART", 2)  # parts of 2 files, batches of 3: they never line up
    monkeypatch.setattr(gpu_decode.GpuDecoder, "_decode", lambda self, paths, raw, decoders: raw)
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(bytes([i]) * (i + 1))
    paths[3].unlink()
    os.mkfifo(paths[5].with_name("pipe.jpg"))  # opened to read, it would wait for a writer for ever
    paths[5] = paths[5].with_name("pipe.jpg")
    batches = list(gpu_decode.GpuDecoder("cuda", workers=3).batches(paths, 3))
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    got = [(p, data) for batch_paths, raws in batches for p, data in zip(batch_paths, raws)]
    assert [p for p, _ in got] == paths
    assert [str(got[i][1]) for i in (3, 5)] == [f"{paths[3]}: file not found; check the path",
                                                f"{paths[5]}: not a regular file (a FIFO), not an image"]
    assert [d.tolist() for p, d in got if p not in (paths[3], paths[5])] == [[i] * (i + 1) for i in (0, 1, 2, 4, 6)]


def test_a_read_ahead_by_weight_holds_at_most_its_size_and_keeps_order():
    """Prefetch with ``weight`` (the GPU decoder's bytes read ahead): items wait while their total weight
    would pass ``size``, one heavier than ``size`` still goes through, and all come out in order."""
    import time

    from imgclass.parallel import Prefetch

    made = []

    def parts():
        for n in (3, 3, 3, 9, 1):
            made.append(n)
            yield "x" * n

    with Prefetch(parts(), size=7, weight=len) as ahead:
        deadline = time.monotonic() + 10
        while len(made) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert made == [3, 3, 3] and ahead._held == 6  # the third waits: 6 + 3 would pass 7
        assert [len(part) for part in ahead] == [3, 3, 3, 9, 1]
        assert ahead._held == 0
