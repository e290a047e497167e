"""Export a trained run to ONNX, classify and evaluate with it."""
import json
from pathlib import Path

import onnx
import pytest
import torch

from imgclass.errors import ImgclassError
from imgclass.models.onnx import META_LABELS, META_PREPROCESS
from imgclass.export.check import check_agreement
from imgclass.train.checkpoint import load_checkpoint, model_from_checkpoint

from conftest import run_cli, run_python


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    out = run_cli("export", "--model-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert "ONNX Runtime matches PyTorch" in out.stdout
    return run_dir / "model.onnx"


def test_export_writes_metadata_and_dynamic_batch(exported):
    proto = onnx.load(exported)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[META_LABELS]) == ["blue", "red"]
    assert json.loads(meta[META_PREPROCESS])["size"] == 64
    assert [i.name for i in proto.graph.input] == ["input_0"] and [o.name for o in proto.graph.output] == ["output_0"]
    assert not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")


def test_onnx_and_pytorch_agree_on_real_images(run_dir, exported):
    model, _, _ = model_from_checkpoint(load_checkpoint(run_dir / "model_best.pth.tar"))
    images = sorted((Path(load_checkpoint(run_dir / "model_best.pth.tar")["dataset"]) / "val").glob("*/*.png"))
    result = check_agreement(model, exported, images)
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0


def test_agreement_check_fails_loudly_on_a_different_model(run_dir, exported):
    model, _, _ = model_from_checkpoint(load_checkpoint(run_dir / "model_best.pth.tar"))
    with torch.no_grad():
        model.classifier.weight.neg_()  # swaps the classes: the file no longer matches this model
    images = sorted((Path(load_checkpoint(run_dir / "model_best.pth.tar")["dataset"]) / "val").glob("*/*.png"))
    with pytest.raises(ImgclassError, match="disagree"):
        check_agreement(model, exported, images)


def test_classify_with_the_exported_model_needs_no_labels(run_dir, exported):
    dataset = Path(load_checkpoint(run_dir / "model_best.pth.tar")["dataset"])
    out = run_cli("classify", str(dataset / "val" / "blue"), "--model", str(exported))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(blue)") == 3
    out = run_cli("classify", str(dataset / "val" / "red" / "img0.png"), "--model", str(exported),
                  "--labels", str(run_dir / "labels.txt"), "--input_blob=input_0", "--output_blob=output_0")
    assert out.returncode == 0 and "(red)" in out.stdout, out.stderr


def test_eval_on_onnx_checkpoint_and_run_folder(run_dir, exported):
    dataset = Path(load_checkpoint(run_dir / "model_best.pth.tar")["dataset"])
    for model in (exported, run_dir / "model_best.pth.tar", run_dir):
        out = run_cli("eval", str(dataset), "--model", str(model), "--confusion", str(run_dir / "eval.png"))
        assert out.returncode == 0, out.stderr
        assert "top-1 100.00%" in out.stdout and "precision" in out.stdout
    assert (run_dir / "eval.png").is_file()


def test_jetson_onnx_export_spelling_and_no_softmax(run_dir, exported, tmp_path):
    out = run_python("-c", "import sys; from imgclass.cli import onnx_export_main; sys.exit(onnx_export_main())",
                     f"--model_dir={run_dir}", f"--output={tmp_path / 'logits.onnx'}", "--no-softmax")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "logits.onnx").is_file()


def test_export_errors_are_one_line(tmp_path):
    out = run_cli("export", "--model-dir", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "checkpoint not found" in out.stderr


def test_classify_takes_a_run_folder_and_points_a_checkpoint_to_export(run_dir, exported):
    image = Path(load_checkpoint(run_dir / "model_best.pth.tar")["dataset"]) / "val" / "red" / "img0.png"
    out = run_cli("classify", str(image), "--model", str(run_dir))  # the folder means its model.onnx
    assert out.returncode == 0 and "(red)" in out.stdout, out.stderr
    out = run_cli("classify", str(image), "--model", str(run_dir / "model_best.pth.tar"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert f"a PyTorch file, not ONNX; for a training checkpoint run: imgclass export --model-dir {run_dir}, " \
           f"then pass --model {run_dir / 'model.onnx'}" in out.stderr
