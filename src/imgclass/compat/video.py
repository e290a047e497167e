"""jetson_utils.videoSource / videoOutput on imgclass's media layer: jetson's camera loop runs
unchanged on files, cameras and streams.

Example:
    >>> input, output = videoSource("clip.mp4"), videoOutput("out.mp4")  # doctest: +SKIP
    >>> while True:  # doctest: +SKIP
    ...     img = input.Capture()
    ...     if img is None:          # timeout: no frame yet
    ...         continue
    ...     output.Render(img)
    ...     if not input.IsStreaming() or not output.IsStreaming():
    ...         break
"""
from __future__ import annotations

import atexit
import queue
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ImgclassError
from ..media.options import parse_argv, sink_options, source_options
from ..media.sinks import open_sink
from ..media.sources import open_source
from ..parallel import Prefetch
from .cuda import convert, rgb8, wrap

__all__ = ["videoSource", "videoOutput"]

DEFAULT_TIMEOUT_MS = 1000  # jetson's videoSource::DEFAULT_TIMEOUT


class videoSource:
    """jetson's ``videoSource(uri, argv=sys.argv)``: frames from any input, read ahead in a thread.

    ``Capture()`` returns an RGB image (a numpy array with jetson's width/height/channels), None
    when no frame came within ``timeout`` ms, and raises at the end of the stream, as jetson does.
    """

    def __init__(self, uri: str = "", argv: list[str] | None = None, options: dict | None = None):
        args = parse_argv(argv)
        self._uri = uri or "csi://0"
        self._source = open_source(self._uri, source_options(args), **(options or {}))
        self._frames = Prefetch(iter(self._source), size=4, name="videoSource")
        self._frame_count = 0

    def Capture(self, format: str = "rgb8", timeout: int = DEFAULT_TIMEOUT_MS):
        """The next frame in ``format`` (rgb8, rgba8, rgb32f, rgba32f, bgr8, gray8, ...); None on timeout
        (ms, -1 waits forever); raises at the end of the stream."""
        try:
            frame = self._frames.get(timeout=None if timeout is None or timeout < 0 else timeout / 1000)
        except queue.Empty:
            return None
        except StopIteration:
            raise ImgclassError(f"videoSource: {self._source.name}: end of stream") from None
        if not self._source.is_live:
            # a file is read ahead anyway: learn now whether this was its last frame, so that
            # IsStreaming() turns False right after it and jetson's loop ends without an error
            self._frames.peek_end()
        self._frame_count += 1
        timestamp = int((frame.timestamp or 0) * 1e9)  # jetson's timestamps are in nanoseconds
        return wrap(convert(frame.image, "rgb8", format.lower()), format.lower(), timestamp)

    def IsStreaming(self) -> bool:
        if self._frames.done:
            return False
        return self._source.is_live or not self._frames.peek_end(timeout=0)

    def GetWidth(self) -> int:
        return self._source.options.width or self._source.width

    def GetHeight(self) -> int:
        return self._source.options.height or self._source.height

    def GetFrameRate(self) -> float:
        return self._source.frame_rate

    def GetFrameCount(self) -> int:
        return self._frame_count

    def GetOptions(self) -> dict:
        """jetson's videoOptions of the input as a dict (resource, width, height, framerate, codec, loop, ...)."""
        opts = self._source.options
        return {**_options(self._uri, "input", opts.codec), "width": self.GetWidth(), "height": self.GetHeight(),
                "framerate": self.GetFrameRate(), "loop": opts.loop, "flipMethod": opts.flip}

    def Open(self) -> bool:
        return True

    def Close(self) -> None:
        self._frames.close()
        self._source.close()

    @staticmethod
    def Usage() -> str:
        return ("videoSource arguments:\n  input URI: file, directory, glob, video file, /dev/videoN, csi://N, "
                "rtsp://, rtp://@:PORT, http(s)://\n  --input-width --input-height --input-rate --input-codec "
                "--input-flip --input-loop (--loop) --input-retries --input-timeout\n")


class videoOutput:
    """jetson's ``videoOutput(uri, argv=sys.argv)``: ``Render(img)`` writes a frame to any output.

    With no URI the output is ``display://0`` (a window, or the live web page without a display),
    or nothing with ``--headless``, as in jetson. The file is finalized by ``Close()`` and at exit.
    """

    def __init__(self, uri: str = "", argv: list[str] | None = None, options: dict | None = None):
        args = parse_argv(argv)
        if not uri and not args.headless:
            uri = "display://0"
        self._uri, self._options = uri, sink_options(args)
        self._sink = open_sink(uri, self._options, frame_rate=args.output_rate or None, **(options or {}))
        self._frame_count = 0
        self._size = (0, 0)
        atexit.register(self.Close)  # jetson scripts never close their outputs: finalize the file anyway

    def Render(self, image, width: int | None = None, height: int | None = None) -> None:
        pixels = rgb8(image)  # any format; jetson's float images are 0..255
        self._size = (pixels.shape[1], pixels.shape[0])
        self._sink.write(pixels)
        self._frame_count += 1

    def SetStatus(self, text: str) -> None:
        self._sink.set_status(text)

    def IsStreaming(self) -> bool:
        return self._sink.is_streaming

    def GetWidth(self) -> int:
        return self._size[0]

    def GetHeight(self) -> int:
        return self._size[1]

    def GetFrameRate(self) -> float:
        return float(getattr(getattr(self._sink, "encoder", None), "rate", 0) or 0)

    def GetFrameCount(self) -> int:
        return self._frame_count

    def GetOptions(self) -> dict:
        """jetson's videoOptions of the output as a dict (resource, width, height, framerate, codec, bitrate, ...)."""
        return {**_options(self._uri, "output", self._options.codec), "width": self.GetWidth(),
                "height": self.GetHeight(), "framerate": self.GetFrameRate(), "bitrate": self._options.bitrate}

    def Open(self) -> bool:
        return True

    def Close(self) -> None:
        self._sink.close()

    @staticmethod
    def Usage() -> str:
        return ("videoOutput arguments:\n  output URI: image file, pattern out_%i.jpg, directory, video file, "
                "rtp://HOST:PORT, rtsp://@:8554/out, display://0\n  --output-codec --bitrate --output-rate "
                "--port --host --headless\n")


_IP_PROTOCOLS = ("rtp", "rtsp", "rtsps", "rtmp", "http", "https", "webrtc")


def _options(uri: str, io_type: str, codec: str | None) -> dict:
    """The keys jetson's ``GetOptions()`` shares between inputs and outputs, ``resource`` parsed as its URI class does."""
    if "://" in uri:
        protocol, path = uri.split("://", 1)
    elif uri.startswith("/dev/video") or uri.isdigit():
        protocol, path = "v4l2", uri if uri.startswith("/dev/") else f"/dev/video{uri}"
    else:
        protocol, path = ("file", uri) if uri else ("", "")
    protocol = protocol.lower()
    location, port = path, 0
    if protocol in _IP_PROTOCOLS:
        host, _, number = urlsplit(uri).netloc.rpartition("@")[2].partition(":")
        location, port = host, int(number) if number.isdigit() else 0
    device = {"file": "file", "v4l2": "v4l2", "csi": "csi", "display": "display"}.get(
        protocol, "ip" if protocol in _IP_PROTOCOLS else "default")
    resource = {"string": uri, "protocol": protocol, "path": path, "location": location, "port": port,
                "extension": Path(path).suffix.lstrip(".").lower() if protocol == "file" else ""}
    return {"resource": resource, "codec": codec or "unknown", "numBuffers": 4, "zeroCopy": True,
            "deviceType": device, "ioType": io_type}
