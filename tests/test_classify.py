"""Classifying still images: accuracy on real photos, the CLI, its outputs and its errors."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgclass
from imgclass.errors import ImgclassError

from conftest import EXAMPLES, run_cli, run_python


def ground_truth(images_dir):
    rows = [l.split("\t") for l in (images_dir / "ground_truth.tsv").read_text().splitlines()[1:] if l.strip()]
    return [(images_dir / f, {int(c) for c in classes.split(",")}) for f, classes, *_ in rows]


def test_default_network_on_the_ground_truth_photos(classifier, images_dir):
    truth = ground_truth(images_dir)
    assert len(truth) == 25
    results = list(classifier.classify_files([p for p, _ in truth], topk=5))
    top1 = sum(preds[0].index in classes for (_, classes), (_, preds, _) in zip(truth, results))
    top5 = sum(any(p.index in classes for p in preds) for (_, classes), (_, preds, _) in zip(truth, results))
    assert top1 >= 24, f"top-1 {top1}/25"
    assert top5 == 25, f"top-5 {top5}/25"


def test_classify_batch_matches_single_and_file_paths(classifier):
    img = imgclass.load_image(EXAMPLES / "orange.jpg")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    single = classifier.classify(img, topk=3)
    assert single[0].label == "orange" and single[0].index == 950 and 0.5 < single[0].confidence <= 1
    assert [p.confidence for p in single] == sorted((p.confidence for p in single), reverse=True)
    batch = classifier.classify_batch([img, img[:, ::-1]], topk=3)
    assert [p.index for p in batch[0]] == [p.index for p in single]
    assert np.isclose(batch[0][0].confidence, single[0].confidence, atol=1e-5)
    assert classifier.classify(img, topk=5, threshold=0.5) == single[:1]


def test_cli_prints_jetson_lines_and_json(images_dir):
    out = run_cli("classify", str(images_dir / "orange_0.jpg"), "--topk", "2")
    assert out.returncode == 0, out.stderr
    assert "% class #950 (orange)" in out.stdout and out.stdout.count("class #") == 2
    out = run_cli("classify", str(images_dir / "orange_*.jpg"), "--json", "--topk", "3")
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == ["orange_0.jpg", "orange_1.jpg"]
    assert all(len(r["predictions"]) == 3 and r["predictions"][0]["label"] == "orange" for r in rows)
    assert set(rows[0]["predictions"][0]) == {"index", "label", "confidence"}


def test_imagenet_alias_takes_jetson_spellings(tmp_path):
    out = run_python(Path(sys.executable).parent / "imagenet", "--topK=2",
                  "--network=efficientnet-lite0", "--headless", str(EXAMPLES / "banana.jpg"), str(tmp_path / "out.jpg"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("imagenet: ") and "(banana)" in out.stdout
    assert Image.open(tmp_path / "out.jpg").size == Image.open(EXAMPLES / "banana.jpg").size


def test_outputs_to_pattern_and_directory_carry_the_overlay(images_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ["img10.jpg", "img2.jpg"]:
        shutil.copy(images_dir / "orange_0.jpg", src / name)
    assert run_cli("classify", str(src), str(tmp_path / "out_%03i.jpg")).returncode == 0
    assert sorted(p.name for p in tmp_path.glob("out_*.jpg")) == ["out_000.jpg", "out_001.jpg"]
    assert run_cli("classify", str(src / "*.jpg"), str(tmp_path / "dir") + "/").returncode == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["img10.jpg", "img2.jpg"]  # the inputs' names
    original = np.asarray(Image.open(images_dir / "orange_0.jpg"), dtype=np.int16)
    annotated = np.asarray(Image.open(tmp_path / "dir" / "img2.jpg"), dtype=np.int16)
    h, w = original.shape[:2]
    assert np.abs(annotated[: h // 10, : w // 4] - original[: h // 10, : w // 4]).mean() > 20  # the box is there
    assert np.abs(annotated[h // 2:, w // 2:] - original[h // 2:, w // 2:]).mean() < 3      # the rest is untouched


def test_folder_run_skips_bad_files_and_finishes(images_dir, tmp_path):
    shutil.copy(images_dir / "orange_0.jpg", tmp_path / "1.jpg")
    shutil.copy(images_dir / "banana_0.jpg", tmp_path / "4.jpg")
    data = (images_dir / "cat_0.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (tmp_path / "3.jpg").write_text("not an image at all")
    out = run_cli("classify", str(tmp_path), "--json")
    assert out.returncode == 1
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert "predictions" in rows[0] and "predictions" in rows[3]
    assert "truncated" in rows[1]["error"] and "not an image" in rows[2]["error"]
    assert "2 of 4 images classified" in out.stderr or "2 skipped" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["missing.jpg"], "missing.jpg: no such file or directory"),
    (["EMPTY"], "directory holds no images"),
    (["nothing-*.jpg"], "no file matches this pattern"),
    (["ONE", "--network", "nonet"], "unknown network 'nonet'"),
    (["ONE", "--network", "googlenet"], "no weights for 'googlenet'"),
    (["ONE", "--labels", "LABELS3"], "labels list 3 classes but the model outputs 1000"),
    (["ONE", "--labels", "missing.txt"], "labels file not found"),
    (["ONE", "--model", "BADONNX"], "not a valid ONNX model"),
    (["ONE", "--topk"], "expected one argument"),
    (["ONE", "--topk", "0"], "argument --topk: 0 classes: give 1 or more"),
    (["ONE", "--topk=-3"], "argument --topk: -3 classes: give 1 or more"),
    (["ONE", "--threshold", "5"], "argument --threshold: 5 is outside 0..1"),
    (["ONE", "--threshold", "-0.1"], "argument --threshold: -0.1 is outside 0..1"),
    (["ONE", "OUT.xyz"], "unknown image type"),
    (["DIR", "single.jpg"], "one output file for 2 input images"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "DIR").mkdir()
    for name in ["a.jpg", "b.jpg"]:
        shutil.copy(EXAMPLES / "orange.jpg", tmp_path / "DIR" / name)
    (tmp_path / "LABELS3").write_text("a\nb\nc\n")
    (tmp_path / "BADONNX").write_bytes(b"\x08garbage")
    names = {"ONE": str(EXAMPLES / "orange.jpg")}
    out = run_cli("classify", *[names.get(a, a) for a in args], cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2


def test_corrupt_image_api_error():
    with pytest.raises(ImgclassError, match="not found"):
        imgclass.load_image("/nonexistent.jpg")
