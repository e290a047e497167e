"""Outputs: one ``open_sink(uri)`` for image files / patterns / directories, video files, RTP and
RTSP streams and the live view. Frames are HxWx3 uint8 RGB; each may carry its timestamp.

Video is encoded by PyAV (H.264 by default); a video file is written under a temporary name and
renamed when closed, so an interrupted run leaves either nothing or a finalized, playable file. It
carries imgclass's mark (its comment), and replaces no existing video without it.
"""
from __future__ import annotations

import logging
import re
from contextlib import ExitStack
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import ImgclassError
from ..fileio import atomic_output
from .encoder import ENCODERS, Encoder
from .images import ANNOTATED_BY, VIDEO_SUFFIXES, ImageSink, check_replaceable
from .options import SinkOptions, as_fraction
from .sink import Sink

log = logging.getLogger("imgclass.media")

DEFAULT_RATE = Fraction(30)


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

