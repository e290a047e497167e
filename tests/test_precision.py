"""Reduced precision on the CPU (``--precision bf16|int8|auto``): accuracy on real photos, the
calibration, the caches, int8 export, and the preprocessing shortcuts that let end to end keep up."""
import io
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

import imgclass
import imgclass.runtime.precision as precision
from imgclass.errors import ImgclassError
import imgclass.media.images as images_module
from imgclass.media.decode import decode
from imgclass.media.images import open_image
from imgclass.media.jpeg import eighth_scale_scans
from imgclass.preprocess import _RESAMPLE, Preprocess
from imgclass.models.onnx import META_DATASET
from imgclass.runtime.openvino import OpenVinoEngine, cpu_precisions
from imgclass.export.run import export_run

from conftest import data_dir, run_cli
from test_classify import ground_truth
from test_runtime import tiny_onnx


def needs(p: str) -> None:
    if p not in cpu_precisions():
        pytest.skip(f"this CPU has no native {p} (OpenVINO finds: {', '.join(cpu_precisions())})")


def one_line_error(out) -> str:
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclass: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def calibration() -> str:
    """32 photos of another set than the ones checked (hymenoptera's train images), as a glob."""
    return str(data_dir("hymenoptera") / "train" / "*" / "[0-3]*.jpg")


@pytest.mark.parametrize("p", ["bf16", "int8"])
def test_reduced_precision_gets_every_ground_truth_photo(classifier, images_dir, calibration, p):
    needs(p)
    truth = ground_truth(images_dir)
    net = imgclass.Classifier(device="cpu", precision=p, calibration=calibration)
    assert net.precision == p and isinstance(net.engine, OpenVinoEngine)
    ours = [preds[0] for _, preds, _ in net.classify_files([path for path, _ in truth])]
    assert [pred.index in classes for pred, (_, classes) in zip(ours, truth)] == [True] * 25
    # probabilities, not quantized steps: int8's head stays in float, so confidences stay near fp32's
    fp32 = [preds[0] for _, preds, _ in classifier.classify_files([path for path, _ in truth])]
    assert max(abs(a.confidence - b.confidence) for a, b in zip(ours, fp32)) < 0.15
    assert len({round(pred.confidence, 6) for pred in ours}) > 20


def test_the_int8_model_is_cached_by_its_calibration(calibration, private_cache, monkeypatch):
    needs("int8")
    imgclass.Classifier(device="cpu", precision="int8", calibration=calibration)  # built by the test above, or now
    assert list((private_cache / "engines").glob("efficientnet-lite0-*.int8.onnx"))
    with monkeypatch.context() as patch:
        patch.setattr(precision, "calibrated_int8", lambda *a: pytest.fail("quantized again"))
        assert imgclass.Classifier(device="cpu", precision="int8", calibration=calibration).precision == "int8"


def test_int8_without_calibration_images_is_one_line(images_dir):
    line = one_line_error(run_cli("classify", str(images_dir / "banana_0.jpg"), "--precision", "int8"))
    assert line.endswith(f": {precision.NO_CALIBRATION}")


def test_reduced_precision_is_for_the_cpu():
    with pytest.raises(ImgclassError, match="--precision int8 is for the CPU"):
        imgclass.Classifier(device="cuda", precision="int8")
    with pytest.raises(ImgclassError, match="unknown precision 'fp8'"):
        imgclass.Classifier(device="cpu", precision="fp8")


@pytest.mark.parametrize("batch", ["N", 1])  # a dynamic batch, and jetson's static batch of one
def test_openvino_runs_any_batch_on_a_few_compiled_shapes(tmp_path, monkeypatch, batch):
    needs("bf16")
    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path / "cache"))
    model = tiny_onnx(tmp_path / "model.onnx", [[5, -5], [0, 0], [-5, 5]], batch=batch)
    engine = OpenVinoEngine(model.read_bytes(), "bf16", "model.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (17, 3, 8, 8)).astype(np.float32)
    alone = np.concatenate([engine.run(x[i:i + 1]) for i in range(len(x))])
    sizes = (2, 3, 5, 8, 17)
    for n in sizes:
        np.testing.assert_allclose(engine.run(x[:n]), alone[:n], atol=1e-2)
    # each request takes a power of two of images (the last padded): fewer shapes than batch sizes
    compiled = [int(p.name.split(".")[-2].removeprefix("throughput")) for p in (tmp_path / "cache").rglob("*.throughput*.blob")]
    assert compiled and len(compiled) < len(sizes) and all(b & (b - 1) == 0 for b in compiled), compiled


def test_a_damaged_compiled_shape_is_compiled_again_not_loaded(tmp_path, monkeypatch, capsys):
    needs("bf16")
    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path / "cache"))
    model = tiny_onnx(tmp_path / "model.onnx", [[5, -5], [0, 0], [-5, 5]]).read_bytes()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    expected = OpenVinoEngine(model, "bf16", "model.onnx").run(x)
    [blob] = (tmp_path / "cache").rglob("*.latency1.blob")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: OpenVINO's own cache would load it as it is
    blob.write_bytes(bytes(data))
    np.testing.assert_allclose(OpenVinoEngine(model, "bf16", "model.onnx").run(x), expected, atol=1e-6)
    assert "damaged cache entry" in capsys.readouterr().err


