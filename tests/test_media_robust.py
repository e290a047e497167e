"""Video and stream inputs that go wrong: a truncated file, SIGTERM while a video is written, an RTP
input nobody sends to. Each ends in finalized output and one clear line (small clips made here)."""
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from imgclass.errors import ImgclassError
from imgclass.media import sources
from imgclass.media.sources import open_source

from conftest import run_cli
from test_media_video import stop_looped_classify


def make_video(path: Path, frames: int = 60, codec: str = "libx264", **container_options: str) -> Path:
    """A 30 fps clip of noise (every frame costs about the same bytes, so cutting the file in half
    cuts about half the frames)."""
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def cut_in_half(path: Path) -> Path:
    cut = path.with_name(f"cut_{path.name}")
    data = path.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    return cut


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# an mp4 with its index first (as made for the web), ffmpeg's mkv, and an AVI: each readable up to the cut
WHOLE_THEN_CUT = [("clip.mp4", "libx264", {"movflags": "faststart"}), ("clip.mkv", "libx264", {}),
                  ("clip.avi", "mpeg4", {})]


@pytest.mark.parametrize("name, codec, options", WHOLE_THEN_CUT)
def test_a_cut_file_gives_its_frames_then_says_it_is_damaged(tmp_path, name, codec, options):
    whole = make_video(tmp_path / name, codec=codec, **options)
    with open_source(whole) as source:
        assert sum(1 for _ in source) == 60 and source.damage == ""
    with open_source(cut_in_half(whole)) as source:
        frames = list(source)
    assert 15 < len(frames) < 35
    assert source.damage.startswith("it ended ")


def test_a_truncated_video_is_classified_as_far_as_it_goes_then_exits_non_zero(tmp_path):
    cut = cut_in_half(make_video(tmp_path / "clip.mp4", movflags="faststart"))
    r = run_cli("classify", cut, tmp_path / "out.mp4", "--json")
    assert r.returncode == 1, r.stderr
    rows = r.stdout.splitlines()
    assert 15 < len(rows) < 35 and frame_count(tmp_path / "out.mp4") == len(rows)
    damaged = [line for line in r.stderr.splitlines() if "truncated or damaged" in line]
    assert len(damaged) == 1 and "it ended after 30 of its 60 frames" in damaged[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_truncated_video_without_its_index_is_one_error_line(tmp_path):
    cut = cut_in_half(make_video(tmp_path / "clip.mp4"))  # ffmpeg writes the index (moov) last: it is gone
    r = run_cli("classify", cut, tmp_path / "out.mp4")
    assert r.returncode == 1
    assert r.stderr.startswith("imgclass: error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert "corrupt or truncated" in r.stderr and not list(tmp_path.glob("*out.mp4*"))


def test_sigterm_finalizes_the_video_like_ctrl_c(tmp_path):
    clip, out = make_video(tmp_path / "clip.mkv"), tmp_path / "out.mp4"
    returncode, err = stop_looped_classify(clip, out, signal.SIGTERM)
    assert returncode == 143, err
    assert "stopped by SIGTERM; " in err and "Traceback" not in err
    assert frame_count(out) >= 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "out.mp4"], "a temporary file was left"


def test_sigterm_before_the_first_frame_leaves_no_file(tmp_path):
    """Killed while the model loads: no output, no temporary file, exit 143."""
    clip, out = make_video(tmp_path / "clip.mkv"), tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-c", "import signal, sys\n"
                           "from imgclass import cli\n"
                           "from imgclass.cli import classify\n"
                           "classify.Classifier = lambda *args, **kwargs: signal.raise_signal(signal.SIGTERM)\n"
                           "sys.exit(cli.main(sys.argv[1:]))", "classify", str(clip), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.splitlines()[-1] == "imgclass: terminated" and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


def test_rtp_input_with_no_sender_gives_up_after_input_timeout(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "imgclass", "classify", f"rtp://@:{port}", "--input-codec", "h264",
                        "--input-timeout", "1", "--headless"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TMPDIR": str(tmp_path)})  # where the .sdp file goes
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"imgclass: error: rtp://@:{port}: no video came (nothing arrived within 1 s); "
                               "check that the sender streams to this port"), r.stderr
    assert len(r.stderr.splitlines()) == 1 and "--input-timeout" in r.stderr
    assert not list(tmp_path.glob("*.sdp")), "the .sdp file was left behind"


def test_an_rtp_source_that_fails_to_open_removes_its_sdp_file(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImgclassError, match=r"no video came \(nothing arrived within 0.5 s\)"):
        open_source(f"rtp://@:{port}", codec="h264", timeout=0.5)
    assert not list(tmp_path.glob("*.sdp"))


def test_a_stream_that_reopens_but_sends_nothing_runs_out_of_retries(monkeypatch):
    """An RTP sender that stops: each reopen succeeds (UDP has no connection) and each read times out.
    The attempts add up to --input-retries instead of starting again from 1, forever."""
    reads = []

    def opened(self):
        self._container = SimpleNamespace(close=lambda: None)

    def decoded(self):
        reads.append(len(reads))
        assert len(reads) < 10, "reconnecting forever"
        if len(reads) == 1:
            yield av.VideoFrame(64, 48, "yuv420p")
        raise av.error.ExitError(-1414092869, "Immediate exit requested")

    monkeypatch.setattr(sources.AVSource, "_open", opened)
    monkeypatch.setattr(sources.AVSource, "_decoded", decoded)
    monkeypatch.setattr(sources.time, "sleep", lambda seconds: None)
    with open_source("rtp://@:1234", retries=2, timeout=3) as source:
        frames = []
        with pytest.raises(ImgclassError, match=r"stream lost; 2 reconnect attempts failed \(last: nothing arrived"):
            for frame in source:
                frames.append(frame)
    assert len(frames) == 1 and len(reads) == 3


def test_capture_saves_the_frames_of_a_truncated_video_then_exits_non_zero(tmp_path):
    cut = cut_in_half(make_video(tmp_path / "clip.mp4", movflags="faststart"))
    r = run_cli("capture", cut, "--dataset", tmp_path / "ds", "--class", "bottle", "--every", "1")
    assert r.returncode == 1, r.stderr
    saved = list((tmp_path / "ds" / "train" / "bottle").glob("*.jpg"))
    assert 15 < len(saved) < 35
    damaged = [line for line in r.stderr.splitlines() if "truncated or damaged" in line]
    assert len(damaged) == 1 and damaged[0].startswith(f"imgclass: {cut}: ") and "Traceback" not in r.stderr
    assert f"saved {len(saved)} frames of {cut}" in r.stderr
