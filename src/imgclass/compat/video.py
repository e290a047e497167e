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

import numpy as np

from ..errors import ImgclassError
from ..media.options import parse_argv, sink_options, source_options
from ..media.sinks import open_sink
from ..media.sources import open_source
from ..pipeline import Prefetch

__all__ = ["videoSource", "videoOutput"]

DEFAULT_TIMEOUT_MS = 1000  # jetson's videoSource::DEFAULT_TIMEOUT


class videoSource:
    """jetson's ``videoSource(uri, argv=sys.argv)``: frames from any input, read ahead in a thread.

    ``Capture()`` returns an RGB image (a numpy array with jetson's width/height/channels), None
    when no frame came within ``timeout`` ms, and raises at the end of the stream, as jetson does.
    """

    def __init__(self, uri: str = "", argv: list[str] | None = None, options: dict | None = None):
        args = parse_argv(argv)
        self._source = open_source(uri or "csi://0", source_options(args), **(options or {}))
        self._frames = Prefetch(iter(self._source), size=4, name="videoSource")
        self._frame_count = 0

    def Capture(self, format: str = "rgb8", timeout: int = DEFAULT_TIMEOUT_MS):
        """The next frame; None on timeout (ms, -1 waits forever); raises at the end of the stream."""
        from .utils import cudaFromNumpy

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
        image = frame.image
        if format in ("rgba8", "rgba32f"):
            image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
        if format.endswith("32f"):
            image = image.astype(np.float32)
        return cudaFromNumpy(image)

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

    def Open(self) -> bool:
        return True

    def Close(self) -> None:
        self._frames.close()
        self._source.close()

    @staticmethod
    def Usage() -> str:
        return ("videoSource arguments:\n  input URI: file, directory, glob, video file, /dev/videoN, csi://N, "
                "rtsp://, rtp://@:PORT, http(s)://\n  --input-width --input-height --input-rate --input-codec "
                "--input-flip --input-loop --input-retries --input-timeout\n")


class videoOutput:
    """jetson's ``videoOutput(uri, argv=sys.argv)``: ``Render(img)`` writes a frame to any output.

    With no URI the output is ``display://0`` (a window, or the live web page without a display),
    or nothing with ``--headless``, as in jetson. The file is finalized by ``Close()`` and at exit.
    """

    def __init__(self, uri: str = "", argv: list[str] | None = None, options: dict | None = None):
        args = parse_argv(argv)
        if not uri and not args.headless:
            uri = "display://0"
        self._sink = open_sink(uri, sink_options(args), frame_rate=args.output_rate or None, **(options or {}))
        self._frame_count = 0
        self._size = (0, 0)
        atexit.register(self.Close)  # jetson scripts never close their outputs: finalize the file anyway

    def Render(self, image, width: int | None = None, height: int | None = None) -> None:
        pixels = np.asarray(image)[..., :3]
        if pixels.dtype != np.uint8:  # jetson's float images are 0..255
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
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

    def Open(self) -> bool:
        return True

    def Close(self) -> None:
        self._sink.close()

    @staticmethod
    def Usage() -> str:
        return ("videoOutput arguments:\n  output URI: image file, pattern out_%i.jpg, directory, video file, "
                "rtp://HOST:PORT, rtsp://@:8554/out, display://0\n  --output-codec --bitrate --output-rate "
                "--port --host --headless\n")
