"""Video encoding settings shared by every PyAV output (files, RTP, RTSP)."""
from __future__ import annotations

import time
from fractions import Fraction

import av
import cv2
import numpy as np

from ..errors import ImgclassError
from .options import SinkOptions

RTP_CLOCK = Fraction(1, 90000)  # RTP's video clock
ENCODERS = {"h264": "libx264", "h265": "libx265", "vp8": "libvpx", "vp9": "libvpx-vp9", "mpeg4": "mpeg4",
            "mjpeg": "mjpeg"}


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
