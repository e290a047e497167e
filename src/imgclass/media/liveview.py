"""The live view: a local web page showing the annotated frames as they come (MJPEG over HTTP,
any browser, no display needed), or a native window where there is a screen.

Pages of the web view: ``/`` (the page), ``/stream.mjpg`` (multipart JPEG stream),
``/frame.jpg`` (the latest frame) and ``/status`` (the status line as text).
"""
from __future__ import annotations

import gc
import html
import logging
import os
import queue
import threading
from http import HTTPStatus

import cv2
import numpy as np

from ..errors import ImgclassError
from .options import LIVEVIEW_PORT, SinkOptions
from .sink import Sink
from .webserver import LocalHandler, LocalServer, serve_mjpeg

log = logging.getLogger("imgclass.media")

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif;text-align:center}}
img{{max-width:100vw;max-height:92vh}}</style></head><body>
<img src="/stream.mjpg" alt="live view"><div id="s"></div>
<script>setInterval(()=>fetch('/status').then(r=>r.text()).then(t=>{{document.getElementById('s').textContent=t;
document.title=t||'{title}'}}).catch(()=>{{}}),1000)</script></body></html>"""


def has_display() -> bool:
    """Is there a screen to open a window on (X11 or Wayland)?"""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_display(options: SinkOptions) -> Sink:
    """``display://0``: a window where a display exists (and not --headless), else the web page."""
    if has_display() and not options.headless:
        try:
            return WindowSink()
        except ImgclassError as e:
            log.warning(f"{e}; showing the live view as a web page instead")
    return LiveView(options.host, options.port or LIVEVIEW_PORT)


class LiveView(Sink):
    """Serve the frames as a live web page at http://HOST:PORT/ (127.0.0.1 by default: this machine only).

    JPEG encoding happens only while someone is watching, once per frame however many watch.

    Example:
        >>> view = LiveView(port=0)  # doctest: +SKIP
        >>> view.write(frame); print(view.url)  # doctest: +SKIP
        http://127.0.0.1:40123/
    """

    def __init__(self, host: str = "127.0.0.1", port: int = LIVEVIEW_PORT, quality: int = 80):
        self.quality = quality
        self._frame: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self._status = ""
        self._changed = threading.Condition()
        self._closed = False
        self._server = LocalServer((host, port), self._handler(), "live view")
        self.url = self._server.url
        self.description = f"live view {self.url}"
        threading.Thread(target=self._server.serve_forever, name="liveview", daemon=True).start()
        log.warning(f"live view at {self.url} (Ctrl-C to stop)")

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        with self._changed:
            self._frame, self._jpeg, self._seq = image, None, self._seq + 1
            self._changed.notify_all()

    def set_status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._changed:
                self._changed.notify_all()
            self._server.shutdown()
            self._server.server_close()

    def _latest(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait for a frame newer than ``after``; returns (seq, JPEG), or (after, None) on timeout/close."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._seq > after or self._closed, timeout):
                return after, None
            if self._closed or self._frame is None:
                return after, None
            if self._jpeg is None:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(self._frame, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                self._jpeg = buf.tobytes()
            return self._seq, self._jpeg

    def _handler(self):
        view = self

        class Handler(LocalHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self.send_body(_PAGE.format(title=html.escape("imgclass live view")).encode(),
                                   "text/html; charset=utf-8")
                elif path == "/status":
                    self.send_body(view._status.encode(), "text/plain; charset=utf-8")
                elif path == "/frame.jpg":
                    _, jpeg = view._latest(0, timeout=10)
                    if jpeg is None:
                        self.fail(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
                    else:
                        self.send_body(jpeg, "image/jpeg")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self.fail(HTTPStatus.NOT_FOUND, f"{path}: not found")

            def _stream(self) -> None:
                serve_mjpeg(self, lambda seq: view._latest(seq, timeout=1.0), lambda: not view._closed)

        return Handler


class WindowSink(Sink):
    """A native window (Tk, from the standard library), run in its own thread.

    Raises ImgclassError when no window can be opened (no Tk, no usable display), so the
    caller can fall back to the web view; closing the window ends ``is_streaming``.
    """

    def __init__(self, title: str = "imgclass"):
        self._frames: queue.Queue = queue.Queue(maxsize=2)
        self._opened = threading.Event()
        self._error: str | None = None
        self.is_streaming = True
        self.description = "window"
        self._title, self._status = title, ""
        self._thread = threading.Thread(target=self._run, name="window", daemon=True)
        self._thread.start()
        self._opened.wait(timeout=10)
        if self._error or not self._opened.is_set():
            raise ImgclassError(f"cannot open a window ({self._error or 'no answer from the display'})")

    def _run(self) -> None:
        try:
            import tkinter
            from PIL import Image, ImageTk
            tkinter.NoDefaultRoot()  # no module-level root: the main thread must never own a Tk object
            root = tkinter.Tk()
        except Exception as e:  # ImportError (no Tk) or TclError (no usable display)
            self._error = str(e).strip() or type(e).__name__
            self._opened.set()
            return
        root.title(self._title)
        label = tkinter.Label(root)
        label.pack()

        def show() -> None:
            try:
                item = self._frames.get_nowait()
            except queue.Empty:
                item = None
            if item is False:
                root.destroy()
                return
            if isinstance(item, tuple):
                image, status = item
                photo = ImageTk.PhotoImage(Image.fromarray(image), master=root)
                label.configure(image=photo)
                label.image = photo  # Tk keeps no reference of its own
                if status:
                    root.title(status)
            root.after(5, show)

        def closed() -> None:
            self.is_streaming = False
            root.destroy()

        root.protocol("WM_DELETE_WINDOW", closed)
        root.after(0, show)
        self._opened.set()
        root.mainloop()
        self.is_streaming = False
        # Tk objects must die in the thread that made them, or Tcl aborts the process at exit
        label.image = None
        label = root = None
        gc.collect()

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        if not self.is_streaming:
            return
        try:  # drop a frame rather than stall the pipeline when the screen is slower
            self._frames.put_nowait((image, self._status))
        except queue.Full:
            pass

    def set_status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if self._thread.is_alive():
            self._frames.put(False)
            self._thread.join(timeout=5)
