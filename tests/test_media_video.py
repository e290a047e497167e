"""Video files in and out, input options, the jetson video shims, and bad input (real clips in ../shared/data/videos)."""
import json
import random
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from imgclass.errors import ImgclassError
from imgclass.media import sources
from imgclass.media.sinks import open_sink
from imgclass.media.sources import hide_password, open_source
from imgclass.pipeline import Smoother

from conftest import data_dir, run_cli, run_python


@pytest.fixture(scope="module")
def videos() -> Path:
    return data_dir("videos")


class Info:
    def __init__(self, stream):
        self.codec, self.average_rate = stream.codec_context.name, stream.average_rate


def decoded(path: Path, limit: int = 0) -> tuple[list[np.ndarray], Info]:
    """Every frame of a video as RGB (checks that it is playable), and its codec and frame rate."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = []
        for f in c.decode(stream):
            frames.append(f.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
        return frames, Info(stream)


def overlay_drawn(output: np.ndarray, original: np.ndarray) -> bool:
    """The label box darkens the top-left corner (and only there, up to compression noise)."""
    h, w = output.shape[:2]
    corner = np.abs(output[:h // 12, :w // 8].astype(int) - original[:h // 12, :w // 8]).mean()
    rest = np.abs(output[h // 2:, w // 2:].astype(int) - original[h // 2:, w // 2:]).mean()
    return corner > 15 and rest < 6


def test_full_clip_to_h264_mp4_keeps_every_frame_rate_and_overlay(videos, tmp_path):
    out = tmp_path / "out.mp4"
    r = run_cli("classify", videos / "bottle-detection.mp4", out, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    frames, stream = decoded(out)
    source, source_stream = decoded(videos / "bottle-detection.mp4")
    assert len(frames) == len(source) == len(rows) == 1189
    assert stream.codec == "h264" and stream.average_rate == source_stream.average_rate
    assert [r["frame"] for r in rows] == list(range(1189))
    assert rows[-1]["timestamp"] == pytest.approx(1188 / float(source_stream.average_rate), abs=1e-3)
    assert set(rows[0]) == {"input", "frame", "timestamp", "predictions"}
    assert all(overlay_drawn(o, s) for o, s in zip(frames, source)), "a frame lacks the overlay"
    assert "FPS end to end" in r.stderr and not list(tmp_path.glob(".out.mp4*")), "temporary file left behind"


@pytest.mark.parametrize("clip, output", [("asl_book.mkv", "out.mkv"), ("bottle-detection_15s_mpeg4.avi", "out.avi"),
                                          ("asl_book.mkv", "out.webm")])
def test_mkv_and_avi_clips(videos, tmp_path, clip, output):
    r = run_cli("classify", videos / clip, tmp_path / output, "--max-frames", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" frame ") == 40 and "class #" in r.stdout
    frames, stream = decoded(tmp_path / output)
    source, source_stream = decoded(videos / clip, limit=40)
    assert len(frames) == 40 and stream.average_rate == source_stream.average_rate
    assert stream.codec == ("vp9" if output.endswith(".webm") else "h264")
    assert all(overlay_drawn(o, s) for o, s in zip(frames, source))


def test_imagenet_alias_takes_jetson_media_flags_and_writes_a_pattern(videos, tmp_path):
    r = run_python(Path(sys.executable).parent / "imagenet", "--network=efficientnet-lite0", "--max_frames=3",
                   "--input_flip=rotate-180", "--input_width=320", "--input_height=180",
                   str(videos / "bottle-detection.mp4"), str(tmp_path / "f_%03i.jpg"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("imagenet:  ") and len(r.stdout.splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_000.jpg", "f_001.jpg", "f_002.jpg"]
    from PIL import Image
    assert Image.open(tmp_path / "f_000.jpg").size == (320, 180)


def test_source_options_loop_rate_flip_resize(videos):
    with open_source(videos / "asl_book.mkv") as plain:
        first = next(iter(plain)).image
        assert plain.frame_count == 0 and plain.frame_rate == 30 and not plain.is_live  # mkv: count unknown
    with open_source(videos / "bottle-detection.mp4", loop=2) as mp4:
        assert mp4.frame_count == 3 * 1189 and mp4.rate == Fraction(179, 6)
    with open_source(videos / "asl_book.mkv", loop=1, rate=10, flip="horizontal", width=320, height=240) as s:
        frames = list(s)
    assert len(frames) == 2 * 37  # 109 frames at 30 fps -> 37 at 10 fps, played twice
    times = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(times, times[1:])), "timestamps must keep rising across loops"
    assert frames[0].image.shape == (240, 320, 3)
    import cv2
    expected = cv2.flip(cv2.resize(first, (320, 240), interpolation=cv2.INTER_AREA), 1)
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 1


def test_image_folder_to_video_goes_through_media_images(images_dir, tmp_path):
    out = tmp_path / "slides.mp4"
    with open_source(images_dir / "orange_*.jpg") as src, open_sink(out, rate=2) as sink:
        for frame in src:
            sink.write(frame.image, frame.timestamp)
    frames, stream = decoded(out)
    assert len(frames) == 2 and stream.average_rate == 2


def test_smoothing_follows_jetson():
    s = Smoother(0.25)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(s(a), a) and np.allclose(s(b), [0.75, 0.25])
    assert np.allclose(Smoother(4)(a), a) and Smoother(4).factor == 0.25  # N frames = 1/N
    assert Smoother(0)(b) is b and Smoother(1)(b) is b  # disabled


def test_v4l2_camera_options_reach_ffmpeg(monkeypatch):
    calls = []

    def fake_open(url, **kwargs):
        calls.append((url, kwargs))
        raise av.error.FileNotFoundError(2, "No such file or directory", url)

    monkeypatch.setattr(sources.av, "open", fake_open)
    for uri in ("/dev/video3", "v4l2:///dev/video3", "3", "csi://3"):
        with pytest.raises(ImgclassError, match="/dev/video3: no such camera"):
            open_source(uri, width=1280, height=720, rate=15, codec="mjpeg")
    assert all(url == "/dev/video3" for url, _ in calls)
    assert calls[0][1]["format"] == "video4linux2"
    assert calls[0][1]["options"] == {"video_size": "1280x720", "framerate": "15", "input_format": "mjpeg"}


def test_bad_inputs_give_one_clear_line(tmp_path):
    # fixed noise: now and then fresh random bytes hold what FFmpeg probes as an audio stream
    (tmp_path / "noise.mp4").write_bytes(random.Random(0).randbytes(50_000))
    port = free_port()
    cases = {"/dev/video57": "no such camera", f"rtsp://u:secret@127.0.0.1:{port}/x": "cannot connect",
             str(tmp_path / "noise.mp4"): "not a video FFmpeg can read", str(tmp_path / "nothere.mp4"): "no such file"}
    for uri, message in cases.items():
        r = run_cli("classify", uri, "--input-timeout", "3")
        assert r.returncode == 1, (uri, r.stderr)
        assert r.stderr.startswith("imgclass: error: ") and message in r.stderr and len(r.stderr.splitlines()) == 1
        assert "secret" not in r.stderr and "Traceback" not in r.stderr


def test_truncated_and_unsupported_videos(videos, tmp_path):
    data = (videos / "asl_book.mkv").read_bytes()
    (tmp_path / "cut.mp4").write_bytes((videos / "bottle-detection.mp4").read_bytes()[:200_000])  # no moov atom
    with pytest.raises(ImgclassError, match="cut.mp4: not a video FFmpeg can read"):
        open_source(tmp_path / "cut.mp4")
    assert b"V_MPEG4/ISO/AVC" in data
    (tmp_path / "odd.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))  # a codec nobody knows
    with pytest.raises(ImgclassError, match="codec not supported"):
        open_source(tmp_path / "odd.mkv")


def stop_looped_classify(clip: Path, out: Path, stop: signal.Signals) -> tuple[int, str]:
    """``imgclass classify CLIP OUT --input-loop -1`` sent ``stop`` once 40 frames are through: (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", "classify", str(clip), str(out), "--input-loop", "-1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = (line for line in proc.stdout if " frame " in line)
        for _ in range(40):  # the model is loaded and 40 frames are through
            next(lines)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


def test_ctrl_c_finalizes_a_playable_mp4(videos, tmp_path):
    out = tmp_path / "live.mp4"
    returncode, err = stop_looped_classify(videos / "asl_book.mkv", out, signal.SIGINT)
    assert returncode == 130, err
    assert "stopped by Ctrl-C" in err and "Traceback" not in err
    frames, stream = decoded(out)
    assert len(frames) >= 30 and stream.codec == "h264"


JETSON_IMAGENET = '''
import sys, argparse
from jetson_inference import imageNet
from jetson_utils import videoSource, videoOutput, cudaFont
parser = argparse.ArgumentParser(epilog=imageNet.Usage() + videoSource.Usage() + videoOutput.Usage())
parser.add_argument("input", type=str, default="", nargs='?')
parser.add_argument("output", type=str, default="", nargs='?')
parser.add_argument("--network", type=str, default="googlenet")
parser.add_argument("--topK", type=int, default=1)
args = parser.parse_known_args()[0]
net = imageNet(args.network, sys.argv)
input = videoSource(args.input, argv=sys.argv)
output = videoOutput(args.output, argv=sys.argv)
font = cudaFont()
while True:
    img = input.Capture()
    predictions = net.Classify(img, topK=args.topK)
    for n, (classID, confidence) in enumerate(predictions):
        classLabel = net.GetClassLabel(classID)
        confidence *= 100.0
        print(f"imagenet:  {confidence:05.2f}% class #{classID} ({classLabel})")
        font.OverlayText(img, text=f"{confidence:05.2f}% {classLabel}", x=5, y=5 + n * (font.GetSize() + 5),
                         color=font.White, background=font.Gray40)
    output.Render(img)
    output.SetStatus("{:s} | Network {:.0f} FPS".format(net.GetNetworkName(), net.GetNetworkFPS()))
    if not input.IsStreaming() or not output.IsStreaming():
        break
print("frames", input.GetFrameCount(), input.GetWidth(), input.GetHeight(), input.GetFrameRate())
'''


def test_jetson_camera_loop_runs_unchanged_on_a_video_file(videos, tmp_path):
    """jetson's python/examples/imagenet.py main loop (Log.Usage() left out), verbatim otherwise."""
    script = tmp_path / "imagenet.py"
    script.write_text(JETSON_IMAGENET)
    r = run_python(script, "--network=efficientnet-lite0", "--topK=2", "--headless",
                   videos / "asl_book.mkv", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("imagenet:  ") == 2 * 109
    assert r.stdout.splitlines()[-1] == "frames 109 640 480 30.0"
    frames, _ = decoded(tmp_path / "out.mp4")
    assert len(frames) == 109


def test_video_source_capture_timeout_and_end_of_stream(videos):
    from jetson_utils import videoSource
    src = videoSource(str(videos / "asl_book.mkv"), argv=["x.py", "--input-rate=5"])
    images = []
    while src.IsStreaming():
        images.append(src.Capture(timeout=5000))
    assert len(images) == 19 and images[0].width == 640 and images[0].format == "rgb8"
    with pytest.raises(ImgclassError, match="end of stream"):
        src.Capture()
    src.Close()


def test_password_hidden():
    assert hide_password("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
