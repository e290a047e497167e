"""jetson_utils' image routines on numpy: the Python usage of jetson-inference's docs/aux-image.md
(allocation, copies, capsules, numpy, color conversion, resize, crop, normalize, overlay, drawing)
runs unchanged with jetson's results; Log, videoSource/videoOutput.GetOptions, the aliases'
--loop/--log-level, the train.py alias and a split-file ONNX through imageNet."""
import logging
import shutil
import sys

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jetson.utils
import jetson_utils
from imgclass.errors import ImgclassError
from jetson_utils import (Log, cudaAllocMapped, cudaConvertColor, cudaCrop, cudaDeviceSynchronize, cudaDrawCircle,
                          cudaDrawRect, cudaFromNumpy, cudaImage, cudaMemcpy, cudaNormalize, cudaOverlay, cudaToNumpy,
                          loadImage, saveImage, videoOutput, videoSource)

from conftest import run_python
from test_data import make_images
from test_train import make_dataset


@pytest.fixture
def photos(tmp_path, images_dir, monkeypatch):
    """aux-image.md's file names, as real photos, in the working directory."""
    for name, source in (("my_image.jpg", "black_bear.jpg"), ("my_image_a.jpg", "orange_0.jpg"),
                         ("my_image_b.jpg", "granny_smith_1.jpg")):
        shutil.copy(images_dir / source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.float32)


def test_allocation_and_copying(photos):
    img = cudaImage(width=1920, height=1080, format='rgb8')  # "Image Allocation"
    cudaDeviceSynchronize()
    assert (img.width, img.height, img.channels, img.format, img.shape) == (1920, 1080, 3, "rgb8", (1080, 1920, 3))
    assert img.mapped and img.ptr and not np.asarray(img).any()
    del img
    old = jetson.utils.cudaAllocMapped(width=1920, height=1080, format='rgb8')  # the older spelling
    assert old.shape == (1080, 1920, 3) and old.dtype == np.uint8

    img_a = loadImage("my_image.jpg")  # "Copying Images"
    img_b = cudaImage(like=img_a)
    cudaMemcpy(img_b, img_a)
    img_c = cudaMemcpy(img_a)
    assert (pixels(img_b) == pixels(img_a)).all() and (pixels(img_c) == pixels(img_a)).all()
    assert (img_b.width, img_b.height, img_b.format) == (img_a.width, img_a.height, img_a.format)
    img_a[0, 0] = (1, 2, 3)
    assert tuple(img_c[0, 0]) != (1, 2, 3)  # a copy, not a view
    with pytest.raises(ImgclassError, match="same size"):
        cudaMemcpy(cudaImage(4, 4, "rgb8"), img_a)


def test_capsule_members_and_indexing():
    img = cudaImage(8, 6, "rgba32f", timestamp=123)
    assert img.shape == (6, 8, 4) and img.format == "rgba32f" and img.timestamp == 123 and img.nbytes == 8 * 6 * 16
    assert "-- format:   rgba32f" in str(img) and "-- width:    8" in str(img)
    for y in range(img.height):  # "Accessing Image Data in Python"
        for x in range(img.width):
            img[y, x] = (x, y, x + y, 255)
            pixel = img[y, x]
            img[y, x] = pixel
    assert tuple(img[5, 7]) == (7, 5, 12, 255) and img[5, 7, 2] == 12
    assert tuple(img[5 * img.width + 7]) == (7, 5, 12, 255)  # jetson's flat index img[y*img.width+x]
    img[-1] = (9, 9, 9, 9)
    assert tuple(img[5, 7]) == (9, 9, 9, 9)
    assert cudaImage(2, 2, "bgra8")[..., :3].format == "bgr8"  # sliced channels keep their order
    assert cudaImage(2, 2, "bgr8").astype(np.float32).format == "bgr32f" and cudaImage(2, 2)[..., :1].format == "gray8"


