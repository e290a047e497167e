"""Outputs: one ``open_sink(uri)`` for image files / patterns / directories, video files, RTP and
RTSP streams and the live view. Frames are HxWx3 uint8 RGB; each may carry its timestamp.

Video is encoded by PyAV (H.264 by default); a video file is written under a temporary name and
renamed when closed, so an interrupted run leaves either nothing or a finalized, playable file. It
carries imgclass's mark (its comment), and replaces no existing video without it.
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import ExitStack
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import ImgclassError
from .images import ANNOTATED_BY, VIDEO_SUFFIXES, ImageSink, atomic_output, check_replaceable
from .options import SinkOptions, as_fraction

log = logging.getLogger("imgclass.media")

RTP_CLOCK = Fraction(1, 90000)  # RTP's video clock
ENCODERS = {"h264": "libx264", "h265": "libx265", "vp8": "libvpx", "vp9": "libvpx-vp9", "mpeg4": "mpeg4",
             "mjpeg": "mjpeg"}
DEFAULT_RATE = Fraction(30)


class Sink:
    """Where annotated frames go. ``write(image, timestamp)``; ``close()`` finalizes (also as a context manager).

    Attributes:
        is_streaming: False once the viewer went away (a closed window), as jetson's IsStreaming().
        description: where the frames went, for the summary line.
    """

    is_streaming = True
    description = ""

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        raise NotImplementedError

    def set_status(self, text: str) -> None:
        """A one-line status (model FPS, ...) for sinks that show one: the live view's title."""

    def close(self) -> None:
        """Finish the output; safe to call twice."""

    def abort(self) -> None:
        """Give up after an error: like close(), except a file output leaves nothing behind."""
        self.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.abort() if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt) else self.close()


def open_sink(uri: str | Path | None, options: SinkOptions | None = None, frame_rate: Fraction | float | None = None,
              **overrides) -> Sink:
    """Open any output.

    Args:
        uri: ``out.jpg``, ``out_%04i.png`` / ``out_*.jpg``, ``frames/`` (images); ``out.mp4`` / ``.mkv`` /
            ``.avi`` / ``.mov`` / ``.webm`` (video); ``rtp://host:port``; ``rtsp://@:8554/path`` (served here);
            ``display://0`` (a window where there is a display, else the live web page); None or ``""``: nowhere.
        options: a SinkOptions; keyword ``overrides`` replace its fields (``codec="vp9"``).
        frame_rate: the input's frame rate, used for frames without timestamps and as the nominal rate.

    Example:
        >>> with open_sink("out.mp4", frame_rate=30) as sink:  # doctest: +SKIP
        ...     sink.write(np.zeros((360, 640, 3), np.uint8), timestamp=0.0)
    """
    opts = replace(options or SinkOptions(), **overrides)
    rate = as_fraction(opts.rate or frame_rate or DEFAULT_RATE)
    text = "" if uri is None else str(uri).removeprefix("file://")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not text:
        return NullSink()
    if scheme == "display":
        from .liveview import open_display
        return open_display(opts)
    if scheme == "rtp":
        return RTPSink(text, opts, rate)
    if scheme == "rtsp":
        from .rtsp import RTSPSink
        return RTSPSink(text, opts, rate)
    if scheme:
        raise ImgclassError(f"{text}: unknown output type '{scheme}://'; use a file, pattern, directory, "
                            "rtp://, rtsp:// or display://")
    if Path(text).suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSink(text, opts, rate)
    return ImageFilesSink(text)


def is_annotated_video(path: str | Path) -> bool:
    """Whether ``path`` is a video a VideoFileSink wrote: its container comment is imgclass's mark
    (mp4, mov, mkv, webm and avi all keep it; Matroska spells the key COMMENT)."""
    try:
        with av.open(str(path)) as container:
            tags = {key.lower(): value for key, value in container.metadata.items()}
    except (av.error.FFmpegError, OSError, ValueError):
        return False
    return tags.get("comment") == ANNOTATED_BY


class NullSink(Sink):
    """Frames go nowhere (no OUTPUT, or jetson's --headless with none)."""

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        pass


class ImageFilesSink(Sink):
    """One image, a pattern or a directory, through ``media.images.ImageSink`` (atomic writes)."""

    def __init__(self, spec: str):
        self._images = ImageSink(spec)
        self.description = spec

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        if self._images.single_file and self._images.count == 1:
            raise ImgclassError(f"{self.description}: one output image for many frames; "
                                "give a directory or a pattern like out_%i.jpg")
        self._images.write(image)


