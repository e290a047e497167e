"""Serve the annotated frames as an RTSP stream (jetson's ``rtsp://@:8554/out``), through GStreamer's
RTSP server: the only server we found that serves FFmpeg, VLC and GStreamer players alike
(``ffmpeg -rtsp_flags listen`` can only receive). An optional extra: Debian/Ubuntu packages plus
PyGObject, see ``RTSP_HELP``.

Frames are encoded by PyAV (H.264, zero latency) and only while someone watches; GStreamer
only packetizes them, so no GStreamer encoder plugin is needed.
"""
from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

import av
import numpy as np

from ..errors import ImgclassError
from .options import RTSP_PORT, SinkOptions
from .encoder import ENCODERS, Encoder
from .sink import Sink

log = logging.getLogger("imgclass.media")

RTSP_HELP = ("RTSP output needs GStreamer's RTSP server: `sudo apt install gir1.2-gst-rtsp-server-1.0 "
             "gstreamer1.0-plugins-good libgirepository1.0-dev libcairo2-dev pkg-config` (Debian/Ubuntu), "
             "then `pip install 'imgclass[rtsp]'`; or stream with rtp://HOST:PORT instead")


def gstreamer():
    """(Gst, GstRtspServer, GLib), initialized; ImgclassError with the install line when absent."""
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as e:
        raise ImgclassError(f"{RTSP_HELP} ({e})") from None
    Gst.init(None)
    return Gst, GstRtspServer, GLib


def rtsp_address(url: str) -> tuple[str, int, str]:
    """Where to serve ``rtsp://@:8554/out``: (address, port, path); ``@`` or no host means all addresses.

    Example:
        >>> rtsp_address("rtsp://@:8554/my_output")
        ('0.0.0.0', 8554, '/my_output')
        >>> rtsp_address("rtsp://127.0.0.1/cam")
        ('127.0.0.1', 8554, '/cam')
    """
    m = re.fullmatch(r"rtsp://@?([^:/@]*)(?::(\d+))?(/[^?#]*)?", url)
    if not m:
        raise ImgclassError(f"{url}: an RTSP output is served from this machine; write it like rtsp://@:8554/out")
    return m[1] or "0.0.0.0", int(m[2] or RTSP_PORT), (m[3] or "/out").rstrip("/") or "/out"


class RTSPSink(Sink):
    """Serve frames at ``rtsp://ADDRESS:PORT/PATH`` to any number of viewers (H.264 or H.265).

    Example (viewers then play rtsp://127.0.0.1:8554/out):
        >>> sink = RTSPSink("rtsp://@:8554/out", SinkOptions(), Fraction(30))  # doctest: +SKIP
        >>> sink.write(frame)  # doctest: +SKIP
    """

    def __init__(self, url: str, options: SinkOptions, rate: Fraction):
        Gst, GstRtspServer, GLib = gstreamer()
        self._Gst, self._GstRtspServer = Gst, GstRtspServer
        codec = options.codec or "h264"
        if codec not in ("h264", "h265"):
            raise ImgclassError(f"--output-codec {codec}: RTSP output carries h264 or h265")
        host, port, path = rtsp_address(url)
        self.encoder = Encoder(codec, options, rate, live=True)
        self.url = f"rtsp://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}{path}"
        self.description = self.url
        self._ctx: av.VideoCodecContext | None = None
        self._appsrc = None
        self._new_viewer = False
        self._lock = threading.Lock()

        self._context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self._context, False)
        self._server = GstRtspServer.RTSPServer.new()
        self._server.set_address(host)
        self._server.set_service(str(port))
        factory = GstRtspServer.RTSPMediaFactory.new()
        pay = "rtph264pay" if codec == "h264" else "rtph265pay"
        # is-live + do-timestamp: buffers are stamped as they arrive, so a viewer sees frames at once
        factory.set_launch(f"( appsrc name=src is-live=true do-timestamp=true format=time "
                           f"caps=video/x-{codec},stream-format=byte-stream,alignment=au "
                           f"! {pay} name=pay0 pt=96 config-interval=-1 )")
        factory.set_shared(True)  # one encoder for every viewer
        factory.connect("media-configure", self._on_media)
        self._server.get_mount_points().add_factory(path, factory)
        self._source_id = self._server.attach(self._context)
        if not self._source_id:
            raise ImgclassError(f"cannot serve RTSP on {host}:{port} (port in use?); pick another port in the URL")
        self._thread = threading.Thread(target=self._loop.run, name="rtsp", daemon=True)
        self._thread.start()
        log.warning(f"serving RTSP at {self.url}")

    def _on_media(self, factory, media) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        media.connect("unprepared", self._on_gone)
        with self._lock:
            self._appsrc, self._new_viewer = appsrc, True

    def _on_gone(self, media) -> None:
        with self._lock:
            self._appsrc = None

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        self.encoder.pace(timestamp)  # in real time, watched or not
        with self._lock:
            appsrc, keyframe, self._new_viewer = self._appsrc, self._new_viewer, False
        if appsrc is None:
            return  # nobody watches: spend no CPU on encoding
        if self._ctx is None:
            self._ctx = av.CodecContext.create(ENCODERS[self.encoder.codec], "w")
            self.encoder.configure(self._ctx, image.shape[1], image.shape[0])
        frame = self.encoder.frame(image, timestamp)
        if keyframe:  # a new viewer can decode from the first frame it gets
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._ctx.encode(frame):
            appsrc.emit("push-buffer", self._Gst.Buffer.new_wrapped(bytes(packet)))

    def close(self) -> None:
        if self._thread is None:
            return
        with self._lock:
            appsrc, self._appsrc = self._appsrc, None
        if appsrc is not None:
            appsrc.emit("end-of-stream")
        remove = self._GstRtspServer.RTSPFilterResult.REMOVE
        self._server.client_filter(lambda server, client: remove)
        source = self._context.find_source_by_id(self._source_id)
        if source is not None:
            source.destroy()  # stop listening: the port is free again
        self._loop.quit()
        self._thread.join(timeout=5)
        self._thread = None
