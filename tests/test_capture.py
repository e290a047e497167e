"""imgclass capture without a browser: class-name safety, the dataset writer, frame extraction,
the HTTP API, the training runner and the command line."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import data_dir, run_cli
from imgclass.capture import CaptureApp, CaptureServer, Dataset, LiveFeed, extract_frames, validate_class_name
from imgclass.capture.trainer import TrainJob
from imgclass.errors import ImgclassError

MALICIOUS = ["../../etc", "/etc", "/tmp/evil", "a\x00b", "..", ".", "", "   ", "a/b", "a\\b", "tab\there",
             "line\nbreak", "C:evil", ".hidden"]


def frame(value: int = 128, size=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (*size, 3), dtype=np.uint8)


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def video() -> Path:
    path = data_dir("videos") / "bottle-detection.mp4"  # 1189 frames, 39.85 s, 640x360
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


# --- class names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cat", "red mug", "Ünïcode-é", "n01440764", "a.b", "x" * 100])
def test_good_class_names_pass(name):
    assert validate_class_name(f" {name} ") == name


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_class_names_are_refused_and_nothing_is_written(tmp_path, name):
    root = tmp_path / "box" / "dataset"
    ds = Dataset(root)
    with pytest.raises(ImgclassError, match="class name"):
        ds.save(frame(), "train", name)
    with pytest.raises(ImgclassError, match="class name"):
        ds.add_class(name)
    assert files_under(tmp_path) == set()


def test_a_class_folder_linked_outside_is_refused(tmp_path):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "ds" / "train" / "cat").symlink_to(tmp_path / "outside")
    with pytest.raises(ImgclassError, match="leads outside the dataset folder"):
        Dataset(tmp_path / "ds").save(frame(), "train", "cat")
    assert not any((tmp_path / "outside").iterdir())


def test_bad_set_is_refused(tmp_path):
    with pytest.raises(ImgclassError, match="not one of train, val, test, auto"):
        Dataset(tmp_path).save(frame(), "../x", "cat")


def test_labels_file_with_a_bad_name_is_refused(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n../../etc\n")
    with pytest.raises(ImgclassError, match=r"'\.\./\.\./etc' contains '/'"):
        Dataset(tmp_path / "ds", labels)


# --- the dataset writer ----------------------------------------------------------------------
def test_captures_get_unique_names_in_the_right_folder(tmp_path):
    ds = Dataset(tmp_path)
    saved = [ds.save(frame(i), "val", "cat", quality=90) for i in range(6)]  # same second: all kept
    files = sorted((tmp_path / "val" / "cat").iterdir())
    assert len(files) == 6 == len({c.name for c in saved})
    assert all(Image.open(f).format == "JPEG" for f in files)
    assert ds.counts()["val"]["cat"] == 6 and ds.counts()["train"]["cat"] == 0


def test_new_classes_are_appended_to_labels_txt(tmp_path):
    labels = tmp_path / "given.txt"
    labels.write_text("cat\ndog\n")
    ds = Dataset(tmp_path / "ds", labels)
    assert (tmp_path / "ds" / "labels.txt").read_text() == "cat\ndog\n"
    ds.save(frame(), "train", "bird")
    ds.add_class("cat")  # known: no duplicate
    assert (tmp_path / "ds" / "labels.txt").read_text() == "cat\ndog\nbird\n"
    assert Dataset(tmp_path / "ds").classes == ["cat", "dog", "bird"]  # resumes from disk


def test_auto_sends_one_in_five_to_val(tmp_path):
    ds = Dataset(tmp_path)
    sets = [ds.save(frame(i), "auto", "cat").set for i in range(10)]
    assert sets.count("val") == 2 and sets[0] == "train"


def test_quality_is_applied(tmp_path):
    ds = Dataset(tmp_path)
    low, high = (ds.save(frame(), "train", "cat", quality=q) for q in (30, 95))
    tables = [Image.open(tmp_path / c.relpath).quantization[0] for c in (low, high)]
    assert sum(tables[0]) > sum(tables[1])  # coarser quantization at the lower quality
    with pytest.raises(ImgclassError, match="outside 1..100"):
        ds.save(frame(), "train", "cat", quality=0)


def test_browser_jpeg_is_kept_as_is_and_non_jpeg_refused(tmp_path):
    ds = Dataset(tmp_path)
    jpeg = tmp_path / "x.jpg"
    Image.fromarray(frame()).save(jpeg, quality=77)
    capture = ds.save(jpeg.read_bytes(), "test", "cat")
    assert (tmp_path / capture.relpath).read_bytes() == jpeg.read_bytes()
    png = tmp_path / "x.png"
    Image.fromarray(frame()).save(png)
    with pytest.raises(ImgclassError, match="not JPEG"):
        ds.save(png.read_bytes(), "test", "cat")
    with pytest.raises(ImgclassError, match="not a readable JPEG"):
        ds.save(b"\xff\xd8garbage", "test", "cat")


def test_undo_deletes_the_last_capture(tmp_path):
    ds = Dataset(tmp_path)
    first, second = ds.save(frame(1), "train", "cat"), ds.save(frame(2), "train", "dog")
    assert ds.undo() == second and not (tmp_path / second.relpath).exists()
    assert ds.recent() == [first]
    assert ds.undo() == first and ds.undo() is None


def test_warning_for_a_class_with_far_fewer_images(tmp_path):
    ds = Dataset(tmp_path)
    for i in range(12):
        ds.save(frame(i), "train", "cat")
    ds.save(frame(), "train", "dog")
    assert ds.warnings() == ["'dog' has 1 image, the biggest class 12: capture more of it"]


def test_resolve_stays_inside_the_dataset(tmp_path):
    ds = Dataset(tmp_path / "ds")
    capture = ds.save(frame(), "train", "cat")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    assert ds.resolve(capture.relpath) == (tmp_path / "ds" / capture.relpath).resolve()
    for bad in ["../secret.jpg", str(tmp_path / "secret.jpg"), "train/cat/../../../secret.jpg"]:
        with pytest.raises(ImgclassError, match="no such image"):
            ds.resolve(bad)


# --- frame extraction ------------------------------------------------------------------------
def test_extract_every_nth_frame(tmp_path, video):
    saved, damage = extract_frames(video, Dataset(tmp_path), "bottle", every=30)
    files = sorted((tmp_path / "train" / "bottle").iterdir())
    assert len(saved) == len(files) == 40 and damage == ""  # frames 0, 30, ..., 1170 of 1189
    assert Image.open(files[0]).size == (640, 360)
    assert (tmp_path / "labels.txt").read_text() == "bottle\n"


def test_extract_cli_by_fps(tmp_path, video):
    result = run_cli("capture", video, "--dataset", tmp_path, "--class", "bottle", "--fps", "0.5", "--set", "val")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "val" / "bottle").glob("*.jpg"))) == 20  # one per 2 s of 39.85 s
    assert "saved 20 frames" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--class", "../../etc", "--every", "5"], "class name '../../etc' contains '/'"),
    (["--class", "bottle"], "give exactly one of --every N"),
    (["--every", "5"], "add --class NAME"),
])
def test_cli_errors_are_one_line(tmp_path, video, args, message):
    result = run_cli("capture", video, "--dataset", tmp_path / "ds", *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ds" / "train").exists() and not (tmp_path / "etc").exists()


def test_cli_missing_input_is_one_line(tmp_path):
    result = run_cli("capture", tmp_path / "nope.mp4", "--dataset", tmp_path / "ds", "--port", "0")
    assert result.returncode == 1 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_cli_serves_the_page_until_ctrl_c(tmp_path, video):
    process = subprocess.Popen([sys.executable, "-m", "imgclass", "capture", str(video), "--dataset", str(tmp_path),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + process.stderr.read()
        with urllib.request.urlopen(url[0] + "api/state", timeout=10) as response:
            assert json.loads(response.read())["source"]["name"] == str(video)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert f"holds 0 images; train with: imgclass train {tmp_path}" in out


def test_help_shows_defaults():
    result = run_cli("capture", "--help")
    assert result.returncode == 0 and "(default: 8090)" in result.stdout and "--every" in result.stdout


def test_camera_capture_alias_parses_jetson_flags():
    from imgclass.cli import jetson_argv
    from imgclass.cli.capture import jetson_parser
    args = jetson_parser().parse_args(jetson_argv(["--width=640", "--input_height", "480", "/dev/video0"]))
    assert (args.input, args.input_width, args.input_height, args.dataset) == ("/dev/video0", 640, 480, "dataset")


# --- the HTTP API ----------------------------------------------------------------------------
class FakeFrame:
    def __init__(self, image, timestamp):
        self.image, self.timestamp = image, timestamp


@pytest.fixture
def server(tmp_path):
    """A capture server on a synthetic feed (frames at 30 fps), on a free 127.0.0.1 port."""
    frames = (FakeFrame(frame(i % 7), i / 30) for i in range(10_000))
    app = CaptureApp(Dataset(tmp_path / "ds"), LiveFeed(frames), source_name="synthetic", model_dir=tmp_path / "model")
    app.feed.wait(timeout=10)  # a busy machine may not have run the feed's thread yet
    with CaptureServer(app, "127.0.0.1", 0) as srv:
        yield srv


def call(server, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    headers = {"X-Imgclass": "1"} if headers is None else headers
    request = urllib.request.Request(server.url + path.lstrip("/"), data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_capture_undo_and_refusals(server, tmp_path):
    root = tmp_path / "ds"
    status, state = call(server, "POST", "/api/capture?set=train&class=cup&quality=80", b"")
    assert status == 200 and state["counts"]["train"]["cup"] == 1 and state["classes"] == ["cup"]
    for name in ["..%2F..%2Fetc", "%2Fetc", "a%00b"]:
        status, state = call(server, "POST", f"/api/capture?set=train&class={name}", b"")
        assert status == 400 and re.search("class name|NUL byte", state["error"])  # a NUL is refused for any route
    status, state = call(server, "POST", "/api/class", json.dumps({"name": "../x"}).encode())
    assert status == 400 and "contains '/'" in state["error"]
    status, state = call(server, "GET", "/api/image?path=../../../etc/passwd")
    assert status == 400
    assert {p.relative_to(tmp_path).parts[0] for p in files_under(tmp_path)} == {"ds"}
    status, state = call(server, "POST", "/api/undo", b"")
    assert status == 200 and state["counts"]["train"]["cup"] == 0
    assert not list((root / "train" / "cup").iterdir())
    assert "imgclass train" in state["train"]["command"] and state["train"]["state"] == "idle"


def test_requests_other_sites_could_forge_are_refused(server, tmp_path):
    status, state = call(server, "POST", "/api/capture?set=train&class=cup", b"", headers={})
    assert status == 403 and "X-Imgclass" in state["error"]
    status, state = call(server, "GET", "/api/state", headers={"Host": f"evil.example:{server.port}"})
    assert status == 403 and "evil.example" in state["error"]
    status, state = call(server, "GET", "/api/state", headers={"Host": f"localhost:{server.port}"})
    assert status == 200
    assert not (tmp_path / "ds" / "train").exists()


def test_a_busy_port_is_one_clear_error(server):
    with pytest.raises(ImgclassError, match="cannot listen on 127.0.0.1:.*pick another --port"):
        CaptureServer(server.app, "127.0.0.1", server.port)


def test_mjpeg_stream_sends_jpeg_parts(server):
    with urllib.request.urlopen(server.url + "stream.mjpg", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        head = response.read(200)
    assert b"Content-Type: image/jpeg" in head and b"\xff\xd8" in head


# --- the training runner ---------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="no pseudo-terminal there: progress bars hide on a pipe")
def test_train_job_shows_tqdm_bars():
    script = ("import sys, time\nfrom tqdm import tqdm\n"
              "for i in tqdm(range(3), desc='caching', disable=None, leave=False, file=sys.stderr): time.sleep(0.5)")
    job = TrainJob([[sys.executable, "-c", script]])
    job.start()
    deadline, seen = time.monotonic() + 20, set()
    while job.state != "done" and time.monotonic() < deadline:
        seen.add(job.status()["progress"])
        time.sleep(0.02)
    job.wait(30)
    assert job.state == "done" and any(p.startswith("caching:") and "%|" in p for p in seen), seen


def test_train_job_streams_progress_and_reports_failure():
    script = ("import sys, time\nprint('epoch 1', flush=True)\nsys.stderr.write('50%\\r'); sys.stderr.flush()\n"
              "time.sleep(1)\nsys.stderr.write('\\x1b[A100%\\r'); sys.stderr.flush()\nprint('\\nbye')\n"
              "print(sys.stderr.isatty())")
    job = TrainJob([[sys.executable, "-c", script]])
    job.start()
    deadline = time.monotonic() + 20
    while job.status()["progress"] != "50%" and time.monotonic() < deadline:  # shown while it runs
        time.sleep(0.05)
    assert job.status()["progress"] == "50%"
    job.wait(30)
    status = job.status()
    assert status["state"] == "done" and status["lines"][1:3] == ["epoch 1", "bye"]
    assert status["lines"][3] == str(sys.platform != "win32")  # a terminal: tqdm bars show
    job = TrainJob([[sys.executable, "-c", "print('oops'); raise SystemExit(3)"], ["never", "run"]])
    job.start()
    job.wait(30)
    assert job.state == "failed" and "exit 3" in job.error and not any("never" in line for line in job.lines)
