"""Network inputs and outputs against real servers and clients on 127.0.0.1: RTSP in (GStreamer's RTSP
server), RTSP and RTP out read back by PyAV, HTTP MJPEG in, the live web view, and a stream that drops."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from imgclass.errors import ImgclassError
from imgclass.media.liveview import LiveView
from imgclass.media.sources import open_source

from conftest import data_dir, run_cli

# GStreamer's RTSP server with a test pattern, as a camera would serve it (run as a subprocess so
# that a test can pull the plug on it)
RTSP_CAMERA = '''
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer.new()
server.set_address("127.0.0.1"); server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory.new()
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=15/1 "
                   "! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if not server.attach(None):
    sys.exit("port in use")
print("ready", flush=True)
GLib.MainLoop().run()
'''


def gstreamer_or_skip() -> None:
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer  # noqa: F401
    except (ImportError, ValueError) as e:
        print(f"skipping: GStreamer RTSP server / PyGObject absent ({e}); .ci/run installs them")
        pytest.skip(f"GStreamer RTSP server / PyGObject absent ({e}); .ci/run installs them")


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def rtsp_camera(port: int):
    """A GStreamer RTSP server at rtsp://127.0.0.1:PORT/cam for the block's duration."""
    proc = subprocess.Popen([sys.executable, "-c", RTSP_CAMERA, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", "the test RTSP server did not start"
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def background_cli(*args: str):
    """``imgclass ARGS`` running in the background; interrupted (Ctrl-C) at the end of the block."""
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()


def read_frames(uri: str, n: int, deadline_s: float = 90, **options) -> list:
    """The first n frames of a stream, retrying the connection until the server is up (bounded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with open_source(uri, timeout=5, retries=0, **options) as src:
                frames = []
                for f in src:
                    frames.append(f)
                    if len(frames) == n:
                        return frames
        except ImgclassError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_rtsp_input_from_a_gstreamer_server(tmp_path):
    gstreamer_or_skip()
    with rtsp_camera(free_port()) as url:
        r = run_cli("classify", url, tmp_path / "cam.mp4", "--json", "--max-frames", "15", timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["frame"] for row in rows] == list(range(15)) and rows[0]["input"].startswith("rtsp://127.0.0.1")
    times = [row["timestamp"] for row in rows]
    assert all(b > a for a, b in zip(times, times[1:])) and 0.5 < times[-1] < 3  # 15 fps, real time
    import av
    with av.open(str(tmp_path / "cam.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 15 and c.streams.video[0].width == 320


def test_rtsp_output_is_served_to_a_reader():
    gstreamer_or_skip()
    videos = data_dir("videos")
    port = free_port()
    with background_cli("classify", videos / "asl_book.mkv", f"rtsp://127.0.0.1:{port}/out", "--input-loop", "-1") as p:
        frames = read_frames(f"rtsp://127.0.0.1:{port}/out", 10)
        assert p.poll() is None
    assert len(frames) == 10 and frames[0].image.shape == (480, 640, 3)
    corner = frames[-1].image[:20, :100].mean()
    assert corner < frames[-1].image[240:, 320:].mean(), "the overlay box should darken the top left corner"


def test_rtp_output_read_back_with_input_codec():
    videos = data_dir("videos")
    port = free_port(socket.SOCK_DGRAM)
    with background_cli("classify", videos / "bottle-detection.mp4", f"rtp://127.0.0.1:{port}") as p:
        frames = read_frames(f"rtp://@:{port}", 10, codec="h264")
        assert p.poll() is None
    assert len(frames) == 10 and frames[0].image.shape == (360, 640, 3)


class MJPEGCamera(BaseHTTPRequestHandler):
    """An IP camera's MJPEG endpoint: a moving bar, multipart/x-mixed-replace, about 20 fps."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=camframe")
        self.end_headers()
        try:
            for i in range(400):
                image = np.zeros((120, 160, 3), np.uint8)
                image[:, (i * 4) % 160:(i * 4) % 160 + 8] = 255
                jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                self.wfile.write(b"--camframe\r\nContent-Type: image/jpeg\r\n"
                                 + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def http_server(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_mjpeg_input():
    with http_server(MJPEGCamera) as url, open_source(f"{url}/video.mjpg", timeout=10) as src:
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 5:
                break
        assert src.is_live
    assert frames[0].image.shape == (120, 160, 3)
    assert not np.array_equal(frames[0].image, frames[4].image), "the bar moves"


def test_live_view_serves_page_frames_and_stream():
    view = LiveView(port=0)
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            image = np.full((90, 160, 3), i % 200, np.uint8)
            view.write(image)
            i += 1
            time.sleep(0.02)

    threading.Thread(target=feed, daemon=True).start()
    try:
        view.set_status("efficientnet-lite0 | network 80 FPS")
        page = urllib.request.urlopen(view.url, timeout=10).read().decode()
        assert "/stream.mjpg" in page
        assert urllib.request.urlopen(view.url + "status", timeout=10).read().decode().startswith("efficientnet")
        jpeg = urllib.request.urlopen(view.url + "frame.jpg", timeout=10).read()
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (90, 160, 3)
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert stream.read(64).startswith(b"--imgclass-frame\r\nContent-Type: image/jpeg")
        with open_source(view.url + "stream.mjpg", timeout=10) as src:  # imgclass reads its own live view
            assert next(iter(src)).image.shape == (90, 160, 3)
    finally:
        stop.set()
        view.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(view.url, timeout=2)


def test_live_view_port_in_use_is_one_clear_error():
    view = LiveView(port=0)
    try:
        with pytest.raises(ImgclassError, match="live view: cannot listen on .*pick another --port"):
            LiveView(port=int(view.url.rsplit(":", 1)[1].strip("/")))
    finally:
        view.close()


def test_a_dropped_stream_is_retried_and_reported():
    gstreamer_or_skip()
    port = free_port()
    with rtsp_camera(port) as url:
        proc = subprocess.Popen([sys.executable, "-m", "imgclass", "classify", url, "--max-frames", "60",
                                 "--input-retries", "5", "--headless"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = (line for line in proc.stdout if " frame " in line)
        for _ in range(10):
            next(lines)
    try:  # the camera is gone: the run waits for it, logging each attempt; then it comes back
        time.sleep(1.5)
        with rtsp_camera(port):
            out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stream dropped" in err and "reconnecting, attempt 1 of 5" in err and "reconnected" in err
    assert "dropped 1 time(s) and was reconnected" in err


def test_a_stream_that_never_comes_back_ends_in_one_line():
    gstreamer_or_skip()
    port = free_port()
    with rtsp_camera(port) as url:
        proc = subprocess.Popen([sys.executable, "-m", "imgclass", "classify", url, "--input-retries", "2",
                                 "--input-timeout", "3", "--headless"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        next(line for line in proc.stdout if " frame " in line)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "reconnecting, attempt 2 of 2" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("imgclass: error: rtsp://127.0.0.1") and "stream lost" in err
