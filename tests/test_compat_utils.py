"""jetson_utils' image routines on numpy: the Python usage of jetson-inference's docs/aux-image.md
(allocation, copies, capsules, numpy, color conversion, resize, crop, normalize, overlay, drawing)
runs unchanged with jetson's results; Log, videoSource/videoOutput.GetOptions, the aliases'
--loop/--log-level, the train.py alias, a split-file ONNX through imageNet, jetson's legacy
loadImageRGBA/saveImageRGBA (python/examples/cuda-from-numpy.py as published) and
__cuda_array_interface__."""
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
                          loadImage, loadImageRGBA, saveImage, saveImageRGBA, videoOutput, videoSource)

from conftest import run_python
from imgclass.runtime.select import resolve_device
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


# jetson-utils' python/examples/cuda-from-numpy.py as published (commit fae4b42)
CUDA_FROM_NUMPY = r'''#!/usr/bin/env python3
#
# Copyright (c) 2019, NVIDIA CORPORATION. All rights reserved.
#
# Permission is hereby granted, free of charge, to any person obtaining a
# copy of this software and associated documentation files (the "Software"),
# to deal in the Software without restriction, including without limitation
# the rights to use, copy, modify, merge, publish, distribute, sublicense,
# and/or sell copies of the Software, and to permit persons to whom the
# Software is furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in
# all copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.  IN NO EVENT SHALL
# THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
# FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
# DEALINGS IN THE SOFTWARE.
#

import argparse
import numpy as np

from jetson_utils import cudaFromNumpy, saveImageRGBA

# parse the command line
parser = argparse.ArgumentParser(description='Copy a test image from numpy to CUDA and save it to disk')

parser.add_argument("--width", type=int, default=512, help="width of the array (in pixels)")
parser.add_argument("--height", type=int, default=256, help="height of the array (in pixels)")
parser.add_argument("--depth", type=int, default=4, help="number of color channels in the array (1, 3, or 4)")
parser.add_argument("--dtype", type=str, default="float32", help="numpy data type: " + " | ".join(sorted({str(key) for key in np.sctypeDict.keys()})))
parser.add_argument("--filename", type=str, default="images/test/cuda-from-numpy.jpg", help="filename of the output test image")

opt = parser.parse_args()


# create numpy ndarray
array = np.ndarray(shape=(opt.height, opt.width, opt.depth), dtype=np.dtype(opt.dtype))

print('numpy array shape:  ' + str(array.shape))
print('numpy array dtype:  ' + str(array.dtype))

# fill array with test colors
for y in range(opt.height):
	for x in range(opt.width):
		px = [ 0, float(x) / float(opt.width) * 255, float(y) / float(opt.height) * 255, 255]
		
		if opt.depth == 1:
			px = [ px[0] * 0.2989 + px[1] * 0.5870 + px[2] * 0.1140 ];
		elif opt.depth == 3:
			px.pop()

		array[y, x] = px

# copy to CUDA memory
cuda_mem = cudaFromNumpy(array)
print(cuda_mem)

# save as image
saveImageRGBA(opt.filename, cuda_mem, opt.width, opt.height)
print("saved {:d}x{:d} test image to '{:s}'".format(opt.width, opt.height, opt.filename))

'''


def test_cuda_from_numpy_runs_unchanged(tmp_path):
    script = tmp_path / "cuda-from-numpy.py"
    script.write_text(CUDA_FROM_NUMPY)
    out = run_python(script, "--width=64", "--height=32", f"--filename={tmp_path / 'test.png'}")
    assert out.returncode == 0, out.stderr
    assert "-- format:   rgba32f" in out.stdout and out.stdout.strip().endswith(f"saved 64x32 test image to "
                                                                               f"'{tmp_path / 'test.png'}'")
    saved = pixels(loadImage(str(tmp_path / "test.png")))
    assert saved.shape == (32, 64, 3) and (saved[..., 0] == 0).all()  # red 0, green along x, blue along y
    assert saved[0, 32, 1] == int(32 / 64 * 255) and saved[16, 0, 2] == int(16 / 32 * 255)


def test_legacy_rgba_images_round_trip(tmp_path, images_dir):
    img, width, height = loadImageRGBA(str(images_dir / "orange_0.jpg"), timestamp=7)
    assert img.format == "rgba32f" and (width, height) == (img.width, img.height) and img.timestamp == 7
    assert (pixels(img)[..., :3] == pixels(loadImage(str(images_dir / "orange_0.jpg")))).all()
    saveImageRGBA(str(tmp_path / "a.png"), img, width, height)
    assert (pixels(loadImageRGBA(str(tmp_path / "a.png"))[0]) == pixels(img)).all()
    saveImageRGBA(str(tmp_path / "b.png"), np.divide(img, 255).astype(np.float32), max_pixel=1.0)  # 0..1 pixels
    assert np.abs(pixels(loadImageRGBA(str(tmp_path / "b.png"))[0]) - pixels(img)).max() <= 1
    memory = cudaAllocMapped(width * height * 16)  # jetson's cudaMemory: float4 pixels, sized by width and height
    memory.view(np.float32)[:] = np.asarray(img).reshape(-1)
    saveImageRGBA(str(tmp_path / "c.png"), memory, width, height)
    assert (pixels(loadImageRGBA(str(tmp_path / "c.png"))[0]) == pixels(img)).all()
    with pytest.raises(ImgclassError, match="not a 4x4 float4 RGBA image"):
        saveImageRGBA(str(tmp_path / "d.png"), memory, 4, 4)


@pytest.mark.skipif(resolve_device("auto") == "cuda", reason="on a CUDA device the image maps into GPU memory")
def test_cuda_array_interface_says_why_it_is_absent():
    img = cudaAllocMapped(width=4, height=2, format="rgb32f")  # python/examples/cuda-array-interface.py
    assert not hasattr(img, "__cuda_array_interface__")  # CuPy, Numba and torch take it as a host array
    with pytest.raises(AttributeError, match="no CUDA device, and imgclass keeps images in host memory") as e:
        img.__cuda_array_interface__
    assert isinstance(e.value, ImgclassError)  # an escaped error is one line in a script


@pytest.mark.skipif(resolve_device("auto") != "cuda", reason="needs a CUDA device")
def test_cuda_array_interface_shares_the_memory_with_the_gpu():
    import torch

    img = cudaAllocMapped(width=4, height=2, format="rgb32f")
    on_gpu = torch.as_tensor(img, device="cuda")  # read through __cuda_array_interface__, no copy
    on_gpu += 1
    torch.cuda.synchronize()
    assert on_gpu.is_cuda and (pixels(img) == 1).all() and img.__cuda_array_interface__["typestr"] == "<f4"
