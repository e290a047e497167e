"""The jetson-inference / jetson-utils shims: the tutorial's scripts run unchanged, jetson's default
network (googlenet, no weights here) and a missing model file run as stand-ins with a note."""
import shutil

import numpy as np
import pytest

from conftest import EXAMPLES, run_python
from imgclass.cli import imagenet_main
from imgclass.errors import ImgclassError
from imgclass.models.jetson import stand_in
from test_data import COLOURS, make_images

# jetson-inference's python/examples/my-recognition.py and imagenet.py as published (commit 45da40a)
MY_RECOGNITION = r'''#!/usr/bin/env python3
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

from jetson_inference import imageNet
from jetson_utils import loadImage

import argparse


# parse the command line
parser = argparse.ArgumentParser()

parser.add_argument("filename", type=str, help="filename of the image to process")
parser.add_argument("--network", type=str, default="googlenet", help="model to use, can be:  googlenet, resnet-18, ect.")

args = parser.parse_args()

# load an image (into shared CPU/GPU memory)
img = loadImage(args.filename)

# load the recognition network
net = imageNet(args.network)

# classify the image
class_idx, confidence = net.Classify(img)

# find the object description
class_desc = net.GetClassDesc(class_idx)

# print out the result
print("image is recognized as '{:s}' (class #{:d}) with {:f}% confidence".format(class_desc, class_idx, confidence * 100))

'''

IMAGENET = r'''#!/usr/bin/env python3
#
# Copyright (c) 2020, NVIDIA CORPORATION. All rights reserved.
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

import sys
import argparse

from jetson_inference import imageNet
from jetson_utils import videoSource, videoOutput, cudaFont, Log

# parse the command line
parser = argparse.ArgumentParser(description="Classify a live camera stream using an image recognition DNN.", 
                                 formatter_class=argparse.RawTextHelpFormatter, 
                                 epilog=imageNet.Usage() + videoSource.Usage() + videoOutput.Usage() + Log.Usage())

parser.add_argument("input", type=str, default="", nargs='?', help="URI of the input stream")
parser.add_argument("output", type=str, default="", nargs='?', help="URI of the output stream")
parser.add_argument("--network", type=str, default="googlenet", help="pre-trained model to load (see below for options)")
parser.add_argument("--topK", type=int, default=1, help="show the topK number of class predictions (default: 1)")

try:
	args = parser.parse_known_args()[0]
except:
	print("")
	parser.print_help()
	sys.exit(0)


# load the recognition network
net = imageNet(args.network, sys.argv)

# note: to hard-code the paths to load a model, the following API can be used:
#
# net = imageNet(model="model/resnet18.onnx", labels="model/labels.txt", 
#                 input_blob="input_0", output_blob="output_0")

# create video sources & outputs
input = videoSource(args.input, argv=sys.argv)
output = videoOutput(args.output, argv=sys.argv)
font = cudaFont()

# process frames until EOS or the user exits
while True:
    # capture the next image
    img = input.Capture()

    if img is None: # timeout
        continue  

    # classify the image and get the topK predictions
    # if you only want the top class, you can simply run:
    #   class_id, confidence = net.Classify(img)
    predictions = net.Classify(img, topK=args.topK)

    # draw predicted class labels
    for n, (classID, confidence) in enumerate(predictions):
        classLabel = net.GetClassLabel(classID)
        confidence *= 100.0

        print(f"imagenet:  {confidence:05.2f}% class #{classID} ({classLabel})")

        font.OverlayText(img, text=f"{confidence:05.2f}% {classLabel}", 
                         x=5, y=5 + n * (font.GetSize() + 5),
                         color=font.White, background=font.Gray40)
                         
    # render the image
    output.Render(img)

    # update the title bar
    output.SetStatus("{:s} | Network {:.0f} FPS".format(net.GetNetworkName(), net.GetNetworkFPS()))

    # print out performance info
    net.PrintProfilerTimes()

    # exit on input/output EOS
    if not input.IsStreaming() or not output.IsStreaming():
        break
'''

GOOGLENET_NOTE = ("imgclass: note: googlenet has no weights on this machine; running efficientnet-lite0 instead "
                  "(ImageNet top-1: googlenet 69.8%, efficientnet-lite0 75.5%)")


