"""The capture page in headless Chromium (Debian's ``chromium``, driven by Playwright): capture
from a video file input with Space, from the browser's own (fake) camera, and the train button's
hand-off to a live preview."""
from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from conftest import data_dir
from imgclass.capture import CaptureApp, CaptureServer, Dataset, LiveFeed
from imgclass.media.sources import open_source

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
expect = sync_api.expect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
TIMEOUT_MS = 15_000


@contextmanager
def serving(app: CaptureApp):
    """The app on a free 127.0.0.1 port for the block; shut down and closed after it."""
    with CaptureServer(app, "127.0.0.1", 0) as server:
        yield server


@contextmanager
def browser(tmp_path: Path, extra_flags=()):
    """A fresh headless Chromium (own profile folder) and one page."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=[*FLAGS, *extra_flags], viewport={"width": 1400, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def count(page, label: str, set_name: str):
    return page.locator(f'tr[data-label="{label}"] td[data-count="{set_name}"]')


def video_app(tmp_path: Path, labels: Path | None = None, **kwargs) -> CaptureApp:
    video = data_dir("videos") / "bottle-detection.mp4"
    source = open_source(video, loop=-1)
    return CaptureApp(Dataset(tmp_path / "ds", labels), LiveFeed(source), source_name=video.name,
                      model_dir=tmp_path / "model", **kwargs)


# A stand-in for `imgclass train` + `imgclass export`: prints tqdm-like progress, writes a tiny
# ONNX classifier with imgclass's metadata, so the page's train -> preview hand-off runs for real.
FAKE_TRAIN = r"""
import json, sys, time
import onnx
from onnx import TensorProto, helper
from imgclass.preprocess import Preprocess
for pct in (0, 50, 100):
    sys.stdout.write(f"\repoch 1: {pct}%"); sys.stdout.flush(); time.sleep(0.05)
print("\nval accuracy 100%")
weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1, -1, 0, 0, -1, 1])
graph = helper.make_graph(
    [helper.make_node("GlobalAveragePool", ["input_0"], ["pooled"]),
     helper.make_node("Flatten", ["pooled"], ["flat"]),
     helper.make_node("MatMul", ["flat", "w"], ["logits"]),
     helper.make_node("Softmax", ["logits"], ["output_0"], axis=1)],
    "tiny", [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, ["N", 3, 32, 32])],
    [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, ["N", 2])], [weights])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
