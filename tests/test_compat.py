"""The jetson-inference / jetson-utils shims: the tutorial's scripts run unchanged."""
import numpy as np

from conftest import EXAMPLES, run_python

MY_RECOGNITION = '''#!/usr/bin/python3
import jetson.inference
import jetson.utils

import argparse

# parse the command line
parser = argparse.ArgumentParser()
parser.add_argument("filename", type=str, help="filename of the image to process")
parser.add_argument("--network", type=str, default="googlenet", help="model to use, can be:  googlenet, resnet-18, ect.")
args = parser.parse_args()

# load an image (into shared CPU/GPU memory)
img = jetson.utils.loadImage(args.filename)

# load the recognition network
net = jetson.inference.imageNet(args.network)

# classify the image
class_idx, confidence = net.Classify(img)

# find the object description
class_desc = net.GetClassDesc(class_idx)

# print out the result
print("image is recognized as '{:s}' (class #{:d}) with {:f}% confidence".format(class_desc, class_idx, confidence * 100))
'''


def test_my_recognition_runs_unchanged(tmp_path, classifier):
    script = tmp_path / "my-recognition.py"
    script.write_text(MY_RECOGNITION)
    out = run_python(script, EXAMPLES / "black_bear.jpg", "--network", "efficientnet-lite0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("image is recognized as 'American black bear") and "(class #295)" in out.stdout


def test_a_network_without_weights_names_the_installed_ones(tmp_path):
    script = tmp_path / "my-recognition.py"
    script.write_text(MY_RECOGNITION)
    out = run_python(script, EXAMPLES / "black_bear.jpg")  # jetson's default: googlenet, absent here
    assert out.returncode == 1
    assert "no weights for 'googlenet'" in out.stderr and "efficientnet-lite0" in out.stderr
    assert "Traceback" not in out.stderr


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
