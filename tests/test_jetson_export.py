"""`imgclass export --jetson` / onnx_export.py: the file jetson-inference's imagenet loads, fed jetson's
own preprocessing, answers as imgclass does."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from imgclass.export.jetson import jetson_preprocess
from imgclass.models.onnx import META_LABELS
from imgclass.export.run import load_run

from conftest import run_cli, run_python

SIDE = round(64 / 0.875)  # the tiny run's input side: its 64 px model input before the center crop


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    out = run_cli("export", str(run_dir), "--jetson")
    assert out.returncode == 0, out.stderr
    assert "ONNX Runtime matches PyTorch" in out.stdout and "--input_blob=input_0 --output_blob=output_0" in out.stdout
    return run_dir / "efficientnet-lite0.onnx"


def smooth_square(side: int = 219) -> np.ndarray:
    """A square RGB image fading from red to blue: smooth content that both classes score."""
    t = np.linspace(0, 1, side, dtype=np.float32)[None, :, None]
    wave = 0.1 * np.sin(np.linspace(0, 3, side, dtype=np.float32))[:, None, None]
    pixels = (1 - t - wave) * np.array([220, 30, 30], np.float32) + (t + wave) * np.array([30, 30, 220], np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def test_file_is_what_jetson_loads(run_dir, exported):
    proto = onnx.load(exported)
    shape = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in proto.graph.input] == ["input_0"] and shape(proto.graph.input[0]) == [1, 3, SIDE, SIDE]
    assert [o.name for o in proto.graph.output] == ["output_0"] and shape(proto.graph.output[0]) == [1, 2]
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    assert {n.domain for n in proto.graph.node} == {""}  # standard operators only: TensorRT parses them
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # one file
    assert (run_dir / "labels.txt").read_text() == "blue\nred\n"
    assert json.loads({p.key: p.value for p in proto.metadata_props}[META_LABELS]) == ["blue", "red"]


def test_jetson_preprocessing_gives_imgclass_answer_on_a_square_image(run_dir, exported):
    _, model, preprocess, _ = load_run(run_dir)
    assert preprocess.decode_size == SIDE  # the exported input side
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    # At the input side jetson's resize does nothing, so the graph alone is compared; on a larger square
    # only the resampling filter differs (imgclass's bicubic, jetson's nearest). Log-odds: never saturated.
    for side, tolerance in ((SIDE, 1e-3), (219, 0.25)):
        image = smooth_square(side)
        with torch.no_grad():
            own = torch.log_softmax(model(torch.from_numpy(preprocess(image)[None])), 1).numpy()[0]
        jetson = np.log(session.run(["output_0"], {"input_0": jetson_preprocess(image, SIDE)[None]})[0][0])
        assert jetson.argmax() == own.argmax()
        assert abs((jetson[0] - jetson[1]) - (own[0] - own[1])) < tolerance, side


def test_jetson_preprocess_samples_like_tensor_convert():
    image = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    x = jetson_preprocess(image, 3)
    # dst pixel (y, x) reads src (int(y * 6/3), int(x * 4/3)): rows 0, 2, 4 and columns 0, 1, 2
    expected = image[[0, 2, 4]][:, [0, 1, 2]].astype(np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    assert np.allclose(x, ((expected - mean) / std).transpose(2, 0, 1), atol=1e-6)


def test_classify_runs_the_jetson_file_too(run_dir, exported):
    dataset = Path(load_run(run_dir)[0]["dataset"])
    out = run_cli("classify", str(dataset / "val" / "red"), "--model", str(exported))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(red)") == 3


def test_onnx_export_py_writes_the_same_file(run_dir, exported, tmp_path):
    out = run_python("-c", "import sys; from imgclass.cli import onnx_export_main; sys.exit(onnx_export_main())",
                     f"--model_dir={run_dir}", f"--output={tmp_path / 'resnet18.onnx'}")
    assert out.returncode == 0, out.stderr
    ours, theirs = onnx.load(exported), onnx.load(tmp_path / "resnet18.onnx")
    assert [(n.op_type, list(n.input)) for n in ours.graph.node] == [(n.op_type, list(n.input)) for n in theirs.graph.node]
    assert (tmp_path / "labels.txt").read_text() == "blue\nred\n"


def test_a_different_labels_txt_is_never_replaced(run_dir, exported, tmp_path):
    (tmp_path / "labels.txt").write_text("cats\ndogs\n")
    out = run_cli("export", "--model-dir", str(run_dir), "--jetson", "--output", str(tmp_path / "m.onnx"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "already lists other classes" in out.stderr
    assert (tmp_path / "labels.txt").read_text() == "cats\ndogs\n" and not (tmp_path / "m.onnx").exists()


def test_run_folder_is_required_once(tmp_path):
    out = run_cli("export", "--jetson")
    assert out.returncode == 1 and "no run folder given" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("export", str(tmp_path / "a"), "--model-dir", str(tmp_path / "b"))
    assert out.returncode == 1 and "two run folders" in out.stderr