def test_numpy_interfaces():
    cuda_img = cudaImage(320, 240, 'rgb32f')  # "Accessing as a Numpy Array"
    array = np.ones(cuda_img.shape, np.float32)
    total = np.add(cuda_img, array)
    assert type(total) is np.ndarray and total.shape == (240, 320, 3) and (total == 1).all()
    array = cudaToNumpy(cuda_img)  # "Converting to Numpy Arrays": the same memory
    array[0, 0] = 7
    assert type(array) is np.ndarray and tuple(cuda_img[0, 0]) == (7, 7, 7) and array.mean() > 0
    source = np.zeros((240, 320, 3), dtype=np.float32)  # "Converting from Numpy Arrays": a copy
    cuda_img = cudaFromNumpy(source)
    source[0, 0] = 5
    assert cuda_img.format == "rgb32f" and (np.asarray(cuda_img) == 0).all()
    assert cudaFromNumpy(np.zeros((4, 4, 3), np.uint8), isBGR=True).format == "bgr8"
    assert cudaFromNumpy(np.zeros((4, 5), np.uint8)).shape == (4, 5, 1)
    with pytest.raises(ImgclassError, match="not an image"):
        cudaFromNumpy(np.zeros((4, 4, 2), np.uint8))


def test_color_conversion(photos):
    imgInput = jetson_utils.loadImage('my_image.jpg', format='rgb8')
    imgOutput = jetson_utils.cudaAllocMapped(width=imgInput.width, height=imgInput.height, format='rgba32f')
    jetson_utils.cudaConvertColor(imgInput, imgOutput)
    assert imgOutput.format == "rgba32f" and (pixels(imgOutput)[..., :3] == pixels(imgInput)).all()
    assert (pixels(imgOutput)[..., 3] == 255).all()
    gray = cudaAllocMapped(width=imgInput.width, height=imgInput.height, format="gray8")
    cudaConvertColor(imgInput, gray)
    expected = pixels(imgInput) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert gray.shape[2] == 1 and np.abs(pixels(gray)[..., 0] - expected).max() <= 1
    bgr = cudaAllocMapped(width=imgInput.width, height=imgInput.height, format="bgr8")
    cudaConvertColor(imgInput, bgr)
    assert (pixels(bgr) == pixels(imgInput)[..., ::-1]).all()
    assert loadImage("my_image.jpg", format="rgba32f").format == "rgba32f"
    with pytest.raises(ImgclassError, match="YUV/Bayer"):
        cudaAllocMapped(width=4, height=4, format="nv12")


