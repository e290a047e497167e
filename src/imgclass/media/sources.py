"""Inputs: one ``open_source(uri)`` for image files/folders/globs, video files, V4L2 cameras and
RTSP / RTP / HTTP streams, yielding RGB frames with timestamps.

Still images go through ``media.images`` (one code path with ``imgclass classify``); everything
else is decoded by PyAV and converted with OpenCV (``cv2.cvtColor`` on the YUV planes is about
1.5x faster end to end than PyAV's own RGB conversion).
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from ..errors import ImgclassError
from .images import open_image
from .inputs import ImageList, MediaInput, resolve_input
from .options import SourceOptions, as_fraction

log = logging.getLogger("imgclass.media")

_FLIPS = {
    "rotate-180": lambda im: cv2.rotate(im, cv2.ROTATE_180),
    "clockwise": lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    "counterclockwise": lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "horizontal": lambda im: cv2.flip(im, 1),
    "vertical": lambda im: cv2.flip(im, 0),
}
# rtp:// carries no description of its payload: these are the SDP lines for each --input-codec
_RTP_PAYLOADS = {"h264": (96, "H264/90000"), "h265": (96, "H265/90000"), "vp8": (96, "VP8/90000"),
                 "vp9": (96, "VP9/90000"), "mpeg4": (96, "MP4V-ES/90000"), "mpeg2": (32, "MPV/90000"),
                 "mjpeg": (26, "JPEG/90000")}
_V4L2_FORMATS = {"mjpeg": "mjpeg", "h264": "h264"}  # what a camera can be asked to send instead of raw


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        image: HxWx3 uint8 RGB.
        index: 0, 1, 2, ... in the order frames leave the source.
        timestamp: seconds since the first frame (presentation time); None for still images.
        name: the image file it came from, or the source URI (credentials hidden).
        file: the image file it came from (a still image), which the network decodes itself through
            ``media.decode``: the same pixels, and confidences, as every other route gives that file.
    """

    image: np.ndarray
    index: int
    timestamp: float | None
    name: str
    file: Path | None = None


def open_source(uri: str | int | Path, options: SourceOptions | None = None,
                resolved: ImageList | MediaInput | None = None, **overrides) -> "Source":
    """Open any input: image file / directory / glob, video file, camera or stream.

    Args:
        uri: ``photos/``, ``'*.jpg'``, ``clip.mp4``, ``file:///x.mkv``, ``/dev/video0``,
            ``v4l2:///dev/video0``, ``0`` or ``csi://0`` (camera 0), ``rtsp://user:pass@host:8554/path``,
            ``rtp://@:1234`` (with ``codec``), ``http://host/stream.mjpg``.
        options: a SourceOptions; keyword ``overrides`` replace its fields (``width=640``).
        resolved: what ``media.inputs.resolve_input`` made of ``uri`` already (a folder is walked once).

    Example:
        >>> with open_source("clip.mp4", loop=1) as source:  # doctest: +SKIP
        ...     for frame in source:
        ...         print(frame.index, frame.timestamp, frame.image.shape)
        0 0.0 (360, 640, 3)
    """
    opts = replace(options or SourceOptions(), **overrides)
    found = resolved or resolve_input(str(uri))
    if isinstance(found, ImageList):
        return ImageSource(str(uri), opts, found.paths)
    return AVSource(str(uri), opts)