def test_my_recognition_runs_unchanged(tmp_path, classifier):
    script = tmp_path / "my-recognition.py"
    script.write_text(MY_RECOGNITION)
    out = run_python(script, EXAMPLES / "black_bear.jpg", "--network", "efficientnet-lite0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("image is recognized as 'American black bear") and "(class #295)" in out.stdout
    assert "note" not in out.stderr  # its weights are here: nothing stands in


def test_jetson_default_network_runs_as_the_closest_installed_one(tmp_path, classifier):
    for name, text in (("my-recognition.py", MY_RECOGNITION), ("imagenet.py", IMAGENET)):
        (tmp_path / name).write_text(text)
    out = run_python(tmp_path / "my-recognition.py", EXAMPLES / "orange.jpg")  # its default: googlenet
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == GOOGLENET_NOTE
    assert out.stdout.startswith("image is recognized as 'orange' (class #950)")
    out = run_python(tmp_path / "imagenet.py", EXAMPLES / "orange.jpg", tmp_path / "out.jpg")
    assert out.returncode == 0, out.stderr
    assert GOOGLENET_NOTE in out.stderr.splitlines() and "Traceback" not in out.stderr
    assert out.stdout.startswith("imagenet:  ") and "% class #950 (orange)" in out.stdout
    assert (tmp_path / "out.jpg").stat().st_size > 0


def test_imagenet_console_script_takes_the_stand_in_too(capsys, classifier):
    assert imagenet_main([str(EXAMPLES / "orange.jpg"), "--network=googlenet"]) == 0
    out = capsys.readouterr()
    assert out.err.strip() == GOOGLENET_NOTE and "class #950 (orange)" in out.out
    # a weights file of the caller's own is never replaced (imgclass classify never stands in: test_classify.py)
    assert stand_in("googlenet", None, weights="googlenet.pth") == ("googlenet", None, None)
    assert stand_in("efficientnet-lite2", None) == ("efficientnet-lite2", None, None)
    assert stand_in("resnet-152", None)[0] == "efficientnet-lite2"  # 78.3% is nearest 77.5%


def test_a_missing_model_file_runs_the_one_exported_model_of_its_folder(tmp_path):
    run = tmp_path / "models" / "cat_dog"
    run.mkdir(parents=True)
    missing = str(run / "resnet18.onnx")
    with pytest.raises(ImgclassError, match=r"holds no exported model \(.onnx\): check the path"):
        stand_in("googlenet", missing)
    (run / "model_best.pth.tar").touch()
    with pytest.raises(ImgclassError, match=r"only training checkpoints \(model_best.pth.tar\): run onnx_export.py "
                                            f"--model-dir={run}$"):
        stand_in("googlenet", missing)
    (run / "efficientnet-lite0.onnx").touch()
    assert stand_in("googlenet", missing) == ("googlenet", str(run / "efficientnet-lite0.onnx"),
                                              f"{missing} not found; running {run / 'efficientnet-lite0.onnx'}, "
                                              f"the one exported model in {run}")
    assert stand_in("googlenet", str(run / "efficientnet-lite0.onnx")).note is None
    (run / "model.onnx").touch()
    with pytest.raises(ImgclassError, match=r"holds 2 exported models \(efficientnet-lite0.onnx, model.onnx\): pass "
                                            "one of them to --model"):
        stand_in("googlenet", missing)


def test_tutorial_sequence_train_export_imagenet(tiny_run, tmp_path):
    """jetson's tutorial as typed (train.py's last line: test_compat_utils.py): onnx_export.py writes
    efficientnet-lite0.onnx where the tutorial then names resnet18.onnx."""
    shutil.copytree(tiny_run, tmp_path / "models" / "cat_dog")
    onnx_export = "import sys; from imgclass.cli import onnx_export_main; sys.exit(onnx_export_main())"
    out = run_python("-c", onnx_export, "--model-dir=models/cat_dog", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (tmp_path / "data" / "cat_dog").mkdir(parents=True)
    shutil.copy(tmp_path / "models" / "cat_dog" / "labels.txt", tmp_path / "data" / "cat_dog" / "labels.txt")
    make_images(tmp_path / "img", COLOURS["blue"], 1, seed=3)
    imagenet = "import sys; from imgclass.cli import imagenet_main; sys.exit(imagenet_main())"
    out = run_python("-c", imagenet, "--model=models/cat_dog/resnet18.onnx", "--input_blob=input_0",
                     "--output_blob=output_0", "--labels=data/cat_dog/labels.txt", "img/img0.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == ("imgclass: note: models/cat_dog/resnet18.onnx not found; running "
                                  "models/cat_dog/efficientnet-lite0.onnx, the one exported model in models/cat_dog")
    assert out.stdout.startswith("imagenet: ") and out.stdout.strip().endswith("(blue)")
    (tmp_path / "imagenet.py").write_text(IMAGENET)  # jetson's own script, through jetson_inference.imageNet
    out = run_python("imagenet.py", "--model=models/cat_dog/resnet18.onnx", "--input_blob=input_0",
                     "--output_blob=output_0", "--labels=data/cat_dog/labels.txt", "img/img0.png", "out.jpg",
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "running models/cat_dog/efficientnet-lite0.onnx" in out.stderr and "(blue)" in out.stdout


def test_image_net_api(classifier, tmp_path):
    from jetson_inference import imageNet
    from jetson_utils import cudaFont, loadImage, saveImage

    net = imageNet(argv=["imagenet.py", "--network=efficientnet-lite0"])
    img = loadImage(str(EXAMPLES / "orange.jpg"))
    assert (img.width, img.height) == (img.shape[1], img.shape[0]) and img.format == "rgb8"
    idx, conf = net.Classify(img)
    assert idx == 950 and net.GetClassDesc(idx) == "orange" and net.GetClassSynset(idx).startswith("n07747607")
    top = net.Classify(img, topK=3)
    assert len(top) == 3 and top[0] == (idx, conf)
    assert net.GetNumClasses() == 1000 and net.GetNetworkName() == "efficientnet-lite0" and net.GetNetworkFPS() > 0
    net.SetThreshold(0.99)
    assert net.Classify(img) == (-1, 0.0) and net.Classify(img, topK=2) == []
    before = np.array(img)
    font = cudaFont()
    font.OverlayText(img, text=f"{conf * 100:05.2f}% orange", x=5, y=5, color=font.White, background=font.Gray40)
    assert (np.asarray(img)[:20, :60] != before[:20, :60]).any() and (np.asarray(img)[-50:] == before[-50:]).all()
    saveImage(str(tmp_path / "out.jpg"), img)
    assert loadImage(str(tmp_path / "out.jpg")).shape == img.shape
    import jetson.inference
    import jetson.utils
    assert jetson.inference.imageNet is imageNet and jetson.utils.loadImage is loadImage