def test_resize_crop_normalize(photos):
    imgInput = jetson_utils.loadImage('my_image.jpg')  # "Resizing"
    imgOutput = jetson_utils.cudaAllocMapped(width=imgInput.width * 0.5, height=imgInput.height * 0.5,
                                             format=imgInput.format)
    jetson_utils.cudaResize(imgInput, imgOutput)
    assert (imgOutput.width, imgOutput.height) == (imgInput.width // 2, imgInput.height // 2)
    half = cv2.resize(np.asarray(imgInput), (imgOutput.width, imgOutput.height), interpolation=cv2.INTER_LINEAR)
    assert (np.asarray(imgOutput) == half).all()

    crop_factor = 0.5  # "Cropping"
    crop_border = ((1.0 - crop_factor) * 0.5 * imgInput.width, (1.0 - crop_factor) * 0.5 * imgInput.height)
    crop_roi = (crop_border[0], crop_border[1], imgInput.width - crop_border[0], imgInput.height - crop_border[1])
    imgOutput = jetson_utils.cudaAllocMapped(width=imgInput.width * crop_factor, height=imgInput.height * crop_factor,
                                             format=imgInput.format)
    jetson_utils.cudaCrop(imgInput, imgOutput, crop_roi)
    left, top = int(crop_border[0]), int(crop_border[1])
    assert (pixels(imgOutput) == pixels(imgInput)[top:top + imgOutput.height, left:left + imgOutput.width]).all()
    with pytest.raises(ImgclassError, match="invalid ROI"):
        cudaCrop(imgInput, imgOutput, (0, 0, imgInput.width + 1, 10))

    floats = loadImage('my_image.jpg', format="rgb32f")  # "Normalization", on a float image to see the values
    normalized = cudaAllocMapped(width=floats.width, height=floats.height, format=floats.format)
    jetson_utils.cudaNormalize(floats, (0, 255), normalized, (0, 1))
    assert np.allclose(pixels(normalized), pixels(floats) / 255, atol=1e-6)
    with pytest.raises(ImgclassError, match="rgb8 but output is rgb32f"):
        cudaNormalize(imgInput, (0, 255), normalized, (0, 1))


def test_overlay_side_by_side(photos):
    imgInputA = jetson_utils.loadImage('my_image_a.jpg')
    imgInputB = jetson_utils.loadImage('my_image_b.jpg')
    imgOutput = jetson_utils.cudaAllocMapped(width=imgInputA.width + imgInputB.width,
                                             height=max(imgInputA.height, imgInputB.height), format=imgInputA.format)
    jetson_utils.cudaOverlay(imgInputA, imgOutput, 0, 0)
    jetson_utils.cudaOverlay(imgInputB, imgOutput, imgInputA.width, 0)
    out = pixels(imgOutput)
    assert (out[:imgInputA.height, :imgInputA.width] == pixels(imgInputA)).all()
    assert (out[:imgInputB.height, imgInputA.width:] == pixels(imgInputB)).all()
    cudaOverlay(imgInputA, imgOutput, -10, imgOutput.height - 5)  # partly outside: the rest is dropped
    assert (pixels(imgOutput)[-5:, :20] == pixels(imgInputA)[:5, 10:30]).all()


def test_drawing_shapes(photos):
    input = jetson_utils.loadImage("my_image.jpg")
    before = pixels(input)
    jetson_utils.cudaDrawCircle(input, (50, 50), 25, (0, 255, 127, 200))
    jetson_utils.cudaDrawRect(input, (200, 25, 350, 250), (255, 127, 0, 200))
    jetson_utils.cudaDrawLine(input, (25, 150), (325, 15), (255, 0, 200, 200), 10)
    after, a = pixels(input), 200 / 255
    blend = lambda y, x, color: np.floor(before[y, x] * (1 - a) + np.array(color) * a)  # noqa: E731
    assert np.abs(after[50, 50] - blend(50, 50, (0, 255, 127))).max() <= 1  # circle center
    assert np.abs(after[240, 340] - blend(240, 340, (255, 127, 0))).max() <= 1  # inside the rectangle
    assert (after[80, 50] == before[80, 50]).all() and (after[400:] == before[400:]).all()  # outside every shape
    assert (after[150, 25] != before[150, 25]).any()  # the line's end
    output = cudaImage(like=input)
    cudaDrawCircle(input, (100, 100), 10, (255, 0, 0), output=output)
    assert (pixels(input) == after).all() and tuple(output[100, 100]) == (255, 0, 0)
    cudaDrawRect(output, (0, 0, 9, 9), None, line_color=(0, 0, 255), line_width=2)
    assert tuple(output[0, 5]) == (0, 0, 255) and tuple(output[5, 5]) == tuple(input[5, 5])
    saveImage("drawn.png", output)
    assert (pixels(loadImage("drawn.png")) == pixels(output)).all()


def test_an_error_in_a_script_is_one_line(tmp_path):
    script = tmp_path / "crop.py"
    script.write_text("import jetson_utils\nimg = jetson_utils.cudaAllocMapped(width=8, height=8, format='rgb8')\n"
                      "jetson_utils.cudaCrop(img, img, (0, 0, 20, 20))\n")
    out = run_python(script)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("imgclass: error: cudaCrop: invalid ROI") and len(out.stderr.splitlines()) == 1


@pytest.fixture
def log_level():
    yield
    Log.SetLevel("info")
    logging.getLogger("imgclass").setLevel(logging.NOTSET)


def test_log_levels(capsys, log_level):
    Log.SetLevel("warning")
    Log.Info("hidden")
    Log.Warning("shown")
    assert Log.GetLevel() == "warning" and logging.getLogger("imgclass").level == logging.WARNING
    out = capsys.readouterr()
    assert out.out == "" and out.err == "shown\n"
    Log.SetLevel("verbose")
    Log.Verbose("talks")
    Log.Debug("still hidden")
    assert capsys.readouterr().out == "talks\n"
    Log.SetLevel("silent")
    Log.Error("nothing")
    assert capsys.readouterr().err == ""
    with pytest.raises(ImgclassError, match="unknown; use one of silent, error"):
        Log.SetLevel("loud")
    assert "--log-level" in Log.Usage()


def test_video_options_and_loop(tmp_path, images_dir):
    source = videoSource(str(images_dir / "orange_0.jpg"), argv=["my-app.py", "--loop=2", "--input-flip=horizontal"])
    frames = []
    while source.IsStreaming():
        frames.append(source.Capture(format="rgba32f"))
    opts = source.GetOptions()
    source.Close()
    assert len(frames) == 3 and frames[0].format == "rgba32f" and frames[0].shape[2] == 4  # --loop=2: two more times
    assert opts["loop"] == 2 and opts["flipMethod"] == "horizontal" and opts["ioType"] == "input"
    assert opts["deviceType"] == "file" and opts["resource"]["protocol"] == "file"
    assert opts["resource"]["extension"] == "jpg" and (opts["width"], opts["height"]) == (frames[0].width, frames[0].height)
    output = videoOutput(str(tmp_path / "out.jpg"), argv=["my-app.py", "--headless"])
    output.Render(frames[0])
    opts = output.GetOptions()
    output.Close()
    assert opts["ioType"] == "output" and opts["resource"]["extension"] == "jpg" and opts["width"] == frames[0].width
    from imgclass.compat.video import _options  # jetson's URI fields of streams, without opening one
    assert _options("rtsp://user:pw@10.0.0.5:8554/cam", "input", None)["resource"]["location"] == "10.0.0.5"
    assert _options("rtsp://10.0.0.5:8554/cam", "input", "h264")["resource"]["port"] == 8554
    assert _options("/dev/video1", "input", None)["deviceType"] == "v4l2"


def test_aliases_take_loop_and_log_level(images_dir, classifier, tmp_path):
    out = run_python("-c", "import sys; from imgclass.cli import imagenet_main; sys.exit(imagenet_main())",
                     str(images_dir / "orange_0.jpg"), "--network=efficientnet-lite0", "--loop=1", "--log-level=error",
                     "--headless")
    assert out.returncode == 0, out.stderr
    assert "(orange)" in out.stdout
    from imgclass.cli.classify import jetson_parser
    assert jetson_parser().parse_args(["in.mp4", "--loop", "3"]).input_loop == 3
    out = run_python("-c", "import sys; from imgclass.cli import onnx_export_main; sys.exit(onnx_export_main())",
                     "--model-dir", str(tmp_path), "--log-level=loud")
    assert out.returncode == 2 and "invalid choice: 'loud'" in out.stderr and len(out.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("tiny"))


def test_train_py_alias_takes_jetson_flags(tiny_dataset, tmp_path):
    train_py = "import sys; from imgclass.cli import train_main; sys.exit(train_main())"
    out = run_python("-c", train_py, str(tiny_dataset), f"--model_dir={tmp_path / 'run'}", "--arch=efficientnet-lite0",
                     "--epochs=0", "-b", "4", "--lr=0.001", "--momentum=0.9", "-p", "10", "--workers=1",
                     "--resolution=64", "--dataset-type=folder", "--gpu=0", "--device=cpu")
    assert out.returncode == 0, out.stderr
    assert "--momentum 0.9 is not used" in out.stderr and "AdamW" in out.stderr
    assert (tmp_path / "run" / "model_best.pth.tar").is_file() and "best val accuracy" in out.stdout
    assert out.stdout.strip().endswith(f"next: onnx_export.py --model-dir={tmp_path / 'run'}")  # jetson's next step
    out = run_python("-c", train_py, str(tiny_dataset), "--dataset-type=voc")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "--dataset-type voc" in out.stderr


def split_file_classifier(folder) -> None:
    """A jetson-style ONNX (input_0 -> output_0, no imgclass metadata) whose weights live in model.onnx.data,
    as onnx_export.py runs with newer PyTorch write them: the mean color, red vs blue."""
    weights = numpy_helper.from_array(np.array([[1, -1], [0, 0], [-1, 1]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_0"], ["mean"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["output_0"])],
        "colors", [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 2])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    (folder / "labels.txt").write_text("red\nblue\n")


def test_split_file_onnx_through_image_net(tmp_path):
    from jetson_inference import imageNet

    split_file_classifier(tmp_path)
    assert (tmp_path / "model.onnx.data").stat().st_size == 24
    make_images(tmp_path / "img", (30, 30, 220), 1, seed=0)
    net = imageNet(model=str(tmp_path / "model.onnx"), labels=str(tmp_path / "labels.txt"),
                   input_blob="input_0", output_blob="output_0")
    class_idx, confidence = net.Classify(loadImage(str(tmp_path / "img" / "img0.png")))
    assert net.GetClassDesc(class_idx) == "blue" and confidence > 0.5
    bgr = cudaFromNumpy(np.asarray(loadImage(str(tmp_path / "img" / "img0.png")))[..., ::-1], isBGR=True)
    assert net.Classify(bgr)[0] == class_idx  # the format is honoured: bgr8 is turned to RGB first
    argv = [sys.argv[0], f"--model={tmp_path / 'model.onnx'}", f"--labels={tmp_path / 'labels.txt'}",
            "--input_blob=input_0", "--output_blob=output_0"]
    assert imageNet(argv=argv).GetNumClasses() == 2