@pytest.fixture
def tiny(tmp_path):
    """A tiny red/blue model and a folder of red and blue photos for it."""
    model, labels, photos = tmp_path / "model.onnx", tmp_path / "labels.txt", tmp_path / "photos"
    tiny_onnx(model, [[5, -5], [0, 0], [-5, 5]])
    labels.write_text("red\nblue\n")
    for i, colour in enumerate([(250, 10, 10), (200, 30, 40), (10, 10, 250), (40, 30, 200)]):
        imgclass.save_image(photos / f"{i}.png", np.full((16, 16, 3), colour, np.uint8))
    return model, labels, photos


def test_auto_measures_once_and_caches_its_choice(tiny, capsys, monkeypatch):
    model, labels, photos = tiny
    net = imgclass.Classifier(model=model, labels=labels, device="cpu", precision="auto", calibration=photos)
    assert net.precision in cpu_precisions()
    err = capsys.readouterr().err
    assert "--precision auto: timing fp32" in err and "on 4 calibration images" in err
    assert f"--precision auto chose {net.precision} (" in err
    with monkeypatch.context() as patch:
        patch.setattr(precision, "choose", lambda *a: pytest.fail("measured again"))
        again = imgclass.Classifier(model=model, labels=labels, device="cpu", precision="auto", calibration=photos)
    assert again.precision == net.precision
    err = capsys.readouterr().err
    assert "timing" not in err and f"--precision auto chose {net.precision} (" in err
    assert [p[0].label for _, p, _ in again.classify_files(sorted(photos.iterdir()))] == ["red", "red", "blue", "blue"]


def test_auto_keeps_fp32_where_a_precision_loses_top1():
    runs = {"fp32": lambda x: np.eye(3, dtype=np.float32)[x[:, 0, 0, 0].astype(int)],
            "int8": lambda x: np.eye(3, dtype=np.float32)[np.zeros(len(x), int)]}  # fast, and always class 0
    images = np.zeros((8, 3, 4, 4), np.float32)
    images[:, 0, 0, 0] = [0, 1, 2, 0, 1, 2, 0, 1]
    choice, report = precision.choose(runs, images, images[:, 0, 0, 0].astype(int), images)
    assert choice == "fp32" and report["fp32"]["top1"] == 1 and report["int8"]["top1"] == 3 / 8
    # without labels, fp32's probabilities stand in for them: a sure class lost costs a whole image
    assert precision.choose(runs, images, None, images)[1]["int8"]["top1"] == 3 / 8


def test_export_int8_writes_a_quantized_model_checked_on_the_val_images(run_dir):
    needs("int8")
    out = run_cli("export", str(run_dir), "--precision", "int8")
    assert out.returncode == 0, out.stderr
    int8 = run_dir / "model-int8.onnx"
    assert f"wrote {int8}, calibrated on 16 images; top-1 on 6 real images: int8 100.0%, fp32 100.0%" in out.stdout
    proto = onnx.load(int8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["imgclass.labels"]) == ["blue", "red"]
    dataset = Path(meta[META_DATASET])
    out = run_cli("classify", str(dataset / "val" / "red"), "--model", str(int8), "--precision", "int8")
    assert out.returncode == 0 and out.stdout.count("(red)") == 3, out.stderr


def test_export_bf16_is_a_runtime_setting(run_dir):
    line = one_line_error(run_cli("export", str(run_dir), "--precision", "bf16"))
    assert "export fp32 (leave --precision out) and run it with imgclass classify --model MODEL --precision bf16" in line
    assert not (run_dir / "model-bf16.onnx").exists()