class Source:
    """An iterable of Frames; a context manager that closes the input.

    Attributes: ``name``, ``width``, ``height``, ``frame_count`` (0: unknown), ``rate`` (exact frames/s, None when unknown) and
    ``frame_rate`` (its float, 0 when unknown), ``is_live``
    (camera/stream: frames are dropped-and-reconnected rather than ended), ``reconnects``, ``damage``
    (why a video file gave fewer or broken frames, once it ended: truncated, corrupt packets; "" when whole).
    """

    name: str = ""
    width: int = 0
    height: int = 0
    rate: Fraction | None = None
    is_live: bool = False
    reconnects: int = 0
    frame_count: int = 0  # frames to expect, where the input says (0: unknown or endless)
    damage: str = ""

    @property
    def frame_rate(self) -> float:
        return float(self.rate) if self.rate else 0.0

    def __init__(self, options: SourceOptions):
        self.options = options
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _shape(self, image: np.ndarray) -> np.ndarray:
        """Apply --input-width/--input-height and --input-flip (resize first, as jetson does)."""
        w, h = self.options.width, self.options.height
        if w or h:
            ih, iw = image.shape[:2]
            w, h = w or round(iw * h / ih), h or round(ih * w / iw)  # one of them given: keep the aspect
            if (w, h) != (iw, ih):
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if w < iw else cv2.INTER_LINEAR)
        flip = _FLIPS.get(self.options.flip)
        return flip(image) if flip else image


class ImageSource(Source):
    """Image files (one, a directory, a glob) as frames, via ``media.images``; bad files are skipped."""

    def __init__(self, spec: str, options: SourceOptions, paths: list[Path]):
        super().__init__(options)
        self.name, self.paths = spec, paths
        self.frame_count = len(self.paths) * (options.loop + 1) if options.loop >= 0 else 0
        self.width, self.height = open_image(self.paths[0]).size if len(self.paths) == 1 else (0, 0)

    def __iter__(self) -> Iterator[Frame]:
        index, loops_left = 0, self.options.loop
        while not self._closed:
            for path in self.paths:
                if self._closed:
                    return
                try:
                    image = np.array(open_image(path))
                except ImgclassError as e:
                    log.warning(f"skipped: {e}")
                    continue
                # Unless reshaped by flags, the network decodes the file itself (the one decode)
                as_is = not (self.options.width or self.options.height or _FLIPS.get(self.options.flip))
                yield Frame(self._shape(image), index, None, str(path), path if as_is else None)
                index += 1
            if loops_left == 0:
                return
            loops_left -= 1


