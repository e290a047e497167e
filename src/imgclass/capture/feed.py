"""The live picture: a thread reads the input and keeps only the newest frame, so the page, the
capture button and the model preview always see "now", never a backlog."""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable

import cv2
import numpy as np

from ..errors import ImgclassError

log = logging.getLogger("imgclass.capture")
STILL_PERIOD = 0.1  # seconds each still image (no timestamp) stays on screen


class LiveFeed:
    """Newest frame of a source, read on a background thread.

    A file is played at its own speed (its frames' timestamps), so a clip looks like a camera
    instead of being decoded as fast as the CPU allows; a camera or stream is read as it comes.

    Args:
        source: an iterable of frames with ``.image`` (HxWx3 RGB) and ``.timestamp`` (seconds or
            None), such as ``media.sources.open_source(uri, loop=-1)``; closed on ``close()``
            when it has a ``close`` method.
        realtime: pace frames by their timestamps (files); False for live inputs.

    Example:
        >>> feed = LiveFeed(open_source("clip.mp4", loop=-1))  # doctest: +SKIP
        >>> feed.wait(timeout=5).shape  # doctest: +SKIP
        (360, 640, 3)
    """

    def __init__(self, source: Iterable, realtime: bool = True):
        self.source, self.realtime = source, realtime
        self.error: str | None = None
        self._frame: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._version = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="imgclass-capture-feed", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        start, first = time.monotonic(), None
        try:
            for i, frame in enumerate(self.source):
                if self._stop.is_set():
                    return
                if self.realtime:
                    t = frame.timestamp if frame.timestamp is not None else i * STILL_PERIOD
                    first = t if first is None or t < first else first  # a looping file starts over
                    self._stop.wait(max(0.0, (t - first) - (time.monotonic() - start)))
                with self._changed:
                    self._frame, self._jpeg = frame.image, None
                    self._version += 1
                    self._changed.notify_all()
            self.error = "the input ended"
        except ImgclassError as e:
            self.error = str(e)
            log.error(f"imgclass: capture input stopped: {e}")
        finally:
            with self._changed:
                self._changed.notify_all()

    def latest(self) -> np.ndarray | None:
        """The newest frame (RGB), or None before the first one."""
        with self._changed:
            return self._frame

    def wait(self, after: int = 0, timeout: float = 5.0) -> np.ndarray | None:
        """Block until a frame newer than version ``after`` exists (or timeout); returns the newest."""
        with self._changed:
            self._changed.wait_for(lambda: self._version > after or self._stop.is_set() or self.error, timeout)
            return self._frame

    def jpeg(self, after: int = 0, timeout: float = 5.0, quality: int = 80) -> tuple[int, bytes | None]:
        """``(version, JPEG bytes)`` of the first frame newer than ``after``: what the MJPEG stream sends.

        Encoded once per frame however many pages watch, and only when someone does.
        """
        self.wait(after, timeout)
        with self._changed:
            if self._frame is not None and self._jpeg is None:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(self._frame, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, quality])
                self._jpeg = buf.tobytes() if ok else None
            return self._version, self._jpeg

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop reading and close the source; returns promptly even while the source blocks."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if hasattr(self.source, "close"):
            self.source.close()
        self._thread.join(timeout=2)
