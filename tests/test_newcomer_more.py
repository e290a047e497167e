"""More of what surprised a newcomer: the README's venv, a dataset folder classified with its own
model (its accuracy), a one-class dataset, --precision auto's explanation, an int8 model reported
as fp32, `imgclass models` without sizes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx

import imgclass
from imgclass.export.run import export_run
from imgclass.models.onnx import META_DATASET
from imgclass.runtime.precision import checking, describe
from imgclass.runtime.quantize import quantize_int8
from conftest import ROOT, run_cli
from test_data import COLOURS, make_images
from test_readme import bash_blocks


def test_the_readme_activates_the_venv_right_after_the_install():
    blocks = bash_blocks((ROOT / "README.md").read_text())
    assert ".venv/bin/pip install" in blocks[0] and blocks[1].strip() == "source .venv/bin/activate"
    # after it, bare commands only: a `.venv/bin/...` later would mean the reader's venv is not active
    assert not any(".venv/bin/" in b for b in blocks[2:] if "python3 -m venv" not in b)


def exported(run_dir: Path) -> Path:
    """``run_dir`` with its model.onnx (the fixture's run is trained by the library, which leaves export to the CLI)."""
    if not (run_dir / "model.onnx").is_file():
        export_run(run_dir)
    return run_dir


def dataset_of(run_dir: Path) -> Path:
    meta = {p.key: p.value for p in onnx.load(run_dir / "model.onnx").metadata_props}
    return Path(meta[META_DATASET])


def test_classifying_a_dataset_folder_with_its_model_prints_top1(run_dir, tmp_path):
    model = exported(run_dir)
    val = Path(shutil.copytree(dataset_of(model) / "val", tmp_path / "val"))
    shutil.copy(next((val / "red").iterdir()), val / "blue" / "really-red.png")  # a wrong label: one miss
    make_images(val / "unsorted", COLOURS["red"], 1, seed=5)  # no class folder: not counted
    out = run_cli("classify", str(val), "--model", str(model))
    assert out.returncode == 0, out.stderr
    assert "; top-1 85.7% on 7 images in class folders" in out.stderr.splitlines()[-1]


def test_a_folder_of_photos_with_a_registry_network_prints_no_accuracy():
    out = run_cli("classify", str(ROOT / "examples" / "images"))
    assert out.returncode == 0 and "top-1" not in out.stderr, out.stderr


def test_a_one_class_dataset_is_one_error_line_before_training(tmp_path):
    for split in ("train", "val"):
        make_images(tmp_path / "data" / split / "red", COLOURS["red"], 4, seed=0)
    (tmp_path / "data" / "labels.txt").write_text("red\n")
    out = run_cli("train", str(tmp_path / "data"), "--model-dir", str(tmp_path / "run"), "--epochs", "1")
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr.strip() == (f"imgclass: error: {tmp_path / 'data' / 'labels.txt'}: lists 1 class(es); a classifier "
                                  "needs at least 2: list 2 or more classes, each with a folder of images")
    assert not (tmp_path / "run" / "checkpoint.pth.tar").exists()


REPORT = {"fp32": {"images_per_s": 218.0, "top1": 0.98, "agreement": 1.0},
          "bf16": {"images_per_s": 412.0, "top1": 0.979, "agreement": 0.99},
          "int8": {"images_per_s": 541.0, "top1": 0.98, "agreement": 0.96}}


def test_auto_says_what_it_chose_and_why_in_words():
    labeled = {**REPORT, "check": "153 labeled val images", "labeled": True}
    assert describe("int8", labeled) == ("int8 (541 images/s against fp32's 218; top-1 98.0% against fp32's 98.0% "
                                         "on 153 labeled val images)")
    unlabeled = {**REPORT, "check": "200 calibration images", "labeled": False}
    assert describe("bf16", unlabeled) == ("bf16 (412 images/s against fp32's 218; it gives fp32's top class on 99% "
                                           "of 200 calibration images)")
    none = {p: {**r, "top1": None, "agreement": None} for p, r in REPORT.items()}
    none.update(check=None, labeled=False, skipped="int8 not tried: no calibration images (--calibration FOLDER)")
    assert describe("bf16", none) == ("bf16 (412 images/s against fp32's 218; no images to check accuracy on, so only "
                                      "bf16 (a rounding-level change) could be chosen; int8 not tried: no calibration "
                                      "images (--calibration FOLDER))")
    assert describe("fp32", labeled) == "fp32 (218 images/s; no other precision was both faster and as accurate)"
    assert checking(0, "calibration images", None).startswith("no images to check accuracy on")
    assert checking(6, "labeled val images", [0] * 6) == "comparing their top-1 on 6 labeled val images"
    assert "probabilities as labels" not in checking(4, "calibration images", None)


def test_an_int8_model_is_reported_as_int8_without_asking(run_dir, tmp_path):
    model = exported(run_dir)
    calibration = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    int8 = tmp_path / "model-int8.onnx"
    int8.write_bytes(quantize_int8((model / "model.onnx").read_bytes(), calibration))
    net = imgclass.Classifier(model=int8, device="cpu")
    assert net.precision == "int8" and "ONNX Runtime int8 on CPU" in repr(net)
    out = run_cli("classify", str(dataset_of(model) / "val"), "--model", str(int8))
    assert out.returncode == 0, out.stderr
    assert re.search(r"images classified in .* \(int8\)", out.stderr), out.stderr


def test_models_lists_each_networks_size():
    out = run_cli("models")
    header, lite0 = out.stdout.splitlines()[:2]
    assert "params" in header and re.match(r"efficientnet-lite0 +yes +224 +4\.7M +75\.5", lite0), out.stdout
    rows = [json.loads(line) for line in run_cli("models", "--json").stdout.splitlines()]
    assert all(r["params_millions"] > 0 for r in rows)
