"""The fast tier (``pytest tests/unit``, first in CI: no torch, no processes). The seams, without a
model: the device rule, engine selection, what --model names, the one decode, the light base modules
and their docstring examples."""
from __future__ import annotations

import doctest
import importlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import imgclass
from imgclass.errors import ImgclassError
from imgclass.media.decode import decode, decode_files
from imgclass.models.onnx import META_PREPROCESS, preprocess_from
from imgclass.models.resolve import BEST, RUN_MODEL, model_file
from imgclass.preprocess import Preprocess
from imgclass.runtime.base import EngineOptions, Job, Runtime, register_runtime, unregister_runtime
from imgclass.runtime.machine import DeviceCost, MachineCosts
from imgclass.runtime.select import resolve_device, select_engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
LIGHT_MODULES = ["imgclass.flags", "imgclass.parallel", "imgclass.preprocess", "imgclass.classifier",
                 "imgclass.runtime.base", "imgclass.runtime.select", "imgclass.serve.oip", "imgclass.fileio",
                 "imgclass.models.resolve", "imgclass.media.decode", "imgclass.media.inputs", "imgclass.config"]


def test_the_tier_imports_no_torch(request):
    if any(Path(__file__).parent not in Path(item.path).parents for item in request.session.items):
        pytest.skip("other tiers run in this process and import torch; run `pytest tests/unit` alone to check")
    for name in LIGHT_MODULES:
        importlib.import_module(name)
    assert "torch" not in sys.modules


def test_the_device_rule_picks_the_faster_device_from_each_machines_figures(caplog):
    """Two imaginary machines: a 16-core server whose GPU takes 20 s to start (the H100 measured cold),
    and a 2-core laptop with a GPU that starts in 3 s. The same jobs go to different devices."""
    server = MachineCosts(cpu=DeviceCost(0.7, 720), cuda=DeviceCost(20.0, 8000))
    laptop = MachineCosts(cpu=DeviceCost(0.7, 90), cuda=DeviceCost(3.0, 2000))
    jobs = [33, 500, 5760, 57_600]
    assert [resolve_device("auto", Job(images=n), True, server) for n in jobs] == ["cpu", "cpu", "cpu", "cuda"]
    assert [resolve_device("auto", Job(images=n), True, laptop) for n in jobs] == ["cpu", "cuda", "cuda", "cuda"]
    assert resolve_device("auto", Job(images=57_600), False, server) == "cpu"  # no GPU: the CPU whatever the job
    assert resolve_device("auto", Job(stream=True), True, server) == "cuda"
    assert resolve_device("cpu", Job(stream=True), True, server) == "cpu"
    with caplog.at_level(logging.INFO, logger="imgclass"):  # what --verbose says is what was chosen
        resolve_device("auto", Job(images=57_600), False, server)
    assert "--device auto: cpu for 57600 images (no CUDA device here)" in caplog.text
    with pytest.raises(ImgclassError, match="unknown device 'tpu'"):
        resolve_device("tpu")


class FakeModel:
    name = "fake"


def test_select_engine_asks_the_runtimes_in_order_with_auto_resolved():
    asked = []
    built = register_runtime(Runtime("built", lambda m, d, p: p == "fp32", lambda m, d, p, o: ("engine", d, o)))
    first = register_runtime(Runtime("first", lambda m, d, p: asked.append((d, p)) and False, None))
    try:
        engine = select_engine(FakeModel(), "cpu", "fp32", Job(images=3), EngineOptions(threads=2))
        assert engine == ("engine", "cpu", EngineOptions(threads=2, job=Job(images=3))) and asked == [("cpu", "fp32")]
        with pytest.raises(ImgclassError, match="is for the CPU"):
            select_engine(FakeModel(), "cuda", "int8")
        with pytest.raises(ImgclassError, match="unknown precision"):
            select_engine(FakeModel(), "cpu", "fp8")
    finally:
        unregister_runtime(first), unregister_runtime(built)


def test_model_file_reads_run_folders_and_points_checkpoints_to_export(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / BEST).write_bytes(b"x")
    with pytest.raises(ImgclassError, match="not exported to ONNX yet; run: imgclass export --model-dir"):
        model_file(run)
    assert model_file(run, checkpoints=True) == run / BEST  # eval runs checkpoints
    (run / RUN_MODEL).write_bytes(b"x")
    assert model_file(run) == model_file(run, checkpoints=True) == run / RUN_MODEL
    with pytest.raises(ImgclassError, match="a PyTorch file, not ONNX"):
        model_file(run / BEST)
    with pytest.raises(ImgclassError, match="model file not found"):
        model_file(tmp_path / "missing.onnx")


def test_preprocessing_comes_from_the_metadata_or_jetsons_default():
    p = Preprocess(size=160, crop_pct=0.9)
    assert preprocess_from({META_PREPROCESS: p.to_json()}, 224) == p
    assert preprocess_from({}, 299) == Preprocess(size=299, resize="stretch")


def test_one_decode_gives_the_same_pixels_from_a_file_its_bytes_and_in_batches():
    p = Preprocess()
    path = EXAMPLES / "orange.jpg"
    pixels = decode(path, p)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert np.array_equal(decode(path.read_bytes(), p), pixels)
    [batch] = list(decode_files([path, EXAMPLES / "missing.jpg"], p, batch_size=2))
    assert np.array_equal(batch[0][1], pixels) and isinstance(batch[1][1], ImgclassError)


@pytest.mark.parametrize("name", LIGHT_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert failed == 0


def test_classifier_repr_and_version():
    assert imgclass.__version__ and "Classifier" in imgclass.__all__