class AVSource(Source):
    """Video files, cameras and streams, decoded by PyAV. See ``open_source``."""

    def __init__(self, uri: str, options: SourceOptions):
        super().__init__(options)
        self.uri, self.name = uri, hide_password(uri)
        self.kind, self._url, self._format, self._av_options = self._resolve(uri)
        self.is_live = self.kind in ("camera", "rtsp", "rtp")
        self._sdp: Path | None = None
        self._container = None
        self._reading = threading.Lock()  # held while frames are being read
        try:
            self._open()
        except BaseException:
            self._release()  # the .sdp file written for rtp://
            raise

    def _resolve(self, uri: str) -> tuple[str, str, str | None, dict]:
        """uri -> (kind, url for av.open, demuxer name, demuxer options)."""
        opts = self.options
        text = uri.removeprefix("file://")
        if re.fullmatch(r"\d+", text) and not Path(text).exists():
            text = f"/dev/video{text}"  # a bare integer is camera N, as in jetson and OpenCV
        if m := re.fullmatch(r"csi://(\d+)", text):
            text = f"/dev/video{m[1]}"  # no MIPI CSI on a PC: camera N is the nearest thing
        text = text.removeprefix("v4l2://")
        if text.startswith("/dev/video"):
            av_opts = {}
            if opts.width and opts.height:
                av_opts["video_size"] = f"{opts.width}x{opts.height}"
            if opts.rate:
                av_opts["framerate"] = f"{opts.rate:g}"
            if opts.codec:
                if opts.codec not in _V4L2_FORMATS:
                    raise ImgclassError(f"--input-codec {opts.codec}: a V4L2 camera can send raw, mjpeg or h264; "
                                        "leave it out for raw")
                av_opts["input_format"] = _V4L2_FORMATS[opts.codec]
            return "camera", text, "video4linux2", av_opts
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in ("rtsp", "rtsps"):
            # TCP: UDP is blocked by many NATs and firewalls and FFmpeg's UDP->TCP fallback waits seconds first
            return "rtsp", text, None, {"rtsp_transport": "tcp"}
        if scheme == "rtp":
            return "rtp", text, "sdp", {"protocol_whitelist": "file,udp,rtp"}
        if scheme in ("http", "https"):
            return "http", text, None, {}
        if scheme:
            raise ImgclassError(f"{self.name}: unknown input type '{scheme}://'; use a file, /dev/videoN, "
                                "rtsp://, rtp://, http(s):// or file://")
        if not Path(text).expanduser().exists():
            raise ImgclassError(f"{text}: no such file or directory; check the path")
        return "file", str(Path(text).expanduser()), None, {}

    def _rtp_sdp(self) -> str:
        """A temporary SDP file describing rtp://host:port, which carries no description itself."""
        m = re.fullmatch(r"rtp://(@?)([^:/]*)(?::(\d+))?/?", self.uri)
        if not m or not m[3]:
            raise ImgclassError(f"{self.name}: give the port, like rtp://@:1234 (listen on all addresses) "
                                "or rtp://224.0.0.1:1234 (multicast group)")
        codec = self.options.codec or "h264"
        if codec not in _RTP_PAYLOADS:
            raise ImgclassError(f"--input-codec {codec} cannot come over RTP; use one of {', '.join(_RTP_PAYLOADS)}")
        payload, rtpmap = _RTP_PAYLOADS[codec]
        host = m[2] or "0.0.0.0"
        sdp = (f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=imgclass\nc=IN IP4 {host}\nt=0 0\n"
               f"m=video {m[3]} RTP/AVP {payload}\na=rtpmap:{payload} {rtpmap}\n")
        if self._sdp is None:
            fd, name = tempfile.mkstemp(prefix="imgclass-", suffix=".sdp")
            os.close(fd)
            self._sdp = Path(name)
        self._sdp.write_text(sdp)
        return str(self._sdp)

    def _open(self) -> None:
        url = self._rtp_sdp() if self.kind == "rtp" else self._url
        timeout = self.options.timeout if self.kind != "file" else None
        try:
            container = av.open(url, format=self._format, options=self._av_options, timeout=timeout)
        except av.error.FFmpegError as e:
            raise self._open_error(e) from None
        except OSError as e:  # av raises plain OSError subclasses for some protocols
            raise self._open_error(e) from None
        if not container.streams.video:
            container.close()
            raise ImgclassError(f"{self.name}: holds no video stream (audio only?); give a video file or stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        if codec is None or codec.codec is None or stream.codec_context.name in ("", "none"):
            container.close()
            raise ImgclassError(f"{self.name}: video codec not supported by this FFmpeg build; "
                                "re-encode it to H.264 (or VP9, MPEG-4, MJPEG) first")
        # frame threads decode files in parallel; a live stream would pay one frame of latency per thread
        stream.thread_type = "SLICE" if self.is_live else "AUTO"
        if self.kind == "http":
            self.is_live = container.duration is None
        if self.is_live and not stream.width:  # FFmpeg probed for --input-timeout and saw no picture
            container.close()
            raise self._no_video(f"nothing arrived within {self.options.timeout:g} s")
        self._container, self._stream = container, stream
        if not self.is_live and self.options.loop >= 0 and not self.options.rate:
            self.frame_count = (stream.frames or 0) * (self.options.loop + 1)
        self.width, self.height = stream.width, stream.height
        rate = stream.average_rate or stream.guessed_rate
        self.rate = Fraction(rate) if rate else None
        if self.options.rate and (not self.rate or self.options.rate < self.rate):
            self.rate = as_fraction(self.options.rate)  # frames are dropped down to --input-rate

    def _no_video(self, reason: str) -> ImgclassError:
        """A live input that opened but sent no picture: a wrong port or codec, or nobody sending."""
        sender = ("the sender streams to this port in --input-codec (default h264)" if self.kind == "rtp"
                  else "the camera or server is sending")
        return ImgclassError(f"{self.name}: no video came ({reason}); check that {sender}, or raise --input-timeout")

    def _open_error(self, e: Exception) -> ImgclassError:
        reason = getattr(e, "strerror", None) or str(e)
        if self.kind == "camera":
            if isinstance(e, FileNotFoundError):
                found = sorted(glob.glob("/dev/video*"))
                return ImgclassError(f"{self._url}: no such camera; "
                                     + (f"cameras here: {', '.join(found)}" if found else "no V4L2 camera is connected"))
            if isinstance(e, PermissionError):
                return ImgclassError(f"{self._url}: permission denied; add yourself to the 'video' group")
            return ImgclassError(f"{self._url}: cannot open the camera ({reason}); check it is not in use "
                                 "and supports the size/rate/codec asked for")
        if self.kind == "file":
            if isinstance(e, av.error.InvalidDataError):
                return ImgclassError(f"{self.name}: not a video FFmpeg can read, or corrupt or truncated ({reason})")
            return ImgclassError(f"{self.name}: cannot open ({reason})")
        if isinstance(e, (ConnectionError, TimeoutError, av.error.ExitError)) or "timed out" in reason.lower():
            return ImgclassError(f"{self.name}: cannot connect ({reason}); check the address and port, "
                                 "and that the server or camera is running")
        return ImgclassError(f"{self.name}: cannot open the stream ({reason}); check the URL")

    def close(self) -> None:
        """Close the input. Safe from another thread: a reader still inside FFmpeg closes it itself
        when its current read returns (closing under a running read would crash FFmpeg)."""
        super().close()
        if self._reading.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._reading.release()

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._sdp is not None:
            self._sdp.unlink(missing_ok=True)
            self._sdp = None

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames of the open container until its end. A corrupt packet is skipped, never fatal; a file
        that cannot be read to its end gives the frames before the break, then ``_check_whole`` says so."""
        packets, corrupt, decoded, first, last, broken = 0, 0, 0, math.inf, -math.inf, ""
        try:
            for packet in self._container.demux(self._stream):
                if packet.dts is not None or packet.size:  # not the empty packet that flushes the decoder
                    packets += 1
                    corrupt += packet.is_corrupt
                    if packet.pts is not None:
                        first, last = min(first, packet.pts), max(last, packet.pts)
                try:
                    for frame in packet.decode():
                        decoded += 1
                        yield frame
                except av.error.InvalidDataError:
                    corrupt += 1
        except (av.error.FFmpegError, OSError) as e:
            if self.is_live:
                raise  # a dropped stream: reconnected by _frames
            broken = getattr(e, "strerror", None) or str(e)
        if self.is_live:
            if corrupt:
                log.warning(f"{self.name}: skipped {corrupt} corrupt packet(s)")
        elif decoded:  # none at all: _frames raises its own one-line error
            span = float((last - first) * self._stream.time_base) if last >= first else 0.0
            self._check_whole(packets, span, corrupt, broken)

    def _check_whole(self, packets: int, span: float, corrupt: int, broken: str) -> None:
        """After a pass over a file: note in ``damage`` and say once, in one line, when it ended before
        the frame count or duration its header gives, or had corrupt packets (as a cut-off download does)."""
        problems = []
        seconds = stream_seconds(self._stream)
        rate = self._stream.average_rate
        period = 1 / float(rate) if rate else 0.0
        if broken:
            problems.append(f"unreadable after {packets} frames ({broken})")
        elif self._stream.frames and packets < self._stream.frames:
            problems.append(f"it ended after {packets} of its {self._stream.frames} frames")
        elif seconds and span + period < seconds - max(0.5, 2 * period):  # slack: header durations are rounded
            problems.append(f"it ended at {span + period:.1f} s of its {seconds:.1f} s")
        if corrupt:
            problems.append(f"{corrupt} corrupt packet(s) skipped")
        if problems and not self.damage:
            self.damage = "; ".join(problems)
            log.warning(f"{self.name}: truncated or damaged ({self.damage}); used what could be decoded")

    def __iter__(self) -> Iterator[Frame]:
        with self._reading:
            try:
                yield from self._frames()
            finally:
                if self._closed:
                    self._release()

    def _frames(self) -> Iterator[Frame]:
        index, loops_left, last_slot = 0, self.options.loop, -1
        offset, last_time = 0.0, None  # timestamps keep rising across loops and reconnects
        attempt, index_at_reconnect = 0, -1
        period = 1 / self.frame_rate if self.frame_rate else 1 / 30
        while not self._closed:
            start = None
            try:
                for av_frame in self._decoded():
                    if self._closed:
                        return
                    t = av_frame.time if av_frame.time is not None else time.monotonic()
                    start = t if start is None else start
                    timestamp = offset + t - start
                    if last_time is not None and not last_time < timestamp < last_time + 10:
                        # a jump in the stream's clock (RTCP sync arriving, wrap-around): keep time running
                        offset += last_time + period - timestamp
                        timestamp = last_time + period
                    if self.options.rate:  # keep one frame per 1/rate slot
                        slot = math.floor(timestamp * self.options.rate + 1e-6)
                        if slot <= last_slot:
                            continue
                        last_slot = slot
                    last_time = timestamp
                    yield Frame(self._shape(to_rgb(av_frame)), index, timestamp, self.name)
                    index += 1
                reason = "the stream ended"
            except (av.error.FFmpegError, OSError) as e:
                if not self.is_live:
                    raise ImgclassError(f"{self.name}: cannot decode ({getattr(e, 'strerror', None) or e}); "
                                        "the file is corrupt or truncated") from None
                reason = (f"nothing arrived for {self.options.timeout:g} s" if isinstance(e, av.error.ExitError)
                          else getattr(e, "strerror", None) or str(e))
            if self._closed:
                return
            if last_time is not None:
                offset = last_time + period
            if self.is_live:
                if index == 0:  # never a frame: nothing to reconnect to
                    raise self._no_video(reason)
                # a stream that reopens but then sends nothing goes on counting attempts, not looping forever
                attempt = self._reconnect(reason, attempt + 1 if index == index_at_reconnect else 1)
                index_at_reconnect = index
            elif index == 0:
                raise ImgclassError(f"{self.name}: no frame could be decoded; the file is corrupt or empty")
            elif loops_left == 0:
                return
            else:
                loops_left -= 1
                self._container.seek(0)
                self._stream.codec_context.flush_buffers()  # the decoder was drained at the end

    def _reconnect(self, reason: str, first_attempt: int) -> int:
        """Reopen a dropped camera/stream: attempts ``first_attempt`` to ``options.retries``, each logged,
        then one clear error. Returns the attempt that reopened it."""
        self._container.close()
        self._container = None
        for attempt in range(first_attempt, self.options.retries + 1):
            log.warning(f"{self.name}: stream dropped ({reason}); reconnecting, attempt {attempt} of {self.options.retries}")
            time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
            if self._closed:
                return attempt
            try:
                self._open()
                self.reconnects += 1
                log.warning(f"{self.name}: reconnected")
                return attempt
            except ImgclassError as e:
                reason = str(e)
        raise ImgclassError(f"{self.name}: stream lost; {self.options.retries} reconnect attempts failed "
                            f"(last: {reason}); check the camera or server, or raise --input-retries")


def stream_seconds(stream: av.video.stream.VideoStream) -> float:
    """How long a video stream says it is, 0 when it does not: its duration, or the DURATION tag
    that Matroska/WebM writers put in the header (the file's own duration may be an audio track's)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", stream.metadata.get("DURATION", ""))
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """An HxWx3 uint8 RGB array from a decoded frame; OpenCV converts the common YUV layouts."""
    name = frame.format.name
    if frame.width % 2 == 0 and frame.height % 2 == 0:
        if name == "yuv420p":
            return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
        if name == "nv12":
            return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_NV12)
    return frame.to_ndarray(format="rgb24")  # full-range JPEG YUV, 4:2:2 cameras, 10-bit, ...


def hide_password(uri: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x``: URIs end up in logs and errors.

    Example:
        >>> hide_password("rtsp://admin:hunter2@10.0.0.5:554/live")
        'rtsp://admin:***@10.0.0.5:554/live'
    """
    return re.sub(r"^([a-z0-9+.-]+://[^:/@]+):[^@/]*@", r"\1:***@", uri, flags=re.I)