path, labels_key, preprocess_key = sys.argv[1:]
helper.set_model_props(model, {labels_key: json.dumps(["bottle", "can"]), preprocess_key: Preprocess(size=32).to_json()})
onnx.save(model, path)
"""


def fake_train(tmp_path: Path) -> list[list[str]]:
    """The train commands for CaptureApp: FAKE_TRAIN writing tmp_path/model/model.onnx."""
    from imgclass.models.onnx import META_LABELS, META_PREPROCESS
    (tmp_path / "model").mkdir(exist_ok=True)
    return [[sys.executable, "-c", FAKE_TRAIN, str(tmp_path / "model" / "model.onnx"), META_LABELS, META_PREPROCESS]]


def test_space_captures_from_a_video_input(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("bottle\ncan\n")
    root = tmp_path / "ds"
    with serving(video_app(tmp_path, labels)) as server, browser(tmp_path) as page:
        page.goto(server.url)
        expect(page.locator("#live")).to_have_js_property("complete", True)  # first MJPEG frame shown
        page.wait_for_function("document.getElementById('live').naturalWidth === 640")
        page.click('tr[data-label="can"]')
        page.click('#sets button[data-set="val"]')
        expect(page.locator("#target")).to_have_text("→ val / can")
        for _ in range(4):
            page.keyboard.press("Space")
        expect(count(page, "can", "val")).to_have_text("4")
        expect(page.locator("#total-val")).to_have_text("4")
        expect(count(page, "bottle", "val")).to_have_text("0")
        expect(page.locator("#thumbs figure")).to_have_count(4)

        files = sorted((root / "val" / "can").iterdir())
        assert len(files) == 4
        for f in files:
            with Image.open(f) as im:
                assert im.format == "JPEG" and im.size == (640, 360)
                im.load()  # complete, decodable
        assert not (root / "train").exists() and not (root / "val" / "bottle").exists()

        page.click("#undo")  # deletes the last capture
        expect(count(page, "can", "val")).to_have_text("3")
        assert len(list((root / "val" / "can").iterdir())) == 3

        page.select_option("#burst", "10")  # holding Space: a burst at 10/s after the first shot
        page.keyboard.down("Space")
        page.wait_for_timeout(1400)
        page.keyboard.up("Space")
        page.wait_for_function("ui.pending === 0")  # the last request has landed
        burst = len(list((root / "val" / "can").iterdir())) - 3
        assert 3 <= burst <= 13  # 1 + up to about 10 ticks; a tick is dropped, never queued, while the server lags
        expect(count(page, "can", "val")).to_have_text(str(3 + burst))

        page.fill("#new-class", "cup")  # typed class: becomes the selection, lands in labels.txt
        page.press("#new-class", "Enter")
        expect(page.locator('tr[data-label="cup"]')).to_have_class("selected")
        page.click('#sets button[data-set="test"]')
        page.keyboard.press("Space")
        expect(count(page, "cup", "test")).to_have_text("1")
        assert (root / "labels.txt").read_text() == "bottle\ncan\ncup\n"

        page.fill("#new-class", "../../etc")  # refused, with the reason on the page
        page.press("#new-class", "Enter")
        expect(page.locator("#message")).to_contain_text("contains '/'")
        assert not (tmp_path / "etc").exists() and "etc" not in (root / "labels.txt").read_text()
        expect(page.locator("#train-command")).to_contain_text(f"imgclass train {root} --model-dir")


def test_browser_camera_frames_are_saved_and_previewed(tmp_path):
    root = tmp_path / "ds"
    app = CaptureApp(Dataset(root), None, model_dir=tmp_path / "model", train=fake_train(tmp_path))  # browser only
    with serving(app) as server, browser(tmp_path, FAKE_CAMERA) as page:
        page.goto(server.url)
        page.wait_for_function("document.getElementById('webcam').videoWidth > 0")
        expect(page.locator("#src-server")).to_be_disabled()
        page.fill("#new-class", "fake cam")
        page.press("#new-class", "Enter")
        page.click('#sets button[data-set="train"]')
        page.fill("#quality", "60")
        page.keyboard.press("Space")
        page.keyboard.press("Space")
        expect(count(page, "fake cam", "train")).to_have_text("2")
        files = sorted((root / "train" / "fake cam").iterdir())
        assert len(files) == 2
        size = page.evaluate("[document.getElementById('webcam').videoWidth, document.getElementById('webcam').videoHeight]")
        for f in files:
            with Image.open(f) as im:
                assert im.format == "JPEG" and list(im.size) == size
                im.load()

        page.click("#train")  # the preview classifies the browser's frames, posted to the server
        expect(page.locator("#predictions .prediction")).to_have_count(2)
        expect(page.locator("#predictions .prediction.best")).to_have_count(1)


def test_train_button_shows_progress_then_live_predictions(tmp_path):
    with serving(video_app(tmp_path, train=fake_train(tmp_path))) as server, browser(tmp_path) as page:
        page.goto(server.url)
        page.click("#train")
        expect(page.locator("#train-log")).to_contain_text("val accuracy 100%")
        expect(page.locator("#train-state")).to_have_text("done: live preview on")
        expect(page.locator("#predictions .prediction")).to_have_count(2)
        expect(page.locator("#predictions")).to_contain_text("bottle")
        total = page.evaluate("""[...document.querySelectorAll('#predictions b')]
                                 .reduce((n, b) => n + parseInt(b.textContent), 0)""")
        assert 98 <= total <= 102  # softmax over the two classes, rounded