class Encoder:
    """Encoder settings shared by every PyAV output: codec, size (even, as 4:2:0 needs), rate,
    bitrate, and timestamps that only ever rise.

    Files count time in frames of the nominal rate (timestamps rounded to it): the output then
    has exactly the input's frame rate, which AVI and MP4 readers report from the time base.
    Streams use RTP's 90 kHz clock, which follows a live source's jitter.
    """

    def __init__(self, codec: str, options: SinkOptions, rate: Fraction, live: bool):
        if codec not in ENCODERS or ENCODERS[codec] not in av.codecs_available:
            raise ImgclassError(f"--output-codec {codec}: no encoder for it in this PyAV build; "
                                f"use one of {', '.join(c for c, e in ENCODERS.items() if e in av.codecs_available)}")
        self.codec, self.options, self.rate, self.live = codec, options, rate, live
        self.time_base = RTP_CLOCK if live else 1 / rate
        self.size: tuple[int, int] | None = None
        self._last_pts, self._count = -1, 0
        self._clock_start: float | None = None

    def configure(self, ctx: av.VideoCodecContext, width: int, height: int) -> None:
        """Set up a codec context for frames of this size (called once, on the first frame)."""
        self.size = (width // 2 * 2, height // 2 * 2)
        ctx.width, ctx.height = self.size
        ctx.time_base = self.time_base
        ctx.framerate = self.rate
        ctx.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
        # a keyframe every second: a viewer joining a stream waits at most that long for a picture
        ctx.gop_size = max(1, round(self.rate))
        options: dict[str, str] = {}
        if self.codec in ("h264", "h265"):
            # superfast: ~5x the speed of x264's default for ~15% more bits; the CPU belongs to the model
            options["preset"] = "superfast"
            if self.live:
                options["tune"] = "zerolatency"
                if self.codec == "h264":
                    options["forced-idr"] = "1"  # a keyframe asked for (a new RTSP viewer) is a full restart
            if self.codec == "h265":
                options["x265-params"] = "log-level=error"
        elif self.codec in ("vp8", "vp9"):
            options.update({"deadline": "realtime", "cpu-used": "8"})
            if not self.options.bitrate:
                options.update({"crf": "32", "b": "0"})  # constant quality, as x264's default
        if self.options.bitrate:
            ctx.bit_rate = self.options.bitrate
        elif self.codec in ("mpeg4", "mjpeg"):
            ctx.bit_rate = 4_000_000  # their FFmpeg default (200 kb/s) looks like mud
        ctx.options = options

    def pace(self, timestamp: float | None) -> None:
        """For streams, wait until the frame is due: a file played to RTP/RTSP goes out in real time,
        not as fast as it decodes (a live input is already in real time: no wait)."""
        if not self.live:
            return
        t = self._count / self.rate if timestamp is None or self.options.rate else timestamp
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now - t
        delay = self._clock_start + t - now
        if delay > 0:
            time.sleep(delay)

    def frame(self, image: np.ndarray, timestamp: float | None) -> av.VideoFrame:
        """An encoder-ready frame with its pts; timestamps are used unless --output-rate fixes the rate."""
        h, w = image.shape[:2]
        if (w, h) != self.size:
            if (w // 2 * 2, h // 2 * 2) == self.size:
                image = image[:self.size[1], :self.size[0]]  # odd size: drop the last row/column
            else:  # frames of another size (a folder of mixed images): fit them to the first
                image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        if self.codec == "mjpeg":
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        else:  # OpenCV's RGB->I420 is much faster than PyAV's swscale path
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        if timestamp is None or self.options.rate:
            pts = round(self._count / self.rate / self.time_base)
        else:
            pts = round(timestamp / self.time_base)
        pts = max(pts, self._last_pts + 1)
        frame.pts, frame.time_base = pts, self.time_base
        self._last_pts, self._count = pts, self._count + 1
        return frame


class AVSink(Sink):
    """A PyAV container output: a video file (see VideoFileSink) or an RTP stream."""

    def __init__(self, url: str, options: SinkOptions, rate: Fraction, *, format: str | None = None,
                 live: bool = False, default_codec: str = "h264"):
        self.url, self.format, self.description = url, format, url
        self.encoder = Encoder(options.codec or default_codec, options, rate, live)
        self._container = self._stream = None

    def _start(self, width: int, height: int) -> None:
        try:
            self._container = av.open(self.url, "w", format=self.format)
            self._stream = self._container.add_stream(ENCODERS[self.encoder.codec], rate=self.encoder.rate)
            self.encoder.configure(self._stream.codec_context, width, height)
            self._stream.time_base = self.encoder.time_base
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise ImgclassError(f"{self.description}: cannot write {self.encoder.codec} here ({e}); "
                                "try another --output-codec or file type") from None

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        if self._container is None:
            self._start(image.shape[1], image.shape[0])
        self.encoder.pace(timestamp)
        self._mux(self._stream.encode(self.encoder.frame(image, timestamp)))

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except (av.error.FFmpegError, OSError) as e:
            raise ImgclassError(f"{self.description}: writing failed ({e})") from None

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.mux(self._stream.encode(None))  # the encoder holds frames back: drain them
            finally:
                container.close()


class VideoFileSink(AVSink):
    """A video file (mp4/mkv/avi/mov/webm), written under a temporary name and renamed on close.

    Example:
        >>> sink = VideoFileSink("out.mp4", SinkOptions(), Fraction(30))  # doctest: +SKIP
    """

    def __init__(self, path: str, options: SinkOptions, rate: Fraction):
        suffix = Path(path).suffix.lower()
        webm = suffix == ".webm"
        if webm and options.codec not in (None, "vp8", "vp9"):
            raise ImgclassError(f"{path}: a .webm file holds VP8/VP9 only; use --output-codec vp9 or an .mp4/.mkv name")
        check_replaceable(path, set(), is_own=is_annotated_video)  # someone's video is never written over
        self._files = ExitStack()
        tmp = self._files.enter_context(atomic_output(path))
        super().__init__(tmp, options, rate, format={".m4v": "mp4"}.get(suffix),
                         default_codec="vp9" if webm else "h264")
        self.path, self.description = Path(path), path
        self.frames = 0

    def _start(self, width: int, height: int) -> None:
        super()._start(width, height)
        self._container.metadata["comment"] = ANNOTATED_BY  # a later run may replace this file (is_annotated_video)

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        try:
            super().write(image, timestamp)
        except ImgclassError:  # the encoder failed: what is written is broken (Ctrl-C, though, finalizes)
            self.abort()
            raise
        self.frames += 1

    def close(self) -> None:
        if self._files is None:
            return
        if self.frames == 0:
            self.abort()
            log.warning(f"{self.path}: no frames came, so no file was written")
            return
        try:
            super().close()
        except Exception:
            self.abort()
            raise
        files, self._files = self._files, None
        files.close()  # the rename: the file appears only now, complete

    def abort(self) -> None:
        """Drop the temporary file (nothing half-written is ever left under the real name)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._files is not None:
            files, self._files = self._files, None
            files.__exit__(ImgclassError, ImgclassError("aborted"), None)


class RTPSink(AVSink):
    """An RTP stream to ``rtp://host:port`` (H.264 by default). Its SDP, which a receiver needs,
    is logged once and kept in ``sdp``; imgclass's own ``rtp://@:port`` input needs only --input-codec."""

    def __init__(self, url: str, options: SinkOptions, rate: Fraction):
        m = re.fullmatch(r"rtp://([^:/@]+):(\d+)/?", url)
        if not m:
            raise ImgclassError(f"{url}: give the receiver's address and port, like rtp://192.168.1.10:1234")
        super().__init__(url, options, rate, format="rtp", live=True)
        self.host, self.port = m[1], int(m[2])
        payload = {"h264": "H264", "h265": "H265", "vp8": "VP8", "vp9": "VP9", "mpeg4": "MP4V-ES", "mjpeg": "JPEG"}
        pt = 26 if self.encoder.codec == "mjpeg" else 96
        self.sdp = (f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=imgclass\nc=IN IP4 {self.host}\nt=0 0\n"
                    f"m=video {self.port} RTP/AVP {pt}\na=rtpmap:{pt} {payload[self.encoder.codec]}/90000\n")

    def _start(self, width: int, height: int) -> None:
        super()._start(width, height)
        log.warning(f"streaming RTP to {self.host}:{self.port}; a player needs this SDP file:\n{self.sdp.strip()}")