def test_a_trained_model_calibrates_on_its_train_images_and_auto_checks_on_its_val_images(run_dir, capsys):
    needs("int8")
    export_run(run_dir)
    meta = {p.key: p.value for p in onnx.load(run_dir / "model.onnx").metadata_props}
    dataset = Path(meta[META_DATASET])
    assert (dataset / "train").is_dir()
    net = imgclass.Classifier(model=run_dir, device="cpu", precision="int8")  # no --calibration: the run's own
    assert net.precision == "int8"
    assert [p[0].label for _, p, _ in net.classify_files(sorted((dataset / "val" / "blue").iterdir()))] == ["blue"] * 3
    capsys.readouterr()
    imgclass.Classifier(model=run_dir, device="cpu", precision="auto")
    assert "comparing their top-1 on 6 labeled val images" in capsys.readouterr().err


def test_the_crop_resizes_only_what_it_keeps(images_dir):
    """The boxed resize gives the pixels of resizing the whole frame and cropping, within 2 levels."""
    for preprocess in (Preprocess(size=224), Preprocess(size=64, crop_pct=0.5, interpolation="bilinear")):
        for path in sorted(images_dir.glob("*.jpg"))[:6]:
            image = open_image(path, min_size=preprocess.decode_size)
            w, h = preprocess.resized_size(*image.size)
            left, top = (w - preprocess.size) // 2, (h - preprocess.size) // 2
            whole = image.resize((w, h), _RESAMPLE[preprocess.interpolation])
            reference = np.asarray(whole.crop((left, top, left + preprocess.size, top + preprocess.size)), int)
            assert np.abs(preprocess.resize_and_crop(image) - reference).max() <= 2
    small = Image.new("RGB", (30, 20), (1, 2, 3))  # smaller than the input: upscaled, still the crop
    assert Preprocess(size=64).resize_and_crop(small).shape == (64, 64, 3)


def progressive_jpeg(pixels: np.ndarray, sampling: int | None = None, restarts: int = 0) -> bytes:
    """``pixels`` (HxWx3 RGB, or HxW gray) as a progressive JPEG with libjpeg's scan script (OpenCV:
    Pillow's encoder fails on some progressive 4:4:4 images)."""
    options = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, restarts]
    if sampling is not None:
        options += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    return cv2.imencode(".jpg", pixels[..., ::-1] if pixels.ndim == 3 else pixels, options)[1].tobytes()


def eighth_scale(data: bytes, k: int = 8) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image.width // k, image.height // k))
    return np.asarray(image)


def test_a_progressive_jpeg_at_eighth_scale_skips_the_scans_that_scale_ignores(images_dir, monkeypatch):
    """Every subsampling, gray, restart markers: fewer bytes, the very same pixels at 1/8 (not at 1/4,
    where the dropped coefficients count); a JPEG it cannot apply to is left to the decoder."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    pixels = np.clip(np.stack([x * 0.4, y * 0.5, (x + y) % 256], -1) + rng.normal(0, 30, (480, 640, 3)), 0, 255)
    pixels = pixels.astype(np.uint8)
    cases = [progressive_jpeg(pixels, s) for s in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
                                                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                                                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)]
    cases += [progressive_jpeg(pixels[..., 1]), progressive_jpeg(pixels, restarts=3)]
    for data in cases:
        lean = eighth_scale_scans(data)
        assert len(lean) < len(data) / 2
        assert np.array_equal(eighth_scale(lean), eighth_scale(data))
        assert not np.array_equal(eighth_scale(lean, 4), eighth_scale(data, 4))
    assert eighth_scale_scans(cv2.imencode(".jpg", pixels)[1].tobytes()) is None  # baseline: nothing to skip
    assert eighth_scale_scans(cases[0][:len(cases[0]) // 2]) is None  # truncated: the decoder says so
    assert eighth_scale_scans(b"GIF89a") is None
    # through the one decode: a 9.4 MP progressive photo gets the pixels it got with every scan
    grass, lean_sizes = images_dir / "grass.jpg", []
    monkeypatch.setattr(images_module, "eighth_scale_scans",
                        lambda data: lean_sizes.append(len(data)) or eighth_scale_scans(data))
    fast = decode(grass, Preprocess())
    assert lean_sizes == [grass.stat().st_size]
    monkeypatch.setattr(images_module, "eighth_scale_scans", lambda data: None)
    assert np.array_equal(decode(grass, Preprocess()), fast)


def test_normalize_is_the_formula_in_one_pass():
    p = Preprocess(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channel_order="bgr")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), np.uint8)
    want = (pixels[..., ::-1] / 255 - np.array(p.mean)) / np.array(p.std)
    got = p.normalize(pixels)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"] and got.shape == (2, 3, 5, 7)
    assert np.allclose(got, np.moveaxis(want, -1, -3), atol=1e-5)
    assert np.array_equal(p.normalize(pixels[0]), got[0])
